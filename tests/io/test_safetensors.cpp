// safetensors: round trips, dtypes, every malformed-file case, name and shape
// checking when loading into a model, and atomic writes.
#include <fstream>
#include <nlohmann/json.hpp>

#include "pch.hpp"

namespace vp = vpdarts;
namespace fs = std::filesystem;

namespace {

// Each test process writes in its own folder (ctest runs them side by side).
fs::path temp(const std::string& name) {
  static const vpdarts_test::temp_dir dir("vpdarts-io-test");
  return dir / name;
}

// A file from a header (JSON text, written as given) and raw data bytes.
std::vector<std::byte> file_bytes(const std::string& header, const std::vector<std::uint8_t>& data, std::int64_t len = -1) {
  std::vector<std::byte> out;
  const std::uint64_t n = len < 0 ? header.size() : static_cast<std::uint64_t>(len);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((n >> (8 * i)) & 0xff));
  for (char c : header) out.push_back(static_cast<std::byte>(c));
  for (auto b : data) out.push_back(static_cast<std::byte>(b));
  return out;
}

std::vector<std::uint8_t> f32_bytes(std::initializer_list<float> v) {
  std::vector<std::uint8_t> out;
  for (float f : v) {
    auto bits = std::bit_cast<std::uint32_t>(f);
    for (int k = 0; k < 4; ++k) out.push_back(static_cast<std::uint8_t>(bits >> (8 * k)));
  }
  return out;
}

std::string parse_error(const std::vector<std::byte>& bytes) {
  try {
    vp::io::safetensors::parse(bytes, "bad.safetensors");
  } catch (const vp::io_error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("F64, F16 and BF16 tensors convert to the model's scalar", "[io][safetensors]") {
  std::vector<std::uint8_t> data;
  const double d[2] = {1.5, -2.25};
  for (double x : d) {
    auto bits = std::bit_cast<std::uint64_t>(x);
    for (int k = 0; k < 8; ++k) data.push_back(static_cast<std::uint8_t>(bits >> (8 * k)));
  }
  // F16: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 = 0x7bff, smallest subnormal 2^-24 = 0x0001
  for (std::uint16_t h : {0x3c00, 0xc000, 0x7bff, 0x0001})
    for (int k = 0; k < 2; ++k) data.push_back(static_cast<std::uint8_t>(h >> (8 * k)));
  // BF16: 1.0 = 0x3f80, -0.5 = 0xbf00
  for (std::uint16_t h : {0x3f80, 0xbf00})
    for (int k = 0; k < 2; ++k) data.push_back(static_cast<std::uint8_t>(h >> (8 * k)));
  const std::string header = R"({"d":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},)"
                             R"("h":{"dtype":"F16","shape":[2,2],"data_offsets":[16,24]},)"
                             R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]}})";
  auto f = vp::io::safetensors::parse(file_bytes(header, data), "mixed");
  auto md = f.to_matrix<float>("d", 1, 2);
  CHECK(md(0, 0) == 1.5f);
  CHECK(md(0, 1) == -2.25f);
  auto mh = f.to_matrix<double>("h", 2, 2);
  CHECK(mh(0, 0) == 1.0);
  CHECK(mh(0, 1) == -2.0);
  CHECK(mh(1, 0) == 65504.0);
  CHECK(mh(1, 1) == std::ldexp(1.0, -24));
  auto mb = f.to_matrix<float>("b", 2, 1);
  CHECK(mb(0, 0) == 1.0f);
  CHECK(mb(1, 0) == -0.5f);
}

TEST_CASE("malformed safetensors files are rejected with an io_error", "[io][safetensors][errors]") {
  const std::string ok_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const auto ok_data = f32_bytes({1.f, 2.f});
  CHECK_NOTHROW(vp::io::safetensors::parse(file_bytes(ok_header, ok_data), "ok"));
  CHECK_THAT(parse_error({std::byte{1}, std::byte{0}}), Catch::Contains("bad.safetensors") && Catch::Contains("too short"));
  CHECK_THAT(parse_error(file_bytes(ok_header, ok_data, 5000)), Catch::Contains("runs past the end"));
  CHECK_THAT(parse_error(file_bytes("{not json", ok_data)), Catch::Contains("not valid JSON"));
  CHECK_THAT(parse_error(file_bytes("[1,2]", {})), Catch::Contains("not a JSON object"));
  // truncated data: the header promises 8 bytes, 4 are there
  CHECK_THAT(parse_error(file_bytes(ok_header, f32_bytes({1.f}))), Catch::Contains("outside the 4 data bytes"));
  CHECK_THAT(parse_error(file_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", ok_data)),
             Catch::Contains("'a'") && Catch::Contains("needs 12"));
  CHECK_THAT(parse_error(file_bytes(R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", ok_data)),
             Catch::Contains("unknown dtype 'Q7'"));
  CHECK_THAT(parse_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", ok_data)),
             Catch::Contains("outside"));
  CHECK_THAT(parse_error(file_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", ok_data)),
             Catch::Contains("not a size"));
  CHECK_THAT(parse_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2]}})", ok_data)), Catch::Contains("data_offsets"));
  CHECK_THAT(parse_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                    ok_data)),
             Catch::Contains("overlaps"));
  CHECK_THAT(parse_error(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", ok_data)),
             Catch::Contains("hole of 4 bytes"));
  CHECK_THAT(parse_error(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", ok_data)),
             Catch::Contains("4 bytes after the last tensor"));
  CHECK_THAT(parse_error(file_bytes(R"({"__metadata__":{"k":3}})", {})), Catch::Contains("not a string"));
  CHECK_THAT(parse_error(file_bytes(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", ok_data)),
             Catch::Contains("too large"));
  CHECK_THROWS_WITH(vp::io::safetensors::read(temp("does_not_exist.safetensors")), Catch::Contains("cannot open"));
  auto f = vp::io::safetensors::parse(file_bytes(ok_header, ok_data), "ok");
  CHECK_THROWS_WITH(f.integers("a"), Catch::Contains("not an integer tensor"));
  CHECK_THROWS_WITH(f.at("zz"), Catch::Contains("no tensor 'zz'"));
}

TEST_CASE("loading reports every missing, unexpected and mis-shaped name at once", "[io][checkpoint][errors]") {
  vp::vit_config small{8, 3, 4, 8, 2, 2, 16, 3};
  vp::vit<float> a(small, 1);
  const auto path = temp("mismatch.safetensors");
  vp::save_vit(path, a);
  // another depth, another width of MLP: missing blocks.2.*, unexpected nothing, mismatched fc shapes
  vp::vit_config other = small;
  other.depth = 3;
  other.mlp = 32;
  vp::vit<float> b(other, 2);
  const vp::matrix<float> before = b.patch_weight.value();
  auto params = b.parameters();
  try {
    vp::io::load_parameters<float>(path, params);
    FAIL("no error");
  } catch (const vp::io_error& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("missing 'blocks.2.norm1.weight'"));
    CHECK_THAT(msg, Catch::Contains("'blocks.0.mlp.fc1.weight' is (16, 8) in the file but (32, 8) in the model"));
    CHECK_THAT(msg, Catch::Contains(path.filename().string()));
  }
  CHECK((b.patch_weight.value() - before).norm() == 0);  // nothing changed
  // a model with fewer parameters sees unexpected names, allowed only on request
  vp::vit_config shallow = small;
  shallow.depth = 1;
  vp::vit<float> c(shallow, 3);
  auto cp = c.parameters();
  CHECK_THROWS_WITH(vp::io::load_parameters<float>(path, cp), Catch::Contains("unexpected 'blocks.1.norm1.weight'"));
  CHECK_NOTHROW(vp::io::load_parameters<float>(path, cp, {.allow_unexpected = true}));
  CHECK((c.patch_weight.value() - a.patch_weight.value()).norm() == 0);
  // a head of another size is skipped: the model gets a fresh zero head
  auto d = vp::load_vit<float>(path, 0, 7);
  CHECK(d.config().classes == 7);
  CHECK(d.head.weight.value().isZero());
  fs::remove(path);
}

TEST_CASE("NaN or Inf is never written", "[io][checkpoint][errors]") {
  const auto path = temp("nan.safetensors");
  fs::remove(path);
  vp::parameter<float> p("w", 1, 3);
  p.value() << 1.0f, std::numeric_limits<float>::infinity(), 2.0f;
  std::vector<vp::parameter<float>*> ps{&p};
  CHECK_THROWS_WITH(vp::io::save_parameters<float>(path, ps), Catch::Contains("'w' holds NaN or Inf") && Catch::Contains("nan.safetensors"));
  CHECK_FALSE(fs::exists(path));
  p.value()(0, 1) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(vp::io::save_parameters<float>(path, ps), vp::value_error);
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("writes are atomic", "[io][checkpoint]") {
  const auto path = temp("atomic.txt");
  vp::io::atomic_write(path, [](std::ostream& o) { o << "old"; });
  CHECK_THROWS_AS(vp::io::atomic_write(path,
                                       [](std::ostream& o) {
                                         o << "half of the new";
                                         throw vp::io_error("simulated crash");
                                       }),
                  vp::io_error);
  std::ifstream in(path);
  std::string content;
  std::getline(in, content);
  CHECK(content == "old");
  for (const auto& e : fs::directory_iterator(path.parent_path()))
    CHECK(e.path().filename().string().find("atomic.txt.tmp") == std::string::npos);
  CHECK_THROWS_WITH(vp::io::atomic_write(fs::path("/nonexistent_dir/x.safetensors"), [](std::ostream&) {}),
                    Catch::Contains("cannot create"));
  fs::remove(path);
}

TEST_CASE("JSON from outside is depth-limited before parsing", "[io][json][errors]") {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  CHECK_THROWS_WITH(vp::io::parse_json(deep, "deep.json"), Catch::Contains("deep.json") && Catch::Contains("nested deeper"));
  CHECK(vp::io::parse_json(R"({"a": [1, {"b": "[[[["}]})", "ok.json")["a"][0] == 1);  // brackets inside strings do not count
  CHECK_THROWS_WITH(vp::io::parse_json("{", "broken.json"), Catch::Contains("broken.json: not valid JSON"));
  CHECK_THROWS_WITH(vp::genotype::from_json(deep, "g.json"), Catch::Contains("nested deeper"));
}

TEST_CASE("a write killed midway leaves a temporary that the next write removes", "[io][checkpoint]") {
  const auto path = temp("stale.txt");
  const fs::path dead = fs::path(path.string() + ".tmp-999999999-deadbeef");  // no such process
  const fs::path live = fs::path(path.string() + ".tmp-1-beef");              // init: alive
  vpdarts_test::write_bytes(dead, "half");
  vpdarts_test::write_bytes(live, "busy");
  vp::io::atomic_write(path, [](std::ostream& o) { o << "whole"; });
  CHECK_FALSE(fs::exists(dead));
  CHECK(fs::exists(live));
  CHECK(vpdarts_test::read_bytes(path) == "whole");
  fs::remove(live);
}
