// precision::bf16 (oneDNN): built with vpdarts::bf16. Where the CPU has
// AVX512-BF16 or AMX, the frozen products are checked against products of the
// bf16-rounded operands in double (to float32 accumulation), against float32
// (to bf16's scale), through every fused op, forward and backward, on the
// PyTorch cross-check vectors, for a single weight conversion and for an
// allocation-free warm step. Where it has neither (or ONEDNN_MAX_CPU_ISA caps
// it, as the ctest bf16_refused does), the refusal is checked instead.
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <nlohmann/json.hpp>

#include "pch.hpp"

namespace vp = vpdarts;
using vpdarts_test::random_parameter;

namespace {

bool bf16_here() {
  const vp::bf16_support s = vp::bf16_supported();
  if (!s.available) WARN("bf16 is not available here, only the refusal is checked: " << s.reason);
  return s.available;
}

/// x rounded to bf16 and back, in double.
vp::matrix<double> rounded(const vp::matrix<float>& x) {
  vp::matrix<double> out(x.rows(), x.cols());
  for (vp::index i = 0; i < x.size(); ++i) out.data()[i] = vp::detail::from_bf16(vp::detail::to_bf16(x.data()[i]));
  return out;
}

double rel(const vp::matrix<double>& a, const vp::matrix<double>& b) { return (a - b).norm() / std::max(b.norm(), 1e-30); }
template <class A, class B>
double relf(const A& a, const B& b) {
  return rel(a.template cast<double>(), b.template cast<double>());
}

}  // namespace

TEST_CASE("bf16 rounding: nearest, ties to even, NaN and infinities kept", "[bf16]") {
  using vp::detail::from_bf16;
  using vp::detail::to_bf16;
  CHECK(from_bf16(to_bf16(1.0f)) == 1.0f);
  CHECK(from_bf16(to_bf16(-2.5f)) == -2.5f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even one (1)
  CHECK(from_bf16(to_bf16(1.0f + std::ldexp(1.0f, -8))) == 1.0f);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6
  CHECK(from_bf16(to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))) == 1.0f + std::ldexp(1.0f, -6));
  CHECK(from_bf16(to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -12))) == 1.0f + std::ldexp(1.0f, -7));
  CHECK(std::isnan(from_bf16(to_bf16(std::nanf("")))));
  CHECK(std::isnan(from_bf16(to_bf16(std::bit_cast<float>(0x7f800001u)))));  // a NaN whose payload would round to inf
  CHECK(from_bf16(to_bf16(INFINITY)) == INFINITY);
  CHECK(from_bf16(to_bf16(-INFINITY)) == -INFINITY);
  CHECK(std::isfinite(from_bf16(to_bf16(3.0e38f))));
  CHECK(std::isinf(from_bf16(to_bf16(std::numeric_limits<float>::max()))));  // rounds up past the largest bf16
}

TEST_CASE("softmax rows with their bf16 copy in the same pass: the values of softmax, then rounding", "[bf16]") {
  // bf16 attention's softmax writes the operand of the next product as it normalises; no CPU feature needed
  const auto seq = GENERATE(vp::index{1}, vp::index{7}, vp::index{197});
  const auto rows = GENERATE(vp::index{3}, vp::index{130});  // 130 rows: jobs of 64 rows and a short one
  CAPTURE(seq, rows);
  const vp::index n = rows * seq;
  const vp::matrix<float> scores = vp::matrix<float>::Random(rows, seq) * 6.0f;
  const float scale = 0.125f;

  vp::matrix<float> want = scores;  // softmax, then rounding
  vp::kernels::eigen::softmax_rows(want.data(), rows, seq, scale);
  std::vector<std::uint16_t> want16(static_cast<std::size_t>(n)), got16(want16.size(), 0xffff);
  vp::detail::to_bf16(want.data(), want16.data(), want16.size());

  vp::matrix<float> kept = scores;
  vp::kernels::eigen::softmax_rows(kept.data(), rows, seq, scale, got16.data(), true);
  CHECK(kept == want);
  CHECK(got16 == want16);
  vp::matrix<float> only = scores;
  std::fill(got16.begin(), got16.end(), std::uint16_t{0xffff});
  vp::kernels::eigen::softmax_rows(only.data(), rows, seq, scale, got16.data(), false);
  CHECK(got16 == want16);

  // backward: g = p * (g - <g, p>) * scale, then rounding
  const vp::matrix<float> g = vp::matrix<float>::Random(rows, seq);
  vp::matrix<float> dwant = g;
  vp::kernels::eigen::softmax_backward_rows(dwant.data(), want.data(), rows, seq, scale);
  vp::detail::to_bf16(dwant.data(), want16.data(), want16.size());
  std::fill(got16.begin(), got16.end(), std::uint16_t{0xffff});
  vp::kernels::eigen::softmax_backward_rows(g.data(), want.data(), rows, seq, scale, got16.data());
  CHECK(got16 == want16);
}

TEST_CASE("bf16 is refused clearly where it is not available; a tape keeps its own precision", "[bf16]") {
  const vp::bf16_support s = vp::bf16_supported();
  vp::tape<float> plain;
  CHECK(plain.config().products == vp::precision::fp32);  // the default
  if (s.available) {
    CHECK((s.kernel == "AMX" || s.kernel == "AVX512-BF16"));
    vp::tape<float> t({.products = vp::precision::bf16});
    CHECK(t.config().products == vp::precision::bf16);
    CHECK(plain.config().products == vp::precision::fp32);  // one tape's setting is not another's
    CHECK(t.config().describe() == "bf16");
  } else {
    CHECK(s.kernel.empty());
    CHECK_FALSE(s.reason.empty());
    CHECK_THROWS_WITH(vp::tape<float>({.products = vp::precision::bf16}),
                      Catch::Contains("bf16 is not available") && Catch::Contains(s.reason));
    CHECK_THROWS_AS(plain.configure({.products = vp::precision::bf16}), vp::config_error);
    CHECK(plain.config().products == vp::precision::fp32);  // a refused setting leaves the tape as it was
  }
}

TEST_CASE("bf16 linear: the product of the rounded operands, forward and input gradient", "[bf16]") {
  if (!bf16_here()) return;
  // odd sizes: no kernel's block size divides them. A short product reads the weight packed for the
  // matrix unit, a long one (from packed_weight_rows rows) the plain copy its input gradient reads
  const vp::index rows = GENERATE(vp::index{37}, vp::kernels::onednn::packed_weight_rows + 13), in = 53, out = 29;
  const bool packed = rows < vp::kernels::onednn::packed_weight_rows;
  CAPTURE(rows);
  auto w = random_parameter<float>("w", out, in, 1, 0.2);
  auto b = random_parameter<float>("b", 1, out, 2, 0.1);
  auto xp = random_parameter<float>("x", rows, in, 3);
  w.freeze();
  b.freeze();
  const vp::matrix<float> g = vpdarts_test::random_matrix<float>(rows, out, 4);
  auto run = [&](vp::precision p, vp::matrix<float>& dx) {
    vp::tape<float> t({.products = p});
    xp.zero_grad();
    auto y = vp::linear(t.leaf(xp), t.leaf(w), t.leaf(b));
    vp::matrix<float> value = y.value();
    t.backward(vp::sum(vp::mul(y, t.constant(g))));
    dx = xp.grad();
    return value;
  };
  vp::matrix<float> dx16, dx32;
  const auto conversions = vp::detail::bf16_weight_conversions().load();
  const vp::matrix<float> y16 = run(vp::precision::bf16, dx16), y32 = run(vp::precision::fp32, dx32);
  // the bf16 copies made of W: packed and plain, or the plain one alone
  CHECK(vp::detail::bf16_weight_conversions().load() - conversions == (packed ? 2 : 1));
  // forward: round(x) round(W)^T + b, accumulated in float32
  const vp::matrix<double> want = rounded(xp.value()) * rounded(w.value()).transpose() +
                                  b.value().cast<double>().replicate(rows, 1);
  CHECK(relf(y16, want) < 1e-6);
  CHECK(relf(y32, want) > 1e-4);  // float32 is not that: the test tells the two apart
  CHECK(relf(y16, y32) < 1e-2);
  // backward: round(g) round(W)
  const vp::matrix<double> want_dx = rounded(g) * rounded(w.value());
  CHECK(relf(dx16, want_dx) < 1e-6);
  CHECK(relf(dx16, dx32) < 1e-2);
}

TEST_CASE("bf16 input gradient through an activation: (g W) * derivative, rounded to bf16 once", "[bf16]") {
  if (!bf16_here()) return;
  // odd sizes: no kernel's block size divides them
  const vp::index rows = 37, in = 53, out = 29;
  auto w = random_parameter<float>("w", out, in, 1, 0.2);
  w.freeze();
  const vp::matrix<float> g = vpdarts_test::random_matrix<float>(rows, out, 2);
  const vp::matrix<float> d = vpdarts_test::random_matrix<float>(rows, in, 3);
  std::vector<std::uint16_t> d16(static_cast<std::size_t>(rows * in));
  for (vp::index i = 0; i < d.size(); ++i) d16[static_cast<std::size_t>(i)] = vp::detail::to_bf16(d.data()[i]);
  const vp::matrix<double> factor = rounded(d);
  // bf16: the product of the rounded operands times the factor; fp32 (the Eigen product, then the
  // multiplication): the product of the values themselves times the factor; each rounded once
  for (const vp::precision p : {vp::precision::bf16, vp::precision::fp32}) {
    vp::tape<float> t({.products = p, .fp32_products = vp::fp32_gemm::eigen});
    auto wv = t.leaf(w);
    std::vector<std::uint16_t> got16(static_cast<std::size_t>(rows * in));
    const auto products = vp::detail::bf16_products().load();
    t.backend().times_weight_through(vp::detail::weight_of(t, wv.id()), vp::kernels::rows<float>::of(g.data(), rows, out),
                                     d16.data(), got16.data());
    CHECK(vp::detail::bf16_products().load() - products == (p == vp::precision::bf16 ? 1u : 0u));
    const vp::matrix<double> want =
        (p == vp::precision::bf16 ? vp::matrix<double>(rounded(g) * rounded(w.value()))
                                  : vp::matrix<double>(g.cast<double>() * w.value().cast<double>()))
            .cwiseProduct(factor);
    double worst = 0;
    for (vp::index i = 0; i < want.size(); ++i) {
      const double got = vp::detail::from_bf16(got16[static_cast<std::size_t>(i)]), x = want.data()[i];
      worst = std::max(worst, std::abs(got - x) / std::max(std::abs(x), 1e-3));
    }
    CAPTURE(static_cast<int>(p));
    CHECK(worst <= 1.0 / 256);  // half a bf16 step (2^-9), plus the float32 sums' rounding
  }
}

TEST_CASE("bf16 leaves trainable weights, double models and fp32 mode exact", "[bf16]") {
  if (!bf16_here()) return;
  const vp::index rows = 9, in = 17, out = 5;
  SECTION("a trainable weight stays float32") {
    auto w = random_parameter<float>("w", out, in, 1);
    auto x = random_parameter<float>("x", rows, in, 2);
    vp::tape<float> t;
    vp::matrix<float> y32 = vp::linear(t.constant(x.value()), t.leaf(w)).value();
    t.configure({.products = vp::precision::bf16});
    t.reset();
    vp::matrix<float> y16 = vp::linear(t.constant(x.value()), t.leaf(w)).value();
    CHECK((y16 - y32).norm() == 0);
  }
  SECTION("a double model is never rounded") {
    auto w = random_parameter<double>("w", out, in, 1);
    w.freeze();
    auto x = random_parameter<double>("x", rows, in, 2);
    vp::tape<double> t;
    vp::matrix<double> y64 = vp::linear(t.constant(x.value()), t.leaf(w)).value();
    t.configure({.products = vp::precision::bf16});
    t.reset();
    CHECK((vp::linear(t.constant(x.value()), t.leaf(w)).value() - y64).norm() == 0);
  }
}

TEST_CASE("bf16 through the fused block ops: values and input gradients near float32", "[bf16]") {
  if (!bf16_here()) return;
  // 33 rows: the forward products read their weights packed for the matrix unit; 275 rows: the plain
  // copies the backward products read, the epilogue (bias, LayerScale, residual) in the kernel either way
  const vp::index batch = GENERATE(vp::index{3}, vp::index{25}), seq = 11, dim = 24, heads = 4, hidden = 40;
  const bool packed = batch * seq < vp::kernels::onednn::packed_weight_rows;
  CAPTURE(batch);
  auto x = random_parameter<float>("x", batch * seq, dim, 1);
  auto gamma = random_parameter<float>("g", 1, dim, 2, 0.1, 1.0), beta = random_parameter<float>("b", 1, dim, 3, 0.1);
  auto wqkv = random_parameter<float>("qkv", 3 * dim, dim, 4, 0.2), bqkv = random_parameter<float>("bq", 1, 3 * dim, 5, 0.1);
  auto wp = random_parameter<float>("proj", dim, dim, 6, 0.2), bp = random_parameter<float>("bp", 1, dim, 7, 0.1);
  auto w1 = random_parameter<float>("fc1", hidden, dim, 8, 0.2), b1 = random_parameter<float>("b1", 1, hidden, 9, 0.1);
  auto w2 = random_parameter<float>("fc2", dim, hidden, 10, 0.2), b2 = random_parameter<float>("b2", 1, dim, 11, 0.1);
  auto ls = random_parameter<float>("ls", 1, dim, 12, 0.1, 1.0);
  for (auto* p : {&gamma, &beta, &wqkv, &bqkv, &wp, &bp, &w1, &b1, &w2, &b2, &ls}) p->freeze();
  // the MLP composed of layer_norm_linear and activation_linear, or as one node that recomputes or keeps its hidden layer
  enum class mlp_form { composed, recompute, keep };
  // the attention branch composed of layer_norm_linear and attention_linear, or as one node
  // (layer_norm_attention, vit_block's form) that keeps qkv in bf16
  auto block = [&](vp::precision p, vp::matrix<float>& dx, mlp_form form = mlp_form::composed,
                   bool attention_node = false, vp::activation act = vp::activation::gelu,
                   vp::attention_memory att = vp::attention_memory::keep) {
    vp::tape<float> t({.products = p});
    x.zero_grad();
    auto in = t.leaf(x);
    auto h = attention_node
                 ? vp::layer_norm_attention(in, t.leaf(gamma), t.leaf(beta), 1e-6f, t.leaf(wqkv), t.leaf(bqkv), batch,
                                            heads, t.leaf(wp), t.leaf(bp), t.leaf(ls), in, att)
                 : vp::attention_linear(vp::layer_norm_linear(in, t.leaf(gamma), t.leaf(beta), 1e-6f, t.leaf(wqkv),
                                                              t.leaf(bqkv)),
                                        batch, heads, t.leaf(wp), t.leaf(bp), t.leaf(ls), in);
    auto y = form != mlp_form::composed
                 ? vp::layer_norm_mlp(h, t.leaf(gamma), t.leaf(beta), 1e-6f, t.leaf(w1), t.leaf(b1), act,
                                      t.leaf(w2), t.leaf(b2), t.leaf(ls), h,
                                      form == mlp_form::keep ? vp::mlp_memory::keep : vp::mlp_memory::recompute)
                       : vp::activation_linear(vp::layer_norm_linear(h, t.leaf(gamma), t.leaf(beta), 1e-6f, t.leaf(w1),
                                                                     t.leaf(b1)),
                                               act, t.leaf(w2), t.leaf(b2), t.leaf(ls), h);
    vp::matrix<float> value = y.value();
    t.backward(vp::sum(vp::mul(y, y)));
    dx = x.grad();
    return value;
  };
  vp::matrix<float> dx16, dx32;
  const auto before = vp::detail::bf16_weight_conversions().load();
  const auto products = vp::detail::bf16_products().load();
  const vp::matrix<float> y16 = block(vp::precision::bf16, dx16);
  // qkv, proj, fc1, fc2: each once laid out for the forward product (a short one), once plain
  CHECK(vp::detail::bf16_weight_conversions().load() - before == (packed ? 8 : 4));
  // forward: qkv, Q K^T, P V, proj, fc1, fc2; backward: fc2, fc1, proj, Q K^T again (the probabilities
  // are not kept), the four of attention's gradient, qkv
  CHECK(vp::detail::bf16_products().load() - products == 15);
  const vp::matrix<float> y32 = block(vp::precision::fp32, dx32);
  CHECK(relf(y16, y32) < 1e-2);
  CHECK(relf(y16, y32) > 1e-6);  // the bf16 path did run
  CHECK(relf(dx16, dx32) < 2e-2);
  CHECK(dx16.allFinite());
  // the MLP as one node (vit_block's form): backward runs fc1's product once more, in bf16 as well
  vp::matrix<float> dm16, dm32;
  const auto products_mlp = vp::detail::bf16_products().load();
  const vp::matrix<float> m16 = block(vp::precision::bf16, dm16, mlp_form::recompute);
  CHECK(vp::detail::bf16_products().load() - products_mlp == 16);
  const vp::matrix<float> m32 = block(vp::precision::fp32, dm32, mlp_form::recompute);
  CHECK((m32 - y32).norm() <= 1e-5f * y32.norm());  // float32: the same function as the composition
  CHECK((dm32 - dx32).norm() <= 1e-5f * dx32.norm());
  CHECK(relf(m16, m32) < 1e-2);
  CHECK(relf(dm16, dm32) < 2e-2);
  CHECK(dm16.allFinite());
  // one node keeping its hidden layer (vit_block's default), in bf16 under bf16: no product more than
  // the composition; values as the composition's (the same products), gradients within bf16 rounding
  vp::matrix<float> dk16, dk32;
  const auto products_keep = vp::detail::bf16_products().load();
  const vp::matrix<float> k16 = block(vp::precision::bf16, dk16, mlp_form::keep);
  CHECK(vp::detail::bf16_products().load() - products_keep == 15);
  const vp::matrix<float> k32 = block(vp::precision::fp32, dk32, mlp_form::keep);
  CHECK((k32 - y32).norm() <= 1e-5f * y32.norm());
  CHECK((dk32 - dx32).norm() <= 1e-5f * dx32.norm());
  CHECK((k16 - y16).norm() <= 1e-5f * y16.norm());
  CHECK(relf(dk16, dk32) < 2e-2);
  CHECK(relf(dk16, dx16) > 0);  // the derivative read the bf16 hidden layer
  CHECK(dk16.allFinite());
  // the attention branch as one node: the same products on the same bf16 operands (qkv is rounded
  // to bf16 once and kept), so the composition's values and gradients; float32 the same function
  vp::matrix<float> da16, da32;
  const auto products_att = vp::detail::bf16_products().load();
  const vp::matrix<float> a16 = block(vp::precision::bf16, da16, mlp_form::keep, true);
  CHECK(vp::detail::bf16_products().load() - products_att == 15);
  CHECK((a16 - k16).norm() <= 1e-6f * k16.norm());
  CHECK((da16 - dk16).norm() <= 1e-5f * dk16.norm());
  const vp::matrix<float> a32 = block(vp::precision::fp32, da32, mlp_form::keep, true);
  CHECK((a32 - y32).norm() <= 1e-5f * y32.norm());
  CHECK((da32 - dx32).norm() <= 1e-5f * dx32.norm());
  CHECK(da16.allFinite());
  // the attention node computing qkv again in backward: one product more (qkv), rounded as the
  // forward rounded it, so the same values and gradients as keeping it
  vp::matrix<float> dr16, dr32;
  const auto products_again = vp::detail::bf16_products().load();
  const vp::matrix<float> r16 =
      block(vp::precision::bf16, dr16, mlp_form::keep, true, vp::activation::gelu, vp::attention_memory::recompute);
  CHECK(vp::detail::bf16_products().load() - products_again == 16);
  CHECK((r16 - a16).norm() <= 1e-6f * a16.norm());
  CHECK((dr16 - da16).norm() <= 1e-6f * da16.norm());
  const vp::matrix<float> r32 =
      block(vp::precision::fp32, dr32, mlp_form::keep, true, vp::activation::gelu, vp::attention_memory::recompute);
  CHECK((r32 - a32).norm() <= 1e-6f * a32.norm());
  CHECK((dr32 - da32).norm() <= 1e-6f * da32.norm());
  CHECK(dr16.allFinite());
  // QuickGELU (CLIP's blocks) through the same paths: vit_block's form (both branches one node each,
  // the activation and its derivative writing bf16) against the composition and against float32
  vp::matrix<float> dq16, dqc16, dq32, dqc32;
  const vp::matrix<float> q16 = block(vp::precision::bf16, dq16, mlp_form::keep, true, vp::activation::quick_gelu);
  const vp::matrix<float> qc16 = block(vp::precision::bf16, dqc16, mlp_form::composed, false, vp::activation::quick_gelu);
  const vp::matrix<float> q32 = block(vp::precision::fp32, dq32, mlp_form::keep, true, vp::activation::quick_gelu);
  const vp::matrix<float> qc32 = block(vp::precision::fp32, dqc32, mlp_form::composed, false, vp::activation::quick_gelu);
  CHECK((q32 - qc32).norm() <= 1e-5f * qc32.norm());
  CHECK((dq32 - dqc32).norm() <= 1e-5f * dqc32.norm());
  CHECK((q16 - qc16).norm() <= 1e-5f * qc16.norm());
  CHECK(relf(q16, q32) < 1e-2);
  CHECK(relf(q16, q32) > 1e-6);
  CHECK(relf(dq16, dq32) < 2e-2);
  CHECK(relf(q32, y32) > 1e-3);  // QuickGELU did run, not GELU
  CHECK(dq16.allFinite());
}

namespace {

struct torch_small {
  vp::prompted_vit<float> model;
  vp::image_batch<float> images;
  std::vector<int> labels;
};

torch_small load_torch_small() {
  const std::string dir = VPDARTS_TEST_FIXTURES "/torch_small";
  std::ifstream in(dir + "/expected.json");
  REQUIRE(in);
  const nlohmann::json cfg = nlohmann::json::parse(in)["config"];
  auto backbone = vp::load_vit<float>(dir + "/backbone.safetensors", cfg["heads"], cfg["classes"]);
  vp::prompted_vit<float> model(std::move(backbone), {.prompts = cfg["prompts"]});
  model.load_state(dir + "/fusion.safetensors");
  auto input = vp::io::safetensors::read(dir + "/input.safetensors");
  const auto& img = input.at("images");
  vp::image_batch<float> images(img.shape[0], img.shape[1], img.shape[2], img.shape[3]);
  input.copy_to<float>(img, std::span<float>(images.pixels.data(), static_cast<std::size_t>(images.pixels.size())));
  std::vector<int> labels;
  for (auto v : input.integers("labels")) labels.push_back(static_cast<int>(v));
  return {std::move(model), std::move(images), std::move(labels)};
}

/// One forward and backward pass of the cross-check model on a tape configured as `e`: the logits,
/// and in `grads` alpha's gradient then every weight's.
vp::matrix<float> cross_check_pass(torch_small& c, const vp::execution_config& e, std::vector<vp::matrix<float>>& grads) {
  for (auto* q : c.model.weights()) q->zero_grad();
  c.model.alpha().zero_grad();
  vp::tape<float> t(e);
  auto logits = c.model.logits(t, c.images);
  t.backward(vp::cross_entropy(logits, c.labels));
  grads.clear();
  grads.push_back(c.model.alpha().grad());
  for (auto* q : c.model.weights()) grads.push_back(q->grad());
  return logits.value();
}

}  // namespace

TEST_CASE("bf16 search model on the PyTorch cross-check vectors: logits and every gradient near float32",
          "[bf16]") {
  if (!bf16_here()) return;
  torch_small c = load_torch_small();
  std::vector<vp::matrix<float>> g16, g32;
  const vp::matrix<float> l16 = cross_check_pass(c, {.products = vp::precision::bf16}, g16),
                          l32 = cross_check_pass(c, {.products = vp::precision::fp32}, g32);
  // bf16 keeps 8 significant bits (relative rounding 2^-9 per operand): a product of
  // unit-scale values errs by ~2^-9 / sqrt(k) relative per term, and a depth of blocks
  // adds a few such errors; 1e-2 of the logits' scale leaves room for that and no more.
  INFO("logits bf16 vs fp32: " << relf(l16, l32));
  CHECK(relf(l16, l32) < 1e-2);
  CHECK(relf(l16, l32) > 0);
  REQUIRE(g16.size() == g32.size());
  const auto w = c.model.weights();
  for (std::size_t i = 0; i < g16.size(); ++i) {
    INFO("gradient of " << (i == 0 ? std::string("alpha") : w[i - 1]->name()));
    CHECK(g16[i].norm() > 0);  // the gradient reaches it
    CHECK(relf(g16[i], g32[i]) < 5e-2);
  }
}

TEST_CASE("bf16 search step: weights converted once, warm steps allocate per product only, a changed weight is seen",
          "[bf16]") {
  if (!bf16_here()) return;
  torch_small c = load_torch_small();
  vp::bilevel_options o;
  o.w.lr = 0.01;
  o.execution.fp32_products = vp::fp32_gemm::eigen;
  vp::bilevel_optimizer<float, vp::default_ops> d32(c.model, o);  // the float32 path of the same model
  o.execution.products = vp::precision::bf16;
  vp::bilevel_optimizer<float, vp::default_ops> d16(c.model, o);
  // the same images twice over: a batch of twice the rows
  std::vector<vp::index> twice;
  for (int k = 0; k < 2; ++k)
    for (vp::index i = 0; i < c.images.size(); ++i) twice.push_back(i);
  const vp::image_batch<float> images2 = c.images.select(twice);
  std::vector<int> labels2 = c.labels;
  labels2.insert(labels2.end(), c.labels.begin(), c.labels.end());
  // allocations of three warm steps, and the bf16 products they ran
  const auto warm = [&](const vp::image_batch<float>& x, const std::vector<int>& y,
                        vp::bilevel_optimizer<float, vp::default_ops>& d) {
    d.step(x, y, x, y);
    d.step(x, y, x, y);
    const auto products = vp::detail::bf16_products().load();
    const std::size_t before = vpdarts_test::allocations();
    for (int i = 0; i < 3; ++i) d.step(x, y, x, y);
    return std::pair{vpdarts_test::allocations() - before, vp::detail::bf16_products().load() - products};
  };
  CHECK(warm(c.images, c.labels, d32).first == 0);  // the float32 path on Eigen: nothing at all
  CHECK(warm(images2, labels2, d32).first == 0);
  const auto [allocs1, products1] = warm(c.images, c.labels, d16);
  const auto conversions = vp::detail::bf16_weight_conversions().load();
  const auto [allocs2, products2] = warm(images2, labels2, d16);
  INFO(allocs1 << " and " << allocs2 << " allocations in 3 warm steps of " << products1 << " bf16 products each");
  CHECK(products1 > 0);
  CHECK(products2 == products1);
  CHECK(vp::detail::bf16_weight_conversions().load() == conversions);  // no weight converted again
  if (vpdarts_test::counting_allocations()) {
    // vpdarts allocates nothing in a warm step; oneDNN 2.6's execute makes a few small allocations
    // per call (its argument map), whatever the size: the count does not grow with the batch
    CHECK(allocs2 == allocs1);
    CHECK(allocs1 <= 32 * products1);
  }
  // a frozen weight written through value() is converted again at its next use
  vp::tape<float> t({.products = vp::precision::bf16});
  vp::no_grad<float> guard(t);
  const vp::matrix<float> a = c.model.logits(t, c.images).value();
  const auto before = vp::detail::bf16_weight_conversions().load();
  c.model.backbone().blocks[0].mlp.fc1.weight.value() *= 2.0f;
  t.reset();
  const vp::matrix<float> b = c.model.logits(t, c.images).value();
  CHECK(vp::detail::bf16_weight_conversions().load() == before + 1);
  CHECK((a - b).norm() > 0);
}

TEST_CASE("bf16 inference (no gradient, images in groups) gives the values of a recorded pass", "[bf16]") {
  if (!bf16_here()) return;
  torch_small c = load_torch_small();
  vp::tape<float> t({.products = vp::precision::bf16});
  const vp::matrix<float> recorded = c.model.logits(t, c.images).value();
  vp::tape<float> u({.products = vp::precision::bf16});
  vp::no_grad<float> guard(u);
  const vp::matrix<float> quiet = c.model.logits(u, c.images, vp::grad_target::none).value();
  CHECK(relf(quiet, recorded) < 1e-5);
}

// ---- float32 products on oneDNN (fp32_gemm): any CPU oneDNN runs on, so checked everywhere

TEST_CASE("fp32 GEMM choice: auto is oneDNN in this build; each tape keeps its own", "[onednn]") {
  vp::tape<float> automatic;
  CHECK(automatic.config().fp32_products == vp::fp32_gemm::automatic);
  const vp::fp32_gemm_choice c = vp::fp32_gemm_automatic();
  CHECK(c.gemm == vp::fp32_gemm::onednn);
  CHECK(automatic.config().fp32_engine() == vp::fp32_gemm::onednn);
  const std::string isa = vp::onednn_cpu_isa();
  CHECK((isa == "AVX-512" || isa == "AVX2" || isa == "SSE4.1"));
  CHECK_THAT(c.reason, Catch::Contains(isa));
  if (std::getenv("ONEDNN_MAX_CPU_ISA") != nullptr && std::string(std::getenv("ONEDNN_MAX_CPU_ISA")) == "AVX2")
    CHECK(isa != "AVX-512");  // oneDNN's cap is honoured
  vp::tape<float> eigen({.fp32_products = vp::fp32_gemm::eigen});
  CHECK(eigen.config().fp32_engine() == vp::fp32_gemm::eigen);
  CHECK(automatic.config().fp32_engine() == vp::fp32_gemm::onednn);
  CHECK(eigen.config().describe() == "fp32 (eigen)");
  CHECK(std::string(vp::to_string(vp::fp32_gemm::onednn)) == "onednn");
}

TEST_CASE("fp32 on oneDNN: a frozen linear layer's product and input gradient, to float32 rounding", "[onednn]") {
  // odd sizes: no kernel's block size divides them; the second weight is large enough for its input
  // gradient to run on oneDNN's GEMM rather than its matmul (kernels::onednn::gemm_weight_values)
  const auto shape = GENERATE(std::array<vp::index, 3>{37, 53, 29}, std::array<vp::index, 3>{41, 1031, 1033});
  const vp::index rows = shape[0], in = shape[1], out = shape[2];
  const bool large = in > 100;
  CAPTURE(rows, in, out);
  CHECK((in * out >= vp::kernels::onednn::gemm_weight_values) == large);
  auto w = random_parameter<float>("w", out, in, 1, 0.2);
  auto b = random_parameter<float>("b", 1, out, 2, 0.1);
  auto xp = random_parameter<float>("x", rows, in, 3);
  w.freeze();
  b.freeze();
  const vp::matrix<float> g = vpdarts_test::random_matrix<float>(rows, out, 4);
  // x feeds two layers, so backward's second input-gradient product adds to the first's
  const auto loss = [&](vp::tape<float>& t, const vp::var<float>& x) {
    auto y = vp::add(vp::linear(x, t.leaf(w), t.leaf(b)), vp::linear(x, t.leaf(w)));
    return std::pair{y, vp::sum(vp::mul(y, t.constant(g)))};
  };
  auto run = [&](vp::fp32_gemm gemm, vp::matrix<float>& dx, std::uint64_t& products) {
    const auto before = vp::detail::onednn_f32_products().load();
    vp::tape<float> t({.fp32_products = gemm});
    xp.zero_grad();
    auto [y, l] = loss(t, t.leaf(xp));
    vp::matrix<float> value = y.value();
    t.backward(l);
    dx = xp.grad();
    products = vp::detail::onednn_f32_products().load() - before;
    return value;
  };
  vp::matrix<float> dx_dnnl, dx_eigen;
  std::uint64_t n_dnnl = 0, n_eigen = 0;
  const vp::matrix<float> y_dnnl = run(vp::fp32_gemm::onednn, dx_dnnl, n_dnnl);
  const vp::matrix<float> y_eigen = run(vp::fp32_gemm::eigen, dx_eigen, n_eigen);
  CHECK(n_dnnl == 4);  // two forward products, two input-gradient products
  CHECK(n_eigen == 0);
  const vp::matrix<double> want = 2.0 * xp.value().cast<double>() * w.value().cast<double>().transpose() +
                                  b.value().cast<double>().replicate(rows, 1);
  const vp::matrix<double> want_dx = 2.0 * g.cast<double>() * w.value().cast<double>();
  // float32 sums of 53 (29) terms: a few units of 2^-24 relative; of 1031 (1033) terms, ten times that
  const double tol = large ? 1e-5 : 1e-6;
  CHECK(relf(y_dnnl, want) < tol);
  CHECK(relf(y_eigen, want) < tol);
  CHECK(relf(dx_dnnl, want_dx) < tol);
  CHECK(relf(dx_eigen, want_dx) < tol);
  SECTION("finite differences of the loss agree with the input gradient") {
    // the loss is linear in x, so a central difference with a large step is exact up to rounding
    const float h = 0.25f;
    for (const vp::index k : {vp::index{0}, vp::index{rows * in / 2 + 3}, rows * in - 1}) {
      const auto at = [&](float delta) {
        vp::matrix<float> x = xp.value();
        x.data()[k] += delta;
        vp::tape<float> t({.fp32_products = vp::fp32_gemm::onednn});
        return static_cast<double>(loss(t, t.constant(x)).second.value()(0, 0));
      };
      const double fd = (at(h) - at(-h)) / (2.0 * h);
      INFO("element " << k << ": finite difference " << fd << ", gradient " << dx_dnnl.data()[k]);
      CHECK(std::abs(fd - dx_dnnl.data()[k]) <= 1e-3 * (1.0 + std::abs(fd)));
    }
  }
  SECTION("a trainable weight and a double model stay on Eigen") {
    auto wt = random_parameter<float>("wt", out, in, 5);
    vp::tape<float> t({.fp32_products = vp::fp32_gemm::onednn});
    const auto before = vp::detail::onednn_f32_products().load();
    const vp::matrix<float> y = vp::linear(t.constant(xp.value()), t.leaf(wt)).value();
    CHECK(vp::detail::onednn_f32_products().load() == before);
    const vp::matrix<float> eigen_y = xp.value() * wt.value().transpose();
    if (!large) CHECK((y - eigen_y).norm() == 0);
    else CHECK(relf(y, eigen_y) < tol);  // Eigen splits a large product over the threads, in another order
    auto wd = random_parameter<double>("wd", out, in, 6);
    wd.freeze();
    vp::tape<double> td({.fp32_products = vp::fp32_gemm::onednn});
    vp::linear(td.constant(xp.value().cast<double>()), td.leaf(wd));
    CHECK(vp::detail::onednn_f32_products().load() == before);
  }
}

TEST_CASE("fp32 on oneDNN: the search model on the PyTorch cross-check vectors matches Eigen's, and warm steps "
          "allocate per product only", "[onednn]") {
  torch_small c = load_torch_small();
  std::vector<vp::matrix<float>> gd, ge;
  const auto before = vp::detail::onednn_f32_products().load();
  const vp::matrix<float> ld = cross_check_pass(c, {.fp32_products = vp::fp32_gemm::onednn}, gd);
  CHECK(vp::detail::onednn_f32_products().load() > before);
  const vp::matrix<float> le = cross_check_pass(c, {.fp32_products = vp::fp32_gemm::eigen}, ge);
  // two float32 GEMMs that sum in another order: differences of float32 rounding, through the depth
  INFO("logits oneDNN vs Eigen: " << relf(ld, le));
  CHECK(relf(ld, le) < 1e-5);
  REQUIRE(gd.size() == ge.size());
  const auto w = c.model.weights();
  for (std::size_t i = 0; i < gd.size(); ++i) {
    INFO("gradient of " << (i == 0 ? std::string("alpha") : w[i - 1]->name()));
    CHECK(gd[i].norm() > 0);
    CHECK(relf(gd[i], ge[i]) < 1e-4);
  }
  vp::bilevel_options o;
  o.w.lr = 0.01;
  o.execution.fp32_products = vp::fp32_gemm::onednn;
  vp::bilevel_optimizer<float, vp::default_ops> d(c.model, o);
  d.step(c.images, c.labels, c.images, c.labels);
  d.step(c.images, c.labels, c.images, c.labels);
  const auto products = vp::detail::onednn_f32_products().load();
  const std::size_t allocs = vpdarts_test::allocations();
  for (int i = 0; i < 3; ++i) d.step(c.images, c.labels, c.images, c.labels);
  const auto n = vp::detail::onednn_f32_products().load() - products;
  CHECK(n > 0);
  if (vpdarts_test::counting_allocations()) {
    // as for bf16: oneDNN 2.6's execute allocates a little per call, whatever the size
    INFO((vpdarts_test::allocations() - allocs) << " allocations in 3 warm steps of " << n << " products");
    CHECK(vpdarts_test::allocations() - allocs <= 32 * n);
  }
}

TEST_CASE("two tapes with different configurations run side by side on two threads, each as its own says",
          "[bf16][onednn]") {
  torch_small c = load_torch_small();
  std::vector<vp::execution_config> configs{{.fp32_products = vp::fp32_gemm::eigen},
                                            {.fp32_products = vp::fp32_gemm::onednn}};
  if (bf16_here()) configs.push_back({.products = vp::precision::bf16, .mlp = vp::mlp_memory::recompute});
  const auto logits = [&](const vp::execution_config& e) {
    vp::tape<float> t(e);
    vp::no_grad<float> guard(t);
    return vp::matrix<float>(c.model.logits(t, c.images, vp::grad_target::none).value());
  };
  std::vector<vp::matrix<float>> alone;
  for (const auto& e : configs) alone.push_back(logits(e));
  for (std::size_t i = 1; i < alone.size(); ++i) CHECK((alone[i] - alone[0]).norm() > 0);  // the settings differ
  for (std::size_t a = 0; a < configs.size(); ++a)
    for (std::size_t b = a + 1; b < configs.size(); ++b) {
      std::vector<vp::matrix<float>> got(2);
      const auto run = [&](std::size_t which, std::size_t slot) {
        for (int k = 0; k < 4; ++k) got[slot] = logits(configs[which]);
      };
      std::thread first(run, a, 0), second(run, b, 1);
      first.join();
      second.join();
      INFO("configurations " << configs[a].describe() << " and " << configs[b].describe());
      CHECK((got[0] - alone[a]).norm() == 0);
      CHECK((got[1] - alone[b]).norm() == 0);
    }
}
