// The search loop: splits, warm-up, the alpha trajectory, the alpha lr rule,
// determinism, bad input, and the checkpoint (search_state) it resumes from.
#include "pch.hpp"

namespace vp = vpdarts;

namespace {

vp::vit_config tiny() { return {8, 3, 4, 8, 2, 2, 16, 3}; }

vp::data::labelled_images<float> tiny_data(vp::index count, std::vector<int> classes = {5, 6, 7}) {
  return vp::data::make_synthetic<float>({.image = 8, .count = count, .seed = 4, .classes = classes});
}

vp::search_options quick() {
  vp::search_options o;
  o.epochs = 3;
  o.warmup_epochs = 1;
  o.batch = 6;
  o.val_fraction = 0.5;
  o.progress = false;
  return o;
}

}  // namespace

TEST_CASE("search records alpha every epoch and moves it only after warm-up", "[search][loop]") {
  vp::prompted_vit<float> m(vp::vit<float>(tiny(), 1), {.prompts = 2, .seed = 1});
  const vp::matrix<double> start = m.softmax_alpha();
  auto data = tiny_data(24);
  auto r = vp::search(m, data, quick());
  REQUIRE(r.alpha_history.size() == 3);
  CHECK((r.alpha_history[0] - start).norm() == 0);  // warm-up epoch: w only
  CHECK((r.alpha_history[2] - start).norm() > 0);
  CHECK(r.alpha_lr == Approx(6.0 / (2 * 2)));     // 2 steps per epoch x 2 alpha epochs
  CHECK(r.found.layers.size() == 2);
  CHECK(r.found.names() == m.derive().names());
  CHECK(r.train_loss.size() == 3);
  CHECK(std::isnan(r.val_loss[0]));
  CHECK(std::isfinite(r.val_loss[2]));
}

TEST_CASE("search is deterministic for a seed", "[search][loop]") {
  auto data = tiny_data(24);
  auto run = [&](vp::darts_order order) {
    vp::prompted_vit<float> m(vp::vit<float>(tiny(), 2), {.prompts = 2, .seed = 2});
    auto o = quick();
    o.bilevel.order = order;
    auto r = vp::search(m, data, o);
    return std::make_pair(r.found.names(), r.alpha_history.back());
  };
  for (auto order : {vp::darts_order::first, vp::darts_order::second}) {
    auto a = run(order), b = run(order);
    CHECK(a.first == b.first);
    CHECK((a.second - b.second).norm() == 0);
  }
}

TEST_CASE("an interrupted search resumes from its checkpoint to the uninterrupted result", "[search][resume]") {
  auto data = tiny_data(24);
  const vpdarts_test::temp_dir dir("vpdarts-resume-test");
  struct interrupted {};
  for (auto order : {vp::darts_order::first, vp::darts_order::second}) {
    auto o = quick();
    o.epochs = 4;
    o.bilevel.order = order;
    vp::prompted_vit<float> straight(vp::vit<float>(tiny(), 7), {.prompts = 2, .seed = 7});
    const auto whole = vp::search(straight, data, o);

    o.checkpoint = dir / "search.safetensors";
    std::filesystem::remove(o.checkpoint);
    o.resume = true;  // no checkpoint yet: a fresh start
    o.on_epoch = [](long epoch, const vp::matrix<double>&, double, double) {
      if (epoch == 2) throw interrupted{};
    };
    {
      vp::prompted_vit<float> first(vp::vit<float>(tiny(), 7), {.prompts = 2, .seed = 7});
      CHECK_THROWS_AS(vp::search(first, data, o), interrupted);
    }
    o.on_epoch = {};
    vp::prompted_vit<float> second(vp::vit<float>(tiny(), 7), {.prompts = 2, .seed = 99});  // state comes from the file
    const auto resumed = vp::search(second, data, o);
    CHECK(resumed.resumed_from == 2);
    REQUIRE(resumed.alpha_history.size() == 4);
    CHECK(resumed.found.names() == whole.found.names());
    for (std::size_t e = 0; e < 4; ++e) CHECK((resumed.alpha_history[e] - whole.alpha_history[e]).norm() == 0);
    CHECK(resumed.train_loss == whole.train_loss);
    CHECK((second.alpha().value() - straight.alpha().value()).norm() == 0);
    auto ws = second.weights(), wt = straight.weights();
    for (std::size_t i = 0; i < ws.size(); ++i) CHECK((ws[i]->value() - wt[i]->value()).norm() == 0);

    // other settings are refused, naming what differs
    auto changed = o;
    changed.batch = 4;
    vp::prompted_vit<float> third(vp::vit<float>(tiny(), 7), {.prompts = 2, .seed = 7});
    CHECK_THROWS_WITH(vp::search(third, data, changed), Catch::Contains("settings differ") && Catch::Contains("batch"));
  }
  // a file that is not a search checkpoint
  vp::prompted_vit<float> m(vp::vit<float>(tiny(), 7), {.prompts = 2, .seed = 7});
  m.save_state(dir / "state.safetensors");
  auto o = quick();
  o.checkpoint = dir / "state.safetensors";
  o.resume = true;
  CHECK_THROWS_WITH(vp::search(m, data, o), Catch::Contains("not a search checkpoint"));
}

TEST_CASE("search rejects bad input clearly", "[search][loop][errors]") {
  vp::prompted_vit<float> m(vp::vit<float>(tiny(), 3), {.prompts = 2});
  auto o = quick();
  o.batch = 20;
  CHECK_THROWS_WITH(vp::search(m, tiny_data(24), o), Catch::Contains("batch 20") && Catch::Contains("12 search-val"));
  CHECK_THROWS_WITH(vp::search(m, tiny_data(24, {5}), quick()), Catch::Contains("1 class"));
  o = quick();
  o.warmup_epochs = 3;
  CHECK_THROWS_AS(vp::search(m, tiny_data(24), o), vp::config_error);
  // a NaN in the data stops the search naming the step
  auto bad = tiny_data(24);
  bad.images.pixels.setConstant(std::numeric_limits<float>::quiet_NaN());
  CHECK_THROWS_WITH(vp::search(m, bad, quick()), Catch::Contains("epoch 1 step 1") && Catch::Contains("NaN"));
  vp::prompted_vit<float> derived(vp::vit<float>(tiny(), 3), vp::genotype::uniform("add", 2), {.prompts = 2});
  CHECK_THROWS_WITH(vp::search(derived, tiny_data(24), quick()), Catch::Contains("derived model"));
}
