// Foundation backbones as timm saves them (tests/fixtures/timm, computed by timm
// itself: see README.txt there): the classic ViT, another image size, DINOv2
// (LayerScale, 518 -> 112), DINOv2 with 4 registers, CLIP with QuickGELU and
// norm_pre, and average pooling with fc_norm. vit::features must be timm's
// forward_head(forward_features(x), pre_logits=True). Then prompts on these
// variants, pos_embed resampling, and the errors a wrong file gets.
#include <fstream>
#include <nlohmann/json.hpp>

#include "pch.hpp"

namespace vp = vpdarts;

namespace {

const std::string timm_dir = VPDARTS_TEST_FIXTURES "/timm";

template <class S>
double features_error(const std::string& variant) {
  const std::string dir = timm_dir + "/" + variant;
  std::ifstream in(dir + "/expected.json");
  REQUIRE(in);
  const nlohmann::json e = nlohmann::json::parse(in);
  vp::vit_load_options o{.image = e["target_image"].get<vp::index>(), .heads = e["heads"].get<vp::index>(),
                         .arch = e["timm_model"].get<std::string>()};
  vp::vit<S> m = vp::load_vit<S>(dir + "/backbone.safetensors", o);
  const vp::vit_config& c = m.config();
  CHECK(c.reg_tokens == e["reg_tokens"].get<vp::index>());
  CHECK(c.no_embed_class == e["no_embed_class"].get<bool>());
  CHECK(c.pre_norm == e["pre_norm"].get<bool>());
  CHECK(c.norm_eps == Approx(e["norm_eps"].get<double>()));
  CHECK(vp::to_string(c.act) == e["act"].get<std::string>());
  CHECK(vp::to_string(c.pool) == e["global_pool"].get<std::string>());
  CHECK(c.tokens() == e["tokens_shape"][1].get<vp::index>());
  const auto input = vp::io::safetensors::read(dir + "/input.safetensors");
  const auto& img = input.at("images");
  vp::image_batch<S> x(img.shape[0], img.shape[1], img.shape[2], img.shape[3]);
  input.copy_to<S>(img, std::span<S>(x.pixels.data(), static_cast<std::size_t>(x.pixels.size())));
  vp::tape<S> t;
  vp::no_grad<S> guard(t);
  const vp::matrix<double> got = m.features(t, x).value().template cast<double>();
  vp::matrix<double> want(got.rows(), got.cols());
  REQUIRE(e["features"].size() == static_cast<std::size_t>(got.rows()));
  for (vp::index i = 0; i < got.rows(); ++i)
    for (vp::index j = 0; j < got.cols(); ++j) want(i, j) = e["features"][static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
  return (got - want).norm() / want.norm();
}

}  // namespace

/// The double model against timm's float64 features (tests/fixtures/timm64, made by make_vectors.py there).
double features_error_f64(const std::string& variant) {
  const std::string dir = VPDARTS_TEST_FIXTURES "/timm64/" + variant;
  std::ifstream in(dir + "/expected.json");
  REQUIRE(in);
  const nlohmann::json e = nlohmann::json::parse(in);
  vp::vit<double> m = vp::load_vit<double>(dir + "/backbone.safetensors",
                                           {.image = e["target_image"].get<vp::index>(), .heads = e["heads"].get<vp::index>(),
                                            .arch = e["timm_model"].get<std::string>()});
  const auto input = vp::io::safetensors::read(dir + "/input.safetensors");
  const auto& img = input.at("images");
  vp::image_batch<double> x(img.shape[0], img.shape[1], img.shape[2], img.shape[3]);
  input.copy_to<double>(img, std::span<double>(x.pixels.data(), static_cast<std::size_t>(x.pixels.size())));
  vp::tape<double> t;
  vp::no_grad<double> guard(t);
  const vp::matrix<double> got = m.features(t, x).value();
  vp::matrix<double> want(got.rows(), got.cols());
  for (vp::index i = 0; i < got.rows(); ++i)
    for (vp::index j = 0; j < got.cols(); ++j) want(i, j) = e["features"][static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
  return (got - want).norm() / want.norm();
}

TEST_CASE("timm's features for every foundation-model variant", "[vit][foundation]") {
  for (const char* v : {"plain", "plain_resized", "dinov2", "dinov2_reg4", "clip_quickgelu", "gap_fcnorm"}) {
    INFO("variant " << v);
    CHECK(features_error<float>(v) < 1e-4);
    // these references are float32: double agrees to float32's rounding
    CHECK(features_error<double>(v) < 1e-5);
    // float64 references: exact to double rounding, but where timm resampled pos_embed, which it does in float32
    CHECK(features_error_f64(v) < (std::string(v) == "plain_resized" ? 1e-6 : 1e-9));
  }
}

TEST_CASE("pos_embed resampling is PyTorch's antialiased bicubic", "[vit][foundation]") {
  // a 2x2 grid upsampled to 4x4 and back, one prefix row kept
  vp::matrix<double> pos(5, 1);
  pos << 7, 1, 2, 3, 4;
  const vp::matrix<double> up = vp::resample_pos_embed(pos, 1, 2, 4);
  REQUIRE(up.rows() == 17);
  CHECK(up(0, 0) == 7);
  // PIL's a = -0.5 filter at scale 0.5: output 0 of a row sees inputs 0 and 1 at distances 0.25 and 1.25,
  // weights 0.8671875 and -0.0703125 before normalising to sum 1
  const double w0 = 0.8671875 / 0.796875, w1 = -0.0703125 / 0.796875;
  CHECK(up(1, 0) == Approx(w0 * (w0 * 1 + w1 * 2) + w1 * (w0 * 3 + w1 * 4)));
  const vp::matrix<double> same = vp::resample_pos_embed(pos, 1, 2, 2);
  CHECK((same - pos).norm() == 0);
  // shrinking averages: a constant grid stays constant
  vp::matrix<double> flat = vp::matrix<double>::Constant(1 + 37 * 37, 3, 0.25);
  const vp::matrix<double> down = vp::resample_pos_embed(flat, 1, 37, 8);
  CHECK((down.array() - 0.25).abs().maxCoeff() < 1e-12);
  CHECK_THROWS_WITH(vp::resample_pos_embed(pos, 0, 2, 3), Catch::Contains("not 0 prefix rows and a 2x2 grid"));
}

TEST_CASE("prompts on registers: concat goes after every prefix token, pooling never sees prompts", "[vit][foundation][search]") {
  vp::vit_config c{28, 3, 14, 16, 2, 2, 32, 3};
  c.reg_tokens = 2;
  c.no_embed_class = true;
  c.layer_scale = true;
  vp::vit<double> bb(c, 3);
  CHECK(bb.pos_embed.rows() == 4);
  CHECK(c.tokens() == 7);
  vp::init::engine rng(4);
  for (auto* p : bb.parameters()) vp::init::normal(*p, 0.3, rng);
  vp::prompted_vit<double> derived(vp::vit<double>(bb), vp::genotype::uniform("concat", 2), {.prompts = 3, .classes = 3});
  CHECK(derived.op_parameters(0, 0)[0].rows() == 3);
  vp::image_batch<double> x(2, 3, 28, 28);
  x.pixels.setRandom();
  // with zero prompts at every position but the one concat uses, the result equals inserting them by hand
  vp::tape<double> t;
  const vp::matrix<double> got = derived.logits(t, x).value();
  auto manual = [&](vp::index at) -> vp::matrix<double> {  // a copy: the tape dies with the lambda
    vp::tape<double> u;
    auto feats = derived.backbone().features(u, x, [&](vp::index l, vp::vit_block<double>& b, const vp::var<double>& h,
                                                       vp::index batch) {
      const auto& Pl = derived.op_parameters(l, 0)[0];
      return vp::remove_rows(b.forward(u, vp::insert_rows(h, u.constant(Pl.value()), batch, at), batch), batch, at,
                             Pl.rows());
    });
    return vp::linear(feats, u.constant(derived.head().weight.value()), u.constant(derived.head().bias.value())).value();
  };
  CHECK((got - manual(3)).norm() < 1e-12);
  // concat's rows sit after cls and both registers (attention alone cannot tell positions apart, so look)
  vp::op_params<double> op;
  op.set_prefix_tokens(c.prefix_tokens());
  vp::matrix<double> seq = vp::matrix<double>::Zero(7, 16);
  for (vp::index r = 0; r < 7; ++r) seq.row(r).setConstant(static_cast<double>(r));
  vp::tape<double> v;
  op.push("P", v.constant(vp::matrix<double>::Constant(3, 16, -1.0)));
  const vp::matrix<double> pre = vp::fusion_traits<vp::concat>::pre(v.constant(seq), op, 1).value();
  REQUIRE(pre.rows() == 10);
  CHECK(pre.col(0).transpose() == (Eigen::RowVectorXd(10) << 0, 1, 2, -1, -1, -1, 3, 4, 5, 6).finished());
  // every operator's gradient check on this backbone
  vp::prompted_vit<double> search(vp::vit<double>(bb), {.prompts = 2, .classes = 3, .seed = 5});
  for (auto* p : search.weights()) vp::init::normal(*p, 0.2, rng);
  auto params = search.state_parameters();
  const std::vector<int> labels{0, 2};
  auto r = vp::gradcheck<double>([&](vp::tape<double>& u) { return vp::cross_entropy(search.logits(u, x), labels); },
                                 params, {.max_entries = 6});
  INFO(r.worst);
  CHECK(r.passed);
}

TEST_CASE("avg pooling without a class token, QuickGELU, LayerScale and norm_pre pass a gradient check", "[vit][foundation][gradcheck]") {
  vp::vit_config c{8, 3, 4, 8, 2, 2, 16, 3};
  c.class_token = false;
  c.pool = vp::pooling::avg;
  c.final_norm = false;
  c.fc_norm = true;
  c.pre_norm = true;
  c.patch_bias = false;
  c.qkv_bias = false;
  c.layer_scale = true;
  c.act = vp::activation::quick_gelu;
  c.norm_eps = 1e-5;
  vp::vit<double> m(c, 1);
  CHECK(m.find("cls_token") == nullptr);
  CHECK(m.find("fc_norm.weight") != nullptr);
  CHECK(m.find("blocks.1.ls2.gamma") != nullptr);
  CHECK(m.find("blocks.0.attn.qkv.bias") == nullptr);
  vp::init::engine rng(5);
  for (auto* p : m.parameters()) vp::init::normal(*p, 0.3, rng);
  m.unfreeze_all();
  vp::image_batch<double> img(2, 3, 8, 8);
  img.pixels.setRandom();
  const std::vector<int> labels{0, 2};
  auto params = m.parameters();
  auto r = vp::gradcheck<double>([&](vp::tape<double>& t) { return vp::cross_entropy(m.logits(t, img), labels); }, params,
                                 {.max_entries = 8});
  INFO(r.worst);
  CHECK(r.passed);
  // frozen: the fused path gives the same values as the composed one
  vp::tape<double> t1, t2;
  const vp::matrix<double> trainable = m.features(t1, img).value();
  m.freeze_backbone();
  const vp::matrix<double> frozen = m.features(t2, img).value();
  CHECK((trainable - frozen).norm() < 1e-12 * (1 + frozen.norm()));
  // a save and load round trip keeps every variant setting
  const vpdarts_test::temp_dir dir("vpdarts-foundation");
  vp::save_vit(dir / "m.safetensors", m);
  auto back = vp::load_vit<double>(dir / "m.safetensors");
  CHECK(back.config() == m.config());
}

TEST_CASE("a foundation checkpoint that does not fit is refused, naming what", "[vit][foundation][errors]") {
  const std::string dinov2 = timm_dir + "/dinov2/backbone.safetensors";
  CHECK_THROWS_WITH(vp::load_vit<float>(dinov2, {.arch = "vit_small_patch14_dinov"}),
                    Catch::Contains("unknown arch") && Catch::Contains("vit_small_patch14_dinov2"));
  CHECK_THROWS_WITH(vp::load_vit<float>(dinov2, {.image = 100, .heads = 2}), Catch::Contains("not a multiple of the patch 14"));
  CHECK_THROWS_WITH(vp::load_vit<float>(dinov2, {.heads = 2, .arch = "vit_base_patch16_224"}), Catch::Contains("patch 16"));
  CHECK_THROWS_WITH(vp::load_vit<float>(timm_dir + "/plain/backbone.safetensors", {.heads = 2, .arch = "vit_small_patch14_dinov2"}),
                    Catch::Contains("patch 14"));
  // tensors a ViT does not have, a register token of the wrong width, a missing middle block
  const vpdarts_test::temp_dir dir("vpdarts-foundation-bad");
  vp::vit_config c{28, 3, 14, 16, 3, 2, 32, 3};
  c.reg_tokens = 1;
  c.no_embed_class = true;
  vp::vit<float> m(c, 1);
  auto ps = m.parameters();
  vp::parameter<float> extra("blocks.0.attn.q_norm.weight", 1, 16);
  auto with_extra = ps;
  with_extra.push_back(&extra);
  vp::io::save_parameters<float>(dir / "extra.safetensors", with_extra);
  CHECK_THROWS_WITH(vp::load_vit<float>(dir / "extra.safetensors", vp::vit_load_options{}),
                    Catch::Contains("blocks.0.attn.q_norm.weight") && Catch::Contains("does not support"));
  CHECK_NOTHROW(vp::load_vit<float>(dir / "extra.safetensors", vp::vit_load_options{.allow_unexpected = true}));
  std::vector<vp::parameter<float>*> gap;
  for (auto* p : ps)
    if (p->name().rfind("blocks.1.", 0) != 0) gap.push_back(p);
  vp::io::save_parameters<float>(dir / "gap.safetensors", gap);
  CHECK_THROWS_WITH(vp::load_vit<float>(dir / "gap.safetensors", vp::vit_load_options{}),
                    Catch::Contains("block 1 is missing but block 2 is there"));
  vp::parameter<float> wide("reg_token", 1, 17);
  wide.set_shape({1, 1, 17});
  std::vector<vp::parameter<float>*> bad_reg;
  for (auto* p : ps) bad_reg.push_back(p->name() == "reg_token" ? &wide : p);
  vp::io::save_parameters<float>(dir / "reg.safetensors", bad_reg);
  CHECK_THROWS_WITH(vp::load_vit<float>(dir / "reg.safetensors", vp::vit_load_options{}),
                    Catch::Contains("reg_token is (1, 1, 17)"));
  // a pos_embed that is no grid
  vp::parameter<float> odd("pos_embed", 5, 16);
  odd.set_shape({1, 5, 16});
  std::vector<vp::parameter<float>*> bad_pos;
  for (auto* p : ps) bad_pos.push_back(p->name() == "pos_embed" ? &odd : p);
  vp::io::save_parameters<float>(dir / "pos.safetensors", bad_pos);
  CHECK_THROWS_WITH(vp::load_vit<float>(dir / "pos.safetensors", vp::vit_load_options{}),
                    Catch::Contains("pos_embed has 5 rows"));
  // a flag that contradicts the metadata
  vp::save_vit(dir / "m.safetensors", m);
  CHECK_THROWS_WITH(vp::load_vit<float>(dir / "m.safetensors", {.act = vp::activation::quick_gelu}),
                    Catch::Contains("contradicts the file's metadata"));
}
