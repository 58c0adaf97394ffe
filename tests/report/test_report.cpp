// The alpha CSV and heatmap, inference timing, peak memory and metrics.json.
#include "pch.hpp"

#include <sched.h>

#include <atomic>
#include <fstream>
#include <thread>

namespace vp = vpdarts;
namespace fs = std::filesystem;
using vpdarts_test::read_bytes;
using vpdarts_test::temp_dir;
using vpdarts_test::write_bytes;


TEST_CASE("the alpha heatmap is labelled, frames each layer's strongest operator, and saves as PNG", "[report]") {
  const std::vector<std::string> ops{"concat", "add", "affine", "cross_attention"};
  vp::matrix<double> w(3, 4);
  w << 0.1, 0.2, 0.3, 0.4,  //
      0.7, 0.1, 0.1, 0.1,   //
      0.25, 0.25, 0.3, 0.2;
  const auto img = vp::report::alpha_heatmap(w, ops);
  // wide enough for the longest operator name in every column
  CHECK(img.width() > 4 * vp::report::canvas::text_width("cross_attention"));
  // the extreme cells take the ends of the colour ramp: (0, 3) is the largest, (1, 1) the smallest
  // and every row has exactly one framed cell; find cells by scanning a row band for frame colour runs
  temp_dir dir("vpdarts_test_heatmap");
  vp::report::write_alpha_heatmap(dir / "alpha.png", w, ops);
  int pw = 0, ph = 0, pc = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> px(stbi_load((dir / "alpha.png").string().c_str(), &pw, &ph, &pc, 3),
                                               stbi_image_free);
  REQUIRE(px);
  REQUIRE(pw == img.width());
  REQUIRE(ph == img.height());
  bool same = true;
  for (int y = 0; y < ph; ++y)
    for (int x = 0; x < pw; ++x) {
      const auto c = img.at(x, y);
      for (int k = 0; k < 3; ++k) same &= px.get()[(y * pw + x) * 3 + k] == c[static_cast<std::size_t>(k)];
    }
  CHECK(same);
  // the ramp's two ends are both present (lowest and highest weight)
  bool has_low = false, has_high = false;
  const auto low = vp::report::detail::ramp(0), high = vp::report::detail::ramp(1);
  for (int y = 0; y < ph; ++y)
    for (int x = 0; x < pw; ++x) {
      has_low |= img.at(x, y) == low;
      has_high |= img.at(x, y) == high;
    }
  CHECK(has_low);
  CHECK(has_high);

  CHECK_THROWS_WITH(vp::report::alpha_heatmap(w, {"a", "b"}), Catch::Contains("3x4") && Catch::Contains("2 operator"));
  w(0, 0) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(vp::report::alpha_heatmap(w, ops), Catch::Contains("NaN"));
}

TEST_CASE("the alpha trajectory draws every operator's weight over the epochs, a panel per layer", "[report]") {
  std::vector<vp::matrix<double>> history;
  for (double w : {0.5, 0.5, 0.7, 0.9}) {  // a warm-up epoch, then operator 0 gains
    vp::matrix<double> m(1, 2);
    m << w, 1 - w;
    history.push_back(m);
  }
  const auto img = vp::report::alpha_trajectory(history, {"first", "second"});
  // the rightmost pixel of each operator's colour ends its line: the gaining one above the other
  auto rightmost = [&](vp::report::rgb c) {
    int bx = -1, by = -1;
    for (int y = 0; y < img.height(); ++y)
      for (int x = 0; x < img.width(); ++x)
        if (img.at(x, y) == c && x > bx) {
          bx = x;
          by = y;
        }
    return std::pair{bx, by};
  };
  const auto [x0, y0] = rightmost(vp::report::detail::series_colour(0));
  const auto [x1, y1] = rightmost(vp::report::detail::series_colour(1));
  REQUIRE(x0 > 0);
  REQUIRE(x1 > 0);
  CHECK(std::abs(x0 - x1) <= 2);  // both end at the last epoch
  CHECK(y0 < y1);                 // 0.9 is drawn above 0.1
  // a second layer adds a panel below
  for (auto& m : history) {
    vp::matrix<double> two(2, 2);
    two << m, m.reverse();
    m = two;
  }
  CHECK(vp::report::alpha_trajectory(history, {"first", "second"}).height() > img.height());
  temp_dir dir("vpdarts_test_trajectory");
  vp::report::write_alpha_trajectory(dir / "t.png", history, {"first", "second"});
  CHECK(fs::file_size(dir / "t.png") > 100);
  CHECK_THROWS_WITH(vp::report::alpha_trajectory({}, {"a"}), Catch::Contains("no epoch"));
  CHECK_THROWS_WITH(vp::report::alpha_trajectory(history, {"a", "b", "c"}), Catch::Contains("expected 2x3"));
  history[2](1, 0) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(vp::report::alpha_trajectory(history, {"a", "b"}), Catch::Contains("epoch 3 holds NaN"));
}

TEST_CASE("the strongest operator's cell is framed", "[report]") {
  vp::matrix<double> w(1, 2);
  w << 0.2, 0.8;
  const auto img = vp::report::alpha_heatmap(w, {"first", "second"});
  // find the two cells' fill colours along the row through the middle of the grid
  const auto low = vp::report::detail::ramp(0), high = vp::report::detail::ramp(1);
  int y_mid = -1, x_low = -1, x_high = -1;
  for (int y = 0; y < img.height() && y_mid < 0; ++y)
    for (int x = 0; x < img.width(); ++x)
      if (img.at(x, y) == high && x_high < 0 && y > 40) {
        x_high = x;
        y_mid = y;
      }
  REQUIRE(y_mid >= 0);
  // the high cell's top-left pixel is fill; two rows down runs the black frame
  CHECK(img.at(x_high + 10, y_mid + 2) == vp::report::rgb{0, 0, 0});
  for (int x = 0; x < img.width(); ++x)
    if (img.at(x, y_mid + 2) == low) {
      x_low = x;
      break;
    }
  REQUIRE(x_low >= 0);
  CHECK(img.at(x_low + 10, y_mid + 2) == low);  // the weaker cell has no frame
}

TEST_CASE("the alpha CSV has one row per epoch, layer and operator", "[report]") {
  temp_dir dir("vpdarts_test_csv");
  std::vector<vp::matrix<double>> history(2, vp::matrix<double>::Constant(3, 2, 0.5));
  history[1](2, 1) = 0.75;
  vp::report::write_alpha_csv(dir / "alpha.csv", history, {"concat", "add"});
  std::ifstream in(dir / "alpha.csv");
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  REQUIRE(lines.size() == 1 + 2 * 3 * 2);
  CHECK(lines[0] == "epoch,layer,op,weight");
  CHECK(lines[1] == "1,0,concat,0.5");
  CHECK(lines.back() == "2,2,add,0.75");
  CHECK_THROWS_WITH(vp::report::write_alpha_csv(dir / "bad.csv", history, {"concat"}), Catch::Contains("1 operators"));
  CHECK_FALSE(fs::exists(dir / "bad.csv"));
}

TEST_CASE("inference timing, peak memory and metrics.json", "[report]") {
  vp::vit<float> m(vp::vit_config{8, 3, 4, 8, 1, 2, 16, 3}, 1);
  const auto t = vp::report::time_inference<float>([&](vp::tape<float>& tp, const vp::image_batch<float>& x) {
    return m.logits(tp, x);
  }, 3, 8, 3, 1);
  CHECK(t.latency_ms_batch1 > 0);
  CHECK(t.latency_ms_batch1_p10 <= t.latency_ms_batch1);
  CHECK(t.latency_ms_batch1 <= t.latency_ms_batch1_p90);
  CHECK(t.latency_runs == 3);
  CHECK(t.throughput_batch64 > 0);
  // one image's pass: patch embedding 4 patches x 8 x 48, then T = 5 tokens through qkv (24 x 8),
  // attention (2 products of 5 x 5 x 8 over the heads), proj (8 x 8), fc1 (16 x 8), fc2 (8 x 16), and the head (3 x 8)
  CHECK(t.multiply_adds_batch1 == 4u * 8 * 48 + 5u * 24 * 8 + 2u * 5 * 5 * 8 + 5u * 8 * 8 + 5u * 16 * 8 + 5u * 8 * 16 + 3u * 8);
  CHECK(vp::report::peak_rss_mb() > 1);
  {  // the count is per pass: reset() clears it, a second pass without one adds to it
    vp::tape<float> tp;
    vp::no_grad<float> quiet(tp);
    const vp::image_batch<float> x(2, 3, 8, 8);
    m.logits(tp, x);
    const std::uint64_t two = tp.multiply_adds();
    CHECK(two == 2 * t.multiply_adds_batch1);
    m.logits(tp, x);
    CHECK(tp.multiply_adds() == 2 * two);
    tp.reset();
    CHECK(tp.multiply_adds() == 0);
  }
  temp_dir dir("vpdarts_test_metrics");
  vp::report::write_json(dir / "metrics.json", {{"test_accuracy", 0.5}, {"trainable_params", 12}});
  const auto j = nlohmann::json::parse(read_bytes(dir / "metrics.json"));
  CHECK(j.at("trainable_params") == 12);
}


TEST_CASE("free_cores counts the cores other work leaves free", "[report][cores]") {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  const int mine = CPU_COUNT(&set);
  const int quiet = vp::free_cores(std::chrono::milliseconds(50));
  CHECK(quiet >= 1);
  CHECK(quiet <= mine);
  const auto ticks = vp::read_cpu_ticks();
  REQUIRE(!ticks.empty());  // Linux with /proc: the figures are read, not guessed
  for (const auto& t : ticks) CHECK(t.busy <= t.total);
  if (mine >= 2) {
    // a thread of ours that spins through the whole window takes a core: at most mine - 1 are free
    // (other work on the machine can only lower the count further)
    std::atomic<bool> stop{false};
    std::thread spin([&] {
      while (!stop.load(std::memory_order_relaxed)) {
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const int busy = vp::free_cores(std::chrono::milliseconds(200));
    stop = true;
    spin.join();
    CHECK(busy >= 1);
    CHECK(busy <= mine - 1);
  }
}
