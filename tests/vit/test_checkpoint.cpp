// ViT checkpoints (vit/checkpoint.hpp): timm names round-trip bit-exactly, the
// configuration is read from shapes and metadata, bad metadata is named.
#include <cstring>

#include "pch.hpp"

namespace vp = vpdarts;

TEST_CASE("a ViT checkpoint round-trips bit-exactly", "[vit][checkpoint]") {
  vp::vit<float> a(vp::vit_config{16, 3, 4, 12, 2, 3, 24, 4}, 11);
  vp::init::engine rng(1);
  for (auto* p : a.parameters()) vp::init::normal(*p, 1.0, rng);
  const vpdarts_test::temp_dir dir("vpdarts-vit-checkpoint");
  const auto path = dir / "roundtrip.safetensors";
  vp::save_vit(path, a, {{"note", "test"}});
  auto f = vp::io::safetensors::read(path);
  CHECK(f.metadata().at("note") == "test");
  CHECK(f.metadata().at("vpdarts.heads") == "3");
  CHECK(f.at("patch_embed.proj.weight").shape == std::vector<std::int64_t>{12, 3, 4, 4});
  CHECK(f.at("cls_token").shape == std::vector<std::int64_t>{1, 1, 12});
  auto b = vp::load_vit<float>(path);
  CHECK(b.config() == a.config());
  auto pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i]->name());
    CHECK(std::memcmp(pa[i]->value().data(), pb[i]->value().data(), sizeof(float) * pa[i]->size()) == 0);
  }
}

TEST_CASE("the ViT configuration is read from a checkpoint", "[vit][checkpoint]") {
  vp::vit<float> a(vp::vit_config{24, 1, 6, 16, 3, 4, 40, 6}, 1);
  const vpdarts_test::temp_dir dir("vpdarts-vit-infer");
  const auto path = dir / "infer.safetensors";
  vp::save_vit(path, a);
  auto f = vp::io::safetensors::read(path);
  CHECK(vp::infer_vit_config(f) == a.config());
  // heads the metadata states cannot be contradicted; without metadata they come from the caller, else D/64
  CHECK_THROWS_WITH(vp::infer_vit_config(f, 2), Catch::Contains("heads 2 contradicts the file's metadata"));
  auto all = a.parameters();
  vp::io::save_parameters<float>(dir / "bare.safetensors", all);
  const auto bare = vp::io::safetensors::read(dir / "bare.safetensors");
  CHECK(vp::infer_vit_config(bare, 2).heads == 2);
  CHECK(vp::infer_vit_config(bare).heads == 1);  // D 16 / 64, at least 1
  CHECK_THROWS_WITH(vp::infer_vit_config(bare, 3), Catch::Contains("3 heads do not divide"));
  vpdarts_test::write_bytes(dir / "empty.safetensors", std::string("\x02\0\0\0\0\0\0\0{}", 10));
  const auto empty = vp::io::safetensors::read(dir / "empty.safetensors");
  CHECK_THROWS_WITH(vp::infer_vit_config(empty), Catch::Contains("patch_embed.proj.weight"));
  // metadata that is not a number is an io_error naming the key, not a std::invalid_argument
  auto backbone = a.backbone_parameters();
  vp::io::save_parameters<float>(path, backbone, {{"vpdarts.heads", "two"}});
  CHECK_THROWS_WITH(vp::infer_vit_config(vp::io::safetensors::read(path)),
                    Catch::Contains("vpdarts.heads = 'two' is not a positive integer"));
}

TEST_CASE("a backbone holding NaN or Inf is refused, naming the tensor", "[vit][checkpoint][errors]") {
  const vpdarts_test::temp_dir dir("vpdarts-vit-nan");
  vp::vit<float> a(vp::vit_config{8, 3, 4, 8, 1, 2, 16, 3}, 1);
  vp::save_vit(dir / "ok.safetensors", a);
  std::string bytes = vpdarts_test::read_bytes(dir / "ok.safetensors");
  const auto f = vp::io::safetensors::read(dir / "ok.safetensors");
  std::uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(bytes.data() + 8 + header + f.at("blocks.0.mlp.fc2.weight").begin, &inf, sizeof inf);
  vpdarts_test::write_bytes(dir / "inf.safetensors", bytes);
  CHECK_THROWS_WITH(vp::load_vit<float>(dir / "inf.safetensors"), Catch::Contains("blocks.0.mlp.fc2.weight") && Catch::Contains("NaN or Inf"));
}
