// The ViT backbone: configuration checks, the patch embedding against a plain
// convolution, gradients of every parameter, and timm-shaped configurations.
#include "pch.hpp"

namespace vp = vpdarts;
using vpdarts_test::tiny_vit;

TEST_CASE("vit_config rejects invalid shapes", "[vit][config]") {
  CHECK_NOTHROW(vp::vit_config::toy().validate());
  CHECK_NOTHROW(vp::vit_config::tiny16().validate());
  CHECK_NOTHROW(vp::vit_config::fashion().validate());
  auto bad = [](auto edit) {
    vp::vit_config c = vp::vit_config::toy();
    edit(c);
    return c;
  };
  CHECK_THROWS_WITH(bad([](auto& c) { c.patch = 5; }).validate(),
                    Catch::Contains("patch 5 does not divide the image size 32"));
  CHECK_THROWS_WITH(bad([](auto& c) { c.heads = 5; }).validate(), Catch::Contains("5 heads do not divide") &&
                                                                         Catch::Contains("192"));
  for (auto field : {&vp::vit_config::image, &vp::vit_config::channels, &vp::vit_config::patch, &vp::vit_config::dim,
                     &vp::vit_config::depth, &vp::vit_config::heads, &vp::vit_config::mlp, &vp::vit_config::classes}) {
    vp::vit_config c = vp::vit_config::toy();
    c.*field = 0;
    CHECK_THROWS_AS(c.validate(), vp::config_error);
  }
  CHECK_THROWS_AS(vp::vit<float>(bad([](auto& c) { c.depth = -1; })), vp::config_error);
  CHECK(vp::vit_config::toy().tokens() == 65);
  CHECK(vp::vit_config::tiny16().tokens() == 197);
}

TEST_CASE("parameters carry timm names and shapes", "[vit]") {
  vp::vit<float> m(vp::vit_config::toy());
  CHECK(m.find("patch_embed.proj.weight")->shape() == std::vector<vp::index>{192, 3, 4, 4});
  CHECK(m.find("cls_token")->shape() == std::vector<vp::index>{1, 1, 192});
  CHECK(m.find("pos_embed")->shape() == std::vector<vp::index>{1, 65, 192});
  CHECK(m.find("blocks.5.attn.qkv.weight")->shape() == std::vector<vp::index>{576, 192});
  CHECK(m.find("blocks.0.attn.proj.bias")->shape() == std::vector<vp::index>{192});
  CHECK(m.find("blocks.3.mlp.fc1.weight")->shape() == std::vector<vp::index>{768, 192});
  CHECK(m.find("norm.weight")->shape() == std::vector<vp::index>{192});
  CHECK(m.find("head.weight")->shape() == std::vector<vp::index>{10, 192});
  CHECK(m.find("blocks.6.norm1.weight") == nullptr);
  CHECK(m.parameters().size() == 4 + 6 * 12 + 2 + 2);
  m.freeze_backbone();
  for (auto* p : m.backbone_parameters()) CHECK_FALSE(p->requires_grad());
  CHECK(m.head.weight.requires_grad());
}

TEST_CASE("patch embedding equals a strided convolution", "[vit]") {
  vp::vit_config c{8, 2, 4, 5, 1, 1, 8, 3};
  vp::vit<double> m(c, 3);
  vp::init::engine rng(4);
  vp::init::normal(m.patch_bias, 0.5, rng);
  vp::image_batch<double> img(2, 2, 8, 8);
  img.pixels.setRandom();
  vp::tape<double> t;
  auto x = m.embed(t, img);  // [cls ; patches] + pos
  REQUIRE(x.rows() == 2 * 5);
  for (vp::index b = 0; b < 2; ++b)
    for (vp::index py = 0; py < 2; ++py)
      for (vp::index px = 0; px < 2; ++px)
        for (vp::index d = 0; d < 5; ++d) {
          double acc = m.patch_bias.value()(0, d);
          for (vp::index ch = 0; ch < 2; ++ch)
            for (vp::index ky = 0; ky < 4; ++ky)
              for (vp::index kx = 0; kx < 4; ++kx)
                acc += m.patch_weight.value()(d, (ch * 4 + ky) * 4 + kx) *
                       img.pixels(b, (ch * 8 + py * 4 + ky) * 8 + px * 4 + kx);
          const vp::index token = 1 + py * 2 + px;
          CHECK(x.value()(b * 5 + token, d) == Approx(acc + m.pos_embed.value()(token, d)).epsilon(1e-12));
        }
  CHECK((x.value().row(5) - m.cls_token.value().row(0) - m.pos_embed.value().row(0)).norm() < 1e-12);
  vp::image_batch<double> wrong(8, 3, 30, 32);
  CHECK_THROWS_WITH(m.embed(t, wrong), Catch::Contains("vit::embed: image batch is 8x3x30x32") &&
                                           Catch::Contains("expects Cx8x8 with C=2"));
}

TEST_CASE("every ViT parameter passes a gradient check", "[vit][gradcheck]") {
  vp::vit<double> m(tiny_vit(), 1);
  vp::init::engine rng(5);
  for (auto* p : m.parameters()) vp::init::normal(*p, 0.3, rng);
  m.unfreeze_all();
  vp::image_batch<double> img(2, 3, 8, 8);
  img.pixels.setRandom();
  const std::vector<int> labels{0, 2};
  auto params = m.parameters();
  auto r = vp::gradcheck<double>([&](vp::tape<double>& t) { return vp::cross_entropy(m.logits(t, img), labels); },
                                 params, {.max_entries = 12});
  INFO(r.worst);
  CHECK(r.passed);
  CHECK(r.max_error < 1e-6);
}

TEST_CASE("a frozen backbone gets no gradient work", "[vit]") {
  vp::vit<float> m(tiny_vit(), 2);
  m.freeze_backbone();
  vp::image_batch<float> img(2, 3, 8, 8);
  img.pixels.setRandom();
  vp::tape<float> t;
  auto feats = m.features(t, img);
  CHECK_FALSE(feats.requires_grad());  // nothing trainable before the head
  auto loss = vp::cross_entropy(m.head.forward(t, feats), std::vector<int>{1, 2});
  t.backward(loss);
  CHECK(m.head.weight.grad().norm() > 0);
  CHECK_THROWS_AS(m.patch_weight.grad(), vp::state_error);
}

TEST_CASE("the hook runs in place of each block", "[vit]") {
  vp::vit<double> m(tiny_vit(), 3);
  vp::image_batch<double> img(1, 3, 8, 8);
  img.pixels.setRandom();
  vp::tape<double> t;
  std::vector<vp::index> seen;
  auto plain = m.logits(t, img);
  auto hooked = m.logits(t, img, [&](vp::index l, vp::vit_block<double>& b, const vp::var<double>& x, vp::index batch) {
    seen.push_back(l);
    return b.forward(t, x, batch);
  });
  CHECK(seen == std::vector<vp::index>{0, 1});
  CHECK((plain.value() - hooked.value()).norm() == 0);
}

TEST_CASE("timm's vit_tiny_patch16_224 shapes build, save, load and run", "[vit][io]") {
  vp::vit<float> m(vp::vit_config::tiny16(), 7);
  CHECK(m.backbone_size() == 5524416);  // timm's vit_tiny_patch16_224 without head
  const vpdarts_test::temp_dir dir("vpdarts-tiny16-test");
  const auto path = dir / "tiny16.safetensors";
  vp::save_vit(path, m);
  auto back = vp::load_vit<float>(path);
  CHECK(back.config() == m.config());
  vp::image_batch<float> img(1, 3, 224, 224);
  img.pixels.setRandom();
  vp::tape<float> t;
  vp::no_grad<float> guard(t);
  auto a = m.features(t, img).value();
  auto b = back.features(t, img).value();
  CHECK(a.rows() == 1);
  CHECK(a.cols() == 192);
  CHECK((a - b).norm() == 0);
  std::filesystem::remove(path);
}

TEST_CASE("a forward pass with no gradient holds one block's values at a time, with the same result", "[vit]") {
  const vp::vit_config c{16, 3, 4, 16, 6, 2, 32, 3};
  vp::vit<float> m(c, 11);
  vp::image_batch<float> img(4, 3, 16, 16);
  img.pixels.setRandom();
  vp::tape<float> recorded;  // gradients on: every block's values stay on the tape
  m.unfreeze_all();
  const vp::matrix<float> a = m.logits(recorded, img).value();
  vp::tape<float> t;
  vp::no_grad<float> guard(t);
  const vp::matrix<float> b = m.logits(t, img).value();
  CHECK((a - b).norm() == 0);
  const std::size_t kept = t.memory().peak_bytes() + t.block_tape().memory().peak_bytes();
  INFO("with gradients " << recorded.memory().peak_bytes() << " bytes, without " << kept);
  CHECK(kept * 3 < recorded.memory().peak_bytes());  // 6 blocks: about one block's values plus the embedding
  // the next forward on the same tape reuses the memory
  t.reset();
  const vp::matrix<float> again = m.logits(t, img).value();
  CHECK((again - b).norm() == 0);
  // a batch of more than inference_chunk_rows token rows goes through in chunks, with the whole batch's result
  vp::vit<double> md(c, 12);
  vp::image_batch<double> many(300, 3, 16, 16);  // 300 x 17 tokens: two chunks of 150 images
  many.pixels.setRandom();
  vp::tape<double> whole, chunked;
  md.unfreeze_all();
  const vp::matrix<double> full = md.logits(whole, many).value();
  vp::no_grad<double> quiet(chunked);
  const vp::matrix<double> parts = md.logits(chunked, many).value();
  REQUIRE(parts.rows() == 300);
  CHECK((full - parts).norm() <= 1e-12 * full.norm());
  CHECK(chunked.block_tape().memory().peak_bytes() * 1.5 < whole.memory().peak_bytes() / 6);
}

TEST_CASE("frozen blocks that recompute qkv give the same values and gradients with less kept", "[vit]") {
  vp::vit_config c{16, 3, 4, 12, 3, 3, 40, 3};
  c.layer_scale = true;
  vp::vit<double> m(c, 31);
  m.freeze_backbone();
  const vp::index batch = 2, rows = batch * c.tokens();
  auto x = vpdarts_test::random_parameter<double>("x", rows, c.dim, 32);
  auto run = [&](vp::attention_memory mode, vp::tape<double>& t) {
    t.configure({.attention = mode});
    x.zero_grad();
    vp::var<double> y = t.leaf(x);
    for (auto& b : m.blocks) y = b.forward(t, y, batch);
    const vp::matrix<double> value = y.value();
    t.backward(vp::sum(vp::mul(y, y)));
    return std::pair{value, vp::matrix<double>(x.grad())};
  };
  vp::tape<double> keep, again;
  const auto [y1, g1] = run(vp::attention_memory::keep, keep);
  const auto [y2, g2] = run(vp::attention_memory::recompute, again);
  CHECK((y1 - y2).norm() <= 1e-13 * y1.norm());
  CHECK((g1 - g2).norm() <= 1e-12 * g1.norm());
  CHECK(g1.norm() > 0);
  INFO("kept " << keep.memory().peak_bytes() << " bytes, recomputing " << again.memory().peak_bytes());
  // qkv (3 x 12 values a row) of every block is gone from the arena
  CHECK(again.memory().peak_bytes() + std::size_t(3 * 12 * sizeof(double)) * rows * 3 <= keep.memory().peak_bytes());
  CHECK(vp::tape<double>().config().attention == vp::attention_memory::keep);  // the default
  // both branches recomputing, against finite differences through a whole frozen block
  auto small = vpdarts_test::random_parameter<double>("s", batch * 3, c.dim, 33);
  const vp::gradcheck_result r = vp::gradcheck(
      [&](vp::tape<double>& t) {
        t.configure({.mlp = vp::mlp_memory::recompute, .attention = vp::attention_memory::recompute});
        const vp::var<double> y = m.blocks[0].forward(t, t.leaf(small), batch);
        return vp::sum(vp::mul(y, y));
      },
      {&small});
  INFO(r.worst << " (" << r.checked << " entries checked)");
  REQUIRE(r);
}

TEST_CASE("frozen blocks that recompute their MLP give the same values and gradients with less kept", "[vit]") {
  for (const bool quick : {false, true}) {
    vp::vit_config c{16, 3, 4, 12, 3, 3, 40, 3};
    if (quick) c.act = vp::activation::quick_gelu;
    c.layer_scale = quick;  // CLIP-like and DINOv2-like blocks both
    vp::vit<double> m(c, 21);
    m.freeze_backbone();
    const vp::index batch = 2, rows = batch * c.tokens();
    auto x = vpdarts_test::random_parameter<double>("x", rows, c.dim, 22);
    auto run = [&](vp::mlp_memory mode, vp::tape<double>& t) {
      t.configure({.mlp = mode});
      x.zero_grad();
      vp::var<double> y = t.leaf(x);
      for (auto& b : m.blocks) y = b.forward(t, y, batch);
      const vp::matrix<double> value = y.value();
      t.backward(vp::sum(vp::mul(y, y)));
      return std::pair{value, vp::matrix<double>(x.grad())};
    };
    vp::tape<double> keep, again;
    const auto [y1, g1] = run(vp::mlp_memory::keep, keep);
    const auto [y2, g2] = run(vp::mlp_memory::recompute, again);
    CHECK((y1 - y2).norm() <= 1e-13 * y1.norm());
    CHECK((g1 - g2).norm() <= 1e-12 * g1.norm());
    CHECK(g1.norm() > 0);
    INFO("kept " << keep.memory().peak_bytes() << " bytes, recomputing " << again.memory().peak_bytes());
    CHECK(again.memory().peak_bytes() < keep.memory().peak_bytes() * 3 / 4);  // the 40-wide hidden layer is gone
    CHECK(vp::tape<double>().config().mlp == vp::mlp_memory::keep);  // the default
    // the recomputing form is checked against finite differences through a whole frozen block
    auto small = vpdarts_test::random_parameter<double>("s", batch * 3, c.dim, 23);
    const vp::gradcheck_result r = vp::gradcheck(
        [&](vp::tape<double>& t) {
          t.configure({.mlp = vp::mlp_memory::recompute});
          const vp::var<double> y = m.blocks[0].forward(t, t.leaf(small), batch);
          return vp::sum(vp::mul(y, y));
        },
        {&small});
    INFO(r.worst << " (" << r.checked << " entries checked)");
    REQUIRE(r);
  }
}

// vpdarts 0.1.0's names in vpdarts::io, deprecated for a release: a program written against them compiles
// and gets what the new names give; unqualified calls inside vpdarts still resolve to the new names
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
TEST_CASE("the 0.1.0 names vpdarts::io::load_vit, save_vit and infer_vit_config still work", "[vit][checkpoint]") {
  const vpdarts_test::temp_dir dir("vpdarts-io-alias");
  vp::vit<float> m(vp::vit_config{8, 3, 4, 8, 1, 2, 16, 2}, 3);
  const std::string file = (dir / "old.safetensors").string();
  vp::io::save_vit(file, m);
  const vp::vit<float> a = vp::io::load_vit<float>(file);
  const auto f = vp::io::safetensors::read(file);
  const vp::vit<float> b = vp::io::load_vit<float>(f, 2);
  const vp::vit_config c = vp::io::infer_vit_config(f);
  CHECK(c.dim == 8);
  CHECK(c.heads == 2);
  CHECK(a.config().describe() == m.config().describe());
  CHECK((a.head.weight.value() - m.head.weight.value()).norm() == 0);
  CHECK((b.head.weight.value() - m.head.weight.value()).norm() == 0);
  CHECK(load_vit<float>(f).config().describe() == m.config().describe());  // by argument-dependent lookup: no ambiguity
}
#pragma GCC diagnostic pop

TEST_CASE("the kernel profile counts a step's products, LayerNorms and activations only while it is on",
          "[vit][profile]") {
  vp::vit<float> m(vp::vit_config{8, 3, 4, 8, 2, 2, 16, 2}, 3);
  for (vp::parameter<float>* p : m.parameters())  // a frozen backbone, as in a search: its blocks run the fused kernels
    if (p->name().rfind("head.", 0) != 0) p->set_requires_grad(false);
  vp::image_batch<float> x(2, 3, 8, 8);
  x.pixels.setRandom();
  auto step = [&] {
    vp::tape<float> t;
    const vp::var<float> loss = vp::cross_entropy(m.logits(t, x), std::vector<int>{0, 1});
    t.backward(loss);
  };
  namespace d = vp::detail;
  const auto calls = [](d::profile_kind k) { return d::profile().calls[static_cast<std::size_t>(k)].load(); };
  d::set_profiling(false);
  step();
  CHECK(calls(d::profile_kind::weight_product) == 0);
  d::set_profiling(true);
  step();
  d::set_profiling(false);
  CHECK(calls(d::profile_kind::weight_product) > 0);
  CHECK(calls(d::profile_kind::layer_norm) > 0);
  CHECK(calls(d::profile_kind::activation) > 0);
  CHECK(calls(d::profile_kind::attention_rest) > 0);
  CHECK(d::profile().ns[static_cast<std::size_t>(d::profile_kind::weight_product)].load() > 0);
  const auto before = calls(d::profile_kind::weight_product);
  step();  // off again: nothing more is counted
  CHECK(calls(d::profile_kind::weight_product) == before);
}
