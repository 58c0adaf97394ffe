// Datasets: image files, folders and list files, IDX files, and the transforms (resize, channels, normalisation, crop, flip).
#include "pch.hpp"

#include <fstream>

namespace vp = vpdarts;
namespace fs = std::filesystem;
using vpdarts_test::read_bytes;
using vpdarts_test::temp_dir;
using vpdarts_test::write_bytes;

namespace {

// A w x h RGB test pattern.
std::vector<unsigned char> pattern(int w, int h) {
  std::vector<unsigned char> px(static_cast<std::size_t>(w * h * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) px[static_cast<std::size_t>((y * w + x) * 3 + c)] = static_cast<unsigned char>((x * 40 + y * 15 + c * 70) % 256);
  return px;
}

}  // namespace

TEST_CASE("bilinear resize follows PyTorch's align_corners=False", "[data][transforms]") {
  vp::data::image in = xt::xtensor<float, 3>::from_shape({2, 2, 1});
  in(0, 0, 0) = 0;
  in(0, 1, 0) = 1;
  in(1, 0, 0) = 2;
  in(1, 1, 0) = 3;
  const auto out = vp::data::resize(in, 4, 4);
  // torch.nn.functional.interpolate(x, size=4, mode="bilinear", align_corners=False)
  const float expect[4][4] = {{0, .25f, .75f, 1}, {.5f, .75f, 1.25f, 1.5f}, {1.5f, 1.75f, 2.25f, 2.5f}, {2, 2.25f, 2.75f, 3}};
  for (std::size_t y = 0; y < 4; ++y)
    for (std::size_t x = 0; x < 4; ++x) CHECK(out(y, x, 0) == Approx(expect[y][x]));
  // down to 1x1 averages the centre
  CHECK(vp::data::resize(in, 1, 1)(0, 0, 0) == Approx(1.5));
  CHECK_THROWS_AS(vp::data::resize(in, 0, 4), vp::value_error);
}

TEST_CASE("channel conversion and normalisation", "[data][transforms]") {
  vp::data::image grey = xt::xtensor<float, 3>::from_shape({1, 2, 1});
  grey(0, 0, 0) = 0.25f;
  grey(0, 1, 0) = 1.0f;
  const auto rgb = vp::data::to_channels(grey, 3);
  REQUIRE(rgb.shape(2) == 3);
  CHECK(rgb(0, 0, 2) == 0.25f);
  CHECK(vp::data::to_channels(rgb, 1)(0, 1, 0) == Approx(1.0));
  CHECK_THROWS_WITH(vp::data::to_channels(grey, 2), Catch::Contains("2 channels"));

  std::vector<float> row(6);
  vp::data::to_row<float>(rgb, {{0.5, 0.25, 0.0}, {0.5, 0.25, 1.0}}, row);
  CHECK(row[0] == Approx(-0.5));  // channel 0, pixel 0: (0.25 - 0.5) / 0.5
  CHECK(row[3] == Approx(3.0));   // channel 1, pixel 1: (1 - 0.25) / 0.25
  CHECK(row[5] == Approx(1.0));   // channel 2, pixel 1
  CHECK_THROWS_WITH(vp::data::to_row<float>(rgb, {{0.5, 0.5}, {1.0}}, row), Catch::Contains("2 means"));
  std::vector<float> short_row(5);
  CHECK_THROWS_WITH(vp::data::to_row<float>(rgb, {}, short_row), Catch::Contains("row of 5"));

  const auto n = vp::data::normalization::imagenet();
  const auto back = vp::data::normalization::parse(n.str());
  CHECK(back.mean == n.mean);
  CHECK(back.std == n.std);
  CHECK_THROWS_WITH(vp::data::normalization::parse("0.5;0"), Catch::Contains("std of 0"));
  CHECK_THROWS_WITH(vp::data::normalization::parse("0.5;x"), Catch::Contains("'x'"));
  CHECK_THROWS_AS(vp::data::normalization::parse("0.5"), vp::value_error);
}

TEST_CASE("image files decode through stb_image, bad files name themselves", "[data][files]") {
  temp_dir dir("vpdarts_test_images");
  const int w = 6, h = 4;
  const auto px = pattern(w, h);
  REQUIRE(stbi_write_png((dir / "a.png").string().c_str(), w, h, 3, px.data(), w * 3));
  REQUIRE(stbi_write_bmp((dir / "a.bmp").string().c_str(), w, h, 3, px.data()));
  REQUIRE(stbi_write_jpg((dir / "a.jpg").string().c_str(), w, h, 3, px.data(), 95));
  for (const char* name : {"a.png", "a.bmp"}) {
    const auto img = vp::data::load_image(dir / name);
    REQUIRE(img.shape(0) == 4);
    REQUIRE(img.shape(1) == 6);
    REQUIRE(img.shape(2) == 3);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < 3; ++c)
          CHECK(img(static_cast<std::size_t>(y), static_cast<std::size_t>(x), static_cast<std::size_t>(c)) ==
                Approx(px[static_cast<std::size_t>((y * w + x) * 3 + c)] / 255.0f));
  }
  const auto jpg = vp::data::load_image(dir / "a.jpg");
  CHECK(jpg.shape(1) == 6);

  // a model-ready batch: grey, resized to 8x8, normalised
  const std::vector<fs::path> files{dir / "a.png", dir / "a.jpg"};
  const auto batch = vp::data::load_images<float>(files, 1, 8, vp::data::normalization::synthetic());
  CHECK(batch.shape() == "2x1x8x8");
  CHECK(batch.pixels.allFinite());
  CHECK(batch.pixels.maxCoeff() <= 2.0f + 1e-6f);  // (1 - 0.5) / 0.25
  CHECK(batch.pixels.minCoeff() >= -2.0f - 1e-6f);

  // missing, empty, not an image, truncated
  CHECK_THROWS_WITH(vp::data::load_image(dir / "none.png"), Catch::Contains("cannot open") && Catch::Contains("none.png"));
  write_bytes(dir / "empty.png", "");
  CHECK_THROWS_WITH(vp::data::load_image(dir / "empty.png"), Catch::Contains("empty.png") && Catch::Contains("empty"));
  write_bytes(dir / "notes.png", "this is not an image\n");
  CHECK_THROWS_WITH(vp::data::load_image(dir / "notes.png"), Catch::Contains("notes.png") && Catch::Contains("not a readable image"));
  const std::string png = read_bytes(dir / "a.png");
  write_bytes(dir / "cut.png", png.substr(0, png.size() / 2));
  CHECK_THROWS_WITH(vp::data::load_image(dir / "cut.png"), Catch::Contains("cut.png"));
  // a fuzzer's find: a 21-byte RLE TGA whose header says 8448x10052 (grey) decoded for over 30 s under ASan;
  // refused from its header now (tests/fuzz/regressions/image_folder keeps the file)
  const std::string tga("\x0d\x00\x0a\x9f\x00\x1a\x00\x0d\x49\x48\x2f\x02\x00\x21\x44\x27\x08\x0d\x0a\x02\x00", 21);
  write_bytes(dir / "tiny.tga", tga);
  CHECK_THROWS_WITH(vp::data::load_image(dir / "tiny.tga"),
                    Catch::Contains("tiny.tga") && Catch::Contains("8448x10052x1") && Catch::Contains("cannot hold"));
  // a large but highly compressible image is not refused: a 1200x1000 PNG of one colour (tens of KB)
  std::vector<unsigned char> flat(1200 * 1000 * 3, 200);
  vp::report::canvas::write_png_bytes(dir / "flat.png", 1200, 1000, 3, flat.data());
  CHECK(std::filesystem::file_size(dir / "flat.png") < 100000);  // 3.6 MB of pixels
  CHECK(vp::data::load_image(dir / "flat.png").shape()[1] == 1200);
}

// ---------------------------------------------------------------- datasets on disk

namespace {

std::string idx_bytes(const std::vector<std::uint32_t>& dims, const std::vector<unsigned char>& values, unsigned char type = 0x08) {
  std::string b{'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (auto d : dims)
    for (int k = 3; k >= 0; --k) b.push_back(static_cast<char>((d >> (8 * k)) & 0xff));
  b.append(values.begin(), values.end());
  return b;
}

void write_gzip(const fs::path& p, const std::string& bytes) {
  gzFile f = gzopen(p.string().c_str(), "wb");
  REQUIRE(f);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

// six 4x4 images, image i filled with 40 * i, labels 0 1 2 0 1 2
std::vector<unsigned char> six_images() {
  std::vector<unsigned char> v;
  for (int i = 0; i < 6; ++i) v.insert(v.end(), 16, static_cast<unsigned char>(40 * i));
  return v;
}

}  // namespace

TEST_CASE("IDX files load plain and gzipped, with class filtering and sampling", "[data][idx]") {
  temp_dir dir("vpdarts_test_idx");
  write_bytes(dir / "img", idx_bytes({6, 4, 4}, six_images()));
  write_bytes(dir / "lab", idx_bytes({6}, {0, 1, 2, 0, 1, 2}));
  write_gzip(dir / "img.gz", idx_bytes({6, 4, 4}, six_images()));
  write_gzip(dir / "lab.gz", idx_bytes({6}, {0, 1, 2, 0, 1, 2}));
  for (const char* suffix : {"", ".gz"}) {
    const auto d = vp::data::load_idx<float>(dir / (std::string("img") + suffix), dir / (std::string("lab") + suffix),
                                             {.classes = {2, 0}, .norm = {{0.0}, {1.0}}, .label_names = {"a", "b", "c"}});
    REQUIRE(d.size() == 4);  // images 0, 2, 3, 5 in file order
    CHECK(d.class_names == std::vector<std::string>{"c", "a"});
    CHECK(d.labels == std::vector<int>{1, 0, 1, 0});
    CHECK(d.images.shape() == "4x1x4x4");
    CHECK(d.images.pixels(1, 5) == Approx(80.0 / 255.0));
  }
  auto all = vp::data::load_idx<float>(dir / "img", dir / "lab", {.image = 8, .channels = 3});
  CHECK(all.classes() == 3);
  CHECK(all.images.shape() == "6x3x8x8");
  CHECK(vp::data::load_idx<float>(dir / "img", dir / "lab", {.per_class = 1}).size() == 3);
  CHECK(vp::data::load_idx<float>(dir / "img", dir / "lab", {.limit = 5}).size() == 5);
  auto sampled = vp::data::load_idx<float>(dir / "img.gz", dir / "lab.gz",
                                           {.per_class = 1, .random_sample = true, .sample_seed = 3});
  CHECK(sampled.size() == 3);
  auto labels = sampled.labels;  // one per class, in file order
  std::sort(labels.begin(), labels.end());
  CHECK(labels == std::vector<int>{0, 1, 2});
}

TEST_CASE("bad IDX and gzip files are clear errors naming the file", "[data][idx][errors]") {
  temp_dir dir("vpdarts_test_idx_bad");
  auto err = [&](const std::string& name, const std::string& bytes) {
    write_bytes(dir / name, bytes);
    try {
      vp::data::read_idx(dir / name);
    } catch (const vp::io_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const auto good = idx_bytes({6, 4, 4}, six_images());
  CHECK_THAT(err("magic2", "\x01\x02" + good.substr(2)), Catch::Contains("bad magic number") && Catch::Contains("magic2"));
  CHECK_THAT(err("type", idx_bytes({6, 4, 4}, six_images(), 0x0D)), Catch::Contains("not supported"));
  CHECK_THAT(err("short", good.substr(0, good.size() - 10)), Catch::Contains("96 values") && Catch::Contains("truncated"));
  CHECK_THAT(err("long", good + "xx"), Catch::Contains("trailing"));
  CHECK_THAT(err("tiny", std::string("\0\0", 2)), Catch::Contains("not an IDX file"));
  CHECK_THAT(err("dims", idx_bytes({6, 4, 4, 1, 1}, six_images())), Catch::Contains("5 dimensions"));
  // a gzip stream that ends early, and one whose data is corrupt
  write_gzip(dir / "whole.gz", good);
  const std::string gz = read_bytes(dir / "whole.gz");
  CHECK_THAT(err("cut.gz", gz.substr(0, gz.size() / 2)), Catch::Contains("cut.gz") && Catch::Contains("ends early"));
  std::string corrupt = gz;
  for (std::size_t i = 12; i < 20 && i < corrupt.size(); ++i) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
  CHECK_THAT(err("corrupt.gz", corrupt), Catch::Contains("corrupt.gz"));
  CHECK_THROWS_WITH(vp::data::read_idx(dir / "none"), Catch::Contains("cannot open"));
  // images and labels that disagree, a class that does not occur
  write_bytes(dir / "img", good);
  write_bytes(dir / "lab5", idx_bytes({5}, {0, 1, 2, 0, 1}));
  CHECK_THROWS_WITH(vp::data::load_idx<float>(dir / "img", dir / "lab5"), Catch::Contains("6 images") && Catch::Contains("5 labels"));
  write_bytes(dir / "lab", idx_bytes({6}, {0, 1, 2, 0, 1, 2}));
  CHECK_THROWS_WITH(vp::data::load_idx<float>(dir / "img", dir / "lab", {.classes = {7}}), Catch::Contains("class 7 has no image"));
  CHECK_THROWS_WITH(vp::data::load_idx<float>(dir / "lab", dir / "lab"), Catch::Contains("expected 3"));
}

TEST_CASE("image folders and list files decode once; bad files are named or skipped", "[data][folder]") {
  temp_dir dir("vpdarts_test_folder");
  const auto px = pattern(6, 6);
  fs::create_directories(dir / "root" / "dog");
  fs::create_directories(dir / "root" / "cat");
  REQUIRE(stbi_write_png((dir / "root/cat/1.png").string().c_str(), 6, 6, 3, px.data(), 18));
  REQUIRE(stbi_write_jpg((dir / "root/cat/2.JPG").string().c_str(), 6, 6, 3, px.data(), 90));
  REQUIRE(stbi_write_bmp((dir / "root/dog/a.bmp").string().c_str(), 6, 6, 3, px.data()));
  write_bytes(dir / "root/dog/.hidden", "ignored");
  const vp::data::folder_options o{.image = 8, .channels = 3};
  auto set = vp::data::image_folder<float>(dir / "root", o);
  CHECK(set.data.class_names == std::vector<std::string>{"cat", "dog"});
  CHECK(set.data.labels == std::vector<int>{0, 0, 1});
  CHECK(set.data.images.shape() == "3x3x8x8");
  CHECK(set.skipped.empty());
  // the PNG and the BMP hold the same pixels
  CHECK((set.data.images.pixels.row(0) - set.data.images.pixels.row(2)).norm() < 1e-5);

  // a non-image file and a corrupt PNG in a class folder
  write_bytes(dir / "root/dog/notes.txt", "hello");
  CHECK_THROWS_WITH(vp::data::image_folder<float>(dir / "root", o), Catch::Contains("notes.txt") && Catch::Contains("not an image file"));
  fs::remove(dir / "root/dog/notes.txt");
  write_bytes(dir / "root/dog/broken.png", read_bytes(dir / "root/cat/1.png").substr(0, 30));
  CHECK_THROWS_WITH(vp::data::image_folder<float>(dir / "root", o), Catch::Contains("broken.png"));
  auto skipping = o;
  skipping.skip_bad = true;
  set = vp::data::image_folder<float>(dir / "root", skipping);
  CHECK(set.data.size() == 3);
  REQUIRE(set.skipped.size() == 1);
  CHECK_THAT(set.skipped[0], Catch::Contains("broken.png"));
  // an empty class, a missing root, a root without class folders
  fs::create_directories(dir / "root" / "eel");
  CHECK_THROWS_WITH(vp::data::image_folder<float>(dir / "root", o), Catch::Contains("eel") && Catch::Contains("empty"));
  CHECK_THROWS_WITH(vp::data::image_folder<float>(dir / "nowhere", o), Catch::Contains("not a folder"));
  CHECK_THROWS_WITH(vp::data::image_folder<float>(dir / "root/cat", o), Catch::Contains("no class folder"));

  // a list file, paths relative to it
  write_bytes(dir / "list.txt", "# path label\nroot/cat/1.png 1\n\nroot/dog/a.bmp 0\n");
  auto listed = vp::data::image_list<float>(dir / "list.txt", o);
  CHECK(listed.data.labels == std::vector<int>{1, 0});
  CHECK(listed.data.class_names == std::vector<std::string>{"0", "1"});
  write_bytes(dir / "bad.txt", "root/cat/1.png 1\nroot/dog/a.bmp zero\n");
  CHECK_THROWS_WITH(vp::data::image_list<float>(dir / "bad.txt", o), Catch::Contains("line 2") && Catch::Contains("bad.txt"));
  write_bytes(dir / "gap.txt", "root/cat/1.png 2\nroot/dog/a.bmp 0\n");
  CHECK_THROWS_WITH(vp::data::image_list<float>(dir / "gap.txt", o), Catch::Contains("class '1' has no readable image"));
  write_bytes(dir / "missing.txt", "root/cat/9.png 0\n");
  CHECK_THROWS_WITH(vp::data::image_list<float>(dir / "missing.txt", o), Catch::Contains("9.png"));
}

TEST_CASE("random crop and flip move whole images, seeded", "[data][transforms]") {
  vp::image_batch<float> x(16, 2, 5, 5);
  for (vp::index i = 0; i < x.pixels.size(); ++i) x.pixels.data()[i] = static_cast<float>(1 + i % 97);
  const vp::image_batch<float> original = x;
  std::vector<float> scratch;
  std::mt19937_64 rng(5);
  vp::data::augment_batch(x, {.crop_padding = 1, .flip = true}, rng, scratch);
  int flipped = 0, moved = 0;
  for (vp::index i = 0; i < x.size(); ++i) {
    bool found = false;
    for (int mirror = 0; mirror < 2 && !found; ++mirror)
      for (int dy = -1; dy <= 1 && !found; ++dy)
        for (int dx = -1; dx <= 1 && !found; ++dx) {
          bool same = true;
          for (int c = 0; c < 2; ++c)
            for (int y = 0; y < 5; ++y)
              for (int xx = 0; xx < 5; ++xx) {
                const int sx = (mirror ? 4 - xx : xx) + dx, sy = y + dy;
                const float want = sy >= 0 && sy < 5 && sx >= 0 && sx < 5 ? original.pixels(i, c * 25 + sy * 5 + sx) : 0.0f;
                same &= x.pixels(i, c * 25 + y * 5 + xx) == want;
              }
          if (same) {
            found = true;
            flipped += mirror;
            moved += dx != 0 || dy != 0;
          }
        }
    CHECK(found);
  }
  CHECK(flipped > 0);
  CHECK(flipped < 16);
  CHECK(moved > 0);
  // the same seed gives the same batch
  vp::image_batch<float> again = original;
  std::mt19937_64 rng2(5);
  vp::data::augment_batch(again, {.crop_padding = 1, .flip = true}, rng2, scratch);
  CHECK((again.pixels - x.pixels).norm() == 0);
  CHECK_THROWS_AS(vp::data::augment_batch(again, {.crop_padding = -1}, rng2, scratch), vp::config_error);
  CHECK_THROWS_WITH(vp::data::augment_batch(again, {.crop_padding = 1000000}, rng2, scratch), Catch::Contains("half the"));
}

TEST_CASE("hostile data input is refused clearly, and odd but valid input works", "[data][errors]") {
  temp_dir dir("vpdarts_test_hostile_data");
  // degenerate normalisations
  CHECK_THROWS_WITH(vp::data::normalization::parse("0.5;1e-300"), Catch::Contains("std of 1e-300"));
  CHECK_THROWS_WITH(vp::data::normalization::parse("1e308;0.5"), Catch::Contains("mean"));
  // a multi-member gzip IDX file (valid: gzip -d reads both members) loads
  const std::string img = idx_bytes({6, 4, 4}, six_images());
  write_gzip(dir / "a.gz", img.substr(0, 20));
  write_gzip(dir / "b.gz", img.substr(20));
  write_bytes(dir / "img.gz", read_bytes(dir / "a.gz") + read_bytes(dir / "b.gz"));
  CHECK(vp::data::read_idx(dir / "img.gz").values.size() == 96);
  // an IDX file of 0x0 images names the file
  write_bytes(dir / "empty", idx_bytes({6, 0, 0}, {}));
  write_bytes(dir / "lab", idx_bytes({6}, {0, 1, 2, 0, 1, 2}));
  CHECK_THROWS_WITH(vp::data::load_idx<float>(dir / "empty", dir / "lab", {}), Catch::Contains("empty") && Catch::Contains("0x0"));
  // list files: paths with spaces, quoted or not, tabs; huge labels refused before anything is made
  const auto px = pattern(4, 4);
  REQUIRE(stbi_write_png((dir / "my image.png").string().c_str(), 4, 4, 3, px.data(), 12));
  write_bytes(dir / "list.txt", "my image.png 0\n\"my image.png\" 1\nmy image.png\t1\r\n");
  const auto set = vp::data::image_list<float>(dir / "list.txt", {.image = 4});
  CHECK(set.data.labels == std::vector<int>{0, 1, 1});
  write_bytes(dir / "huge.txt", "my image.png 2147483647\n");
  CHECK_THROWS_WITH(vp::data::image_list<float>(dir / "huge.txt", {.image = 4}), Catch::Contains("line 1") && Catch::Contains("0..99999"));
  CHECK_THROWS_WITH(vp::data::image_list<float>(dir.path, {.image = 4}), Catch::Contains("is a folder"));
  CHECK_THROWS_WITH(vp::data::load_image(dir.path), Catch::Contains("is a folder"));
  // duplicate synthetic classes; a count that cannot fit in memory names itself
  CHECK_THROWS_WITH(vp::data::make_synthetic<float>({.count = 10, .classes = {5, 5}}), Catch::Contains("class 5 is listed twice"));
  CHECK_THROWS_WITH(vp::data::make_synthetic<float>({.image = 4096, .count = 10'000'000, .classes = {}}),
                    Catch::Contains("make_synthetic") && Catch::Contains("GiB"));
  // test classes matched by name, not by folder order
  auto test = vp::data::make_synthetic<float>({.image = 8, .count = 6, .classes = {7, 5}});
  const std::vector<int> before = test.labels;
  test.relabel_to({"dots", "rings", "solid"}, "test");  // 5 dots, 6 rings, 7 solid
  for (std::size_t i = 0; i < before.size(); ++i) CHECK(test.labels[i] == (before[i] == 0 ? 2 : 0));
  CHECK_THROWS_WITH(test.relabel_to({"dots"}, "eval"), Catch::Contains("eval") && Catch::Contains("'rings'"));
}

TEST_CASE("IDX dimensions whose product wraps around 2^64 are refused (a fuzzer's find)", "[data][idx][errors]") {
  temp_dir dir("vpdarts_test_idx_wrap");
  // 65536 x 16777216 x 838860800 wraps to 0 values, which an empty body "matched"
  write_bytes(dir / "wrap", std::string("\0\0\x08\x03\0\x01\0\0\x01\0\0\0\x32\0\0\0", 16));
  CHECK_THROWS_WITH(vp::data::read_idx(dir / "wrap"), Catch::Contains("impossibly large"));
}
