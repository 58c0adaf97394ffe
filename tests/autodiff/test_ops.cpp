// Every op: forward value against a plain reference, a finite-difference
// gradient check in double (relative error < 1e-6), and its shape errors.
#include "pch.hpp"

namespace vp = vpdarts;
using vpdarts_test::random_matrix;
using vpdarts_test::random_parameter;
using P = vp::parameter<double>;
using T = vp::tape<double>;
using V = vp::var<double>;
using M = vp::matrix<double>;

namespace {

void require_gradcheck(const vp::gradcheck_result& r) {
  INFO("worst entry: " << r.worst << " (error " << r.max_error << ", " << r.checked << " entries)");
  REQUIRE(r.checked > 0);
  REQUIRE(r.passed);
  REQUIRE(r.max_error < 1e-6);
}

// Plain attention for one sequence: qkv is T x 3D.
M reference_attention(const M& qkv, vp::index heads) {
  const vp::index d = qkv.cols() / 3, dh = d / heads;
  M out(qkv.rows(), d);
  for (vp::index h = 0; h < heads; ++h) {
    M q = qkv.middleCols(h * dh, dh), k = qkv.middleCols(d + h * dh, dh), v = qkv.middleCols(2 * d + h * dh, dh);
    M s = q * k.transpose() / std::sqrt(double(dh));
    for (vp::index i = 0; i < s.rows(); ++i) {
      s.row(i).array() = (s.row(i).array() - s.row(i).maxCoeff()).exp();
      s.row(i) /= s.row(i).sum();
    }
    out.middleCols(h * dh, dh) = s * v;
  }
  return out;
}

}  // namespace

TEST_CASE("add, sub, mul: values, broadcasting and gradients", "[autodiff][ops][elementwise]") {
  struct shape_case {
    vp::index ra, ca, rb, cb;
  };
  // same shape, row vector, column vector, scalar, per-image tile (T x D over (B*T) x D), reversed
  const shape_case cases[] = {{4, 3, 4, 3}, {4, 3, 1, 3}, {4, 3, 4, 1}, {4, 3, 1, 1}, {6, 3, 2, 3}, {1, 3, 4, 3}};
  for (const auto& c : cases) {
    auto a = random_parameter<double>("a", c.ra, c.ca, 11);
    auto b = random_parameter<double>("b", c.rb, c.cb, 12, 1.0, 0.5);
    const vp::index r = std::max(c.ra, c.rb), cc = std::max(c.ca, c.cb);
    M ea(r, cc), eb(r, cc);
    for (vp::index i = 0; i < r; ++i)
      for (vp::index j = 0; j < cc; ++j) {
        ea(i, j) = a.value()(i % c.ra, c.ca == 1 ? 0 : j);
        eb(i, j) = b.value()(i % c.rb, c.cb == 1 ? 0 : j);
      }
    T t;
    CHECK((vp::add(t.leaf(a), t.leaf(b)).value() - (ea + eb)).norm() < 1e-12);
    CHECK((vp::sub(t.leaf(a), t.leaf(b)).value() - (ea - eb)).norm() < 1e-12);
    CHECK((vp::mul(t.leaf(a), t.leaf(b)).value() - ea.cwiseProduct(eb)).norm() < 1e-12);
    require_gradcheck(vp::gradcheck([&](T& t) { return vp::add(t.leaf(a), t.leaf(b)); }, {&a, &b}));
    require_gradcheck(vp::gradcheck([&](T& t) { return vp::sub(t.leaf(a), t.leaf(b)); }, {&a, &b}));
    require_gradcheck(vp::gradcheck([&](T& t) { return vp::mul(t.leaf(a), t.leaf(b)); }, {&a, &b}));
  }
  // the same variable on both sides
  auto a = random_parameter<double>("a", 3, 3, 13);
  require_gradcheck(vp::gradcheck([&](T& t) { auto x = t.leaf(a); return x * x - x; }, {&a}));
  T t;
  auto x = t.constant(M::Ones(4, 3));
  CHECK_THROWS_WITH(vp::add(x, t.constant(M::Ones(3, 3))),
                    Catch::Contains("add") && Catch::Contains("4x3") && Catch::Contains("3x3"));
  CHECK_THROWS_AS(vp::mul(x, t.constant(M::Ones(4, 2))), vp::shape_error);
  CHECK_THROWS_AS(vp::sub(x, t.constant(M::Ones(1, 2))), vp::shape_error);
}

TEST_CASE("unary ops: scale, exp, log, tanh, gelu", "[autodiff][ops][elementwise]") {
  auto a = random_parameter<double>("a", 3, 4, 21);
  auto pos = random_parameter<double>("pos", 3, 4, 22, 0.2, 1.0);
  T t;
  M v = a.value();
  CHECK((vp::scale(t.leaf(a), 2.5).value() - 2.5 * v).norm() < 1e-12);
  CHECK((vp::add_scalar(t.leaf(a), 2.5).value() - (v.array() + 2.5).matrix()).norm() < 1e-12);
  CHECK((vp::exp(t.leaf(a)).value() - v.array().exp().matrix()).norm() < 1e-12);
  CHECK((vp::log(t.leaf(pos)).value() - pos.value().array().log().matrix()).norm() < 1e-12);
  CHECK((vp::tanh(t.leaf(a)).value() - v.array().tanh().matrix()).norm() < 1e-12);
  // GELU(1) = 0.8413447460685429, GELU(-1) = -0.15865525393145707 (exact erf form)
  auto g = vp::gelu(t.constant(M{{1.0, -1.0}}));
  CHECK(g.value()(0, 0) == Approx(0.8413447460685429).epsilon(1e-14));
  CHECK(g.value()(0, 1) == Approx(-0.15865525393145707).epsilon(1e-14));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::scale(t.leaf(a), -1.5); }, {&a}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::add_scalar(t.leaf(a), 0.5); }, {&a}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::exp(t.leaf(a)); }, {&a}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::log(t.leaf(pos)); }, {&pos}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::tanh(t.leaf(a)); }, {&a}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::gelu(t.leaf(a)); }, {&a}));
  CHECK_THROWS_WITH(vp::log(t.constant(M{{1.0, 0.0}})), Catch::Contains("log") && Catch::Contains("not positive"));
}

TEST_CASE("matmul with every transpose", "[autodiff][ops][linalg]") {
  auto a = random_parameter<double>("a", 3, 4, 31);
  auto b = random_parameter<double>("b", 4, 5, 32);
  auto bt = random_parameter<double>("bt", 5, 4, 33);
  auto at = random_parameter<double>("at", 4, 3, 34);
  T t;
  CHECK((vp::matmul(t.leaf(a), t.leaf(b)).value() - a.value() * b.value()).norm() < 1e-12);
  CHECK((vp::matmul(t.leaf(at), t.leaf(b), vp::transpose::a).value() - at.value().transpose() * b.value()).norm() < 1e-12);
  CHECK((vp::matmul(t.leaf(a), t.leaf(bt), vp::transpose::b).value() - a.value() * bt.value().transpose()).norm() < 1e-12);
  CHECK((vp::matmul(t.leaf(at), t.leaf(bt), vp::transpose::both).value() -
         at.value().transpose() * bt.value().transpose()).norm() < 1e-12);
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::matmul(t.leaf(a), t.leaf(b)); }, {&a, &b}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::matmul(t.leaf(at), t.leaf(b), vp::transpose::a); }, {&at, &b}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::matmul(t.leaf(a), t.leaf(bt), vp::transpose::b); }, {&a, &bt}));
  require_gradcheck(
      vp::gradcheck([&](T& t) { return vp::matmul(t.leaf(at), t.leaf(bt), vp::transpose::both); }, {&at, &bt}));
  CHECK_THROWS_WITH(vp::matmul(t.leaf(a), t.leaf(bt)),
                    Catch::Contains("matmul") && Catch::Contains("3x4") && Catch::Contains("5x4"));
}

TEST_CASE("fp32 GEMM: Eigen in a build without oneDNN, oneDNN refused by name", "[autodiff][ops][linalg]") {
#if !(defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL)
  vp::tape<float> t;
  CHECK(t.config().fp32_engine() == vp::fp32_gemm::eigen);
  CHECK_THAT(vp::fp32_gemm_automatic().reason, Catch::Contains("without oneDNN"));
  CHECK_THROWS_AS(t.configure({.fp32_products = vp::fp32_gemm::onednn}), vp::config_error);
  CHECK_THROWS_WITH(vp::tape<float>({.fp32_products = vp::fp32_gemm::onednn}), Catch::Contains("oneDNN float32 products are not available"));
  CHECK(t.config().fp32_products == vp::fp32_gemm::automatic);
  t.configure({.fp32_products = vp::fp32_gemm::eigen});
  CHECK(t.config().fp32_products == vp::fp32_gemm::eigen);
  CHECK(vp::onednn_cpu_isa().empty());
#else
  SUCCEED("built with oneDNN: tests/bf16 checks the oneDNN products");
#endif
}

TEST_CASE("linear layer, trainable and frozen weights", "[autodiff][ops][linalg]") {
  auto x = random_parameter<double>("x", 6, 4, 41);
  auto w = random_parameter<double>("w", 3, 4, 42);
  auto b = random_parameter<double>("b", 1, 3, 43);
  T t;
  M expect = (x.value() * w.value().transpose()).rowwise() + b.value().row(0);
  CHECK((vp::linear(t.leaf(x), t.leaf(w), t.leaf(b)).value() - expect).norm() < 1e-12);
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::linear(t.leaf(x), t.leaf(w), t.leaf(b)); }, {&x, &w, &b}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::linear(t.leaf(x), t.leaf(w)); }, {&x, &w}));
  w.freeze();
  b.freeze();
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::linear(t.leaf(x), t.leaf(w), t.leaf(b)); }, {&x}));
  t.reset();
  CHECK_THROWS_WITH(vp::linear(t.leaf(b), t.leaf(w)),
                    Catch::Contains("linear") && Catch::Contains("1x3") && Catch::Contains("3x4"));
  CHECK_THROWS_WITH(vp::linear(t.leaf(x), t.leaf(w), t.leaf(x)), Catch::Contains("bias is 6x4"));
}

TEST_CASE("sum, mean and the differentiable weighted sum", "[autodiff][ops][reduce]") {
  auto a = random_parameter<double>("a", 3, 4, 51);
  auto x0 = random_parameter<double>("x0", 3, 4, 52);
  auto x1 = random_parameter<double>("x1", 3, 4, 53);
  auto x2 = random_parameter<double>("x2", 3, 4, 54);
  auto w = random_parameter<double>("w", 1, 3, 55);
  T t;
  CHECK(vp::sum(t.leaf(a)).item() == Approx(a.value().sum()));
  CHECK(vp::mean(t.leaf(a)).item() == Approx(a.value().mean()));
  auto ws = vp::weighted_sum(t.leaf(w), {t.leaf(x0), t.leaf(x1), t.leaf(x2)});
  M expect = w.value()(0, 0) * x0.value() + w.value()(0, 1) * x1.value() + w.value()(0, 2) * x2.value();
  CHECK((ws.value() - expect).norm() < 1e-12);
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::sum(t.leaf(a)); }, {&a}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::mean(t.leaf(a)); }, {&a}));
  require_gradcheck(vp::gradcheck(
      [&](T& t) { return vp::weighted_sum(t.leaf(w), {t.leaf(x0), t.leaf(x1), t.leaf(x2)}); }, {&w, &x0, &x1, &x2}));
  // weights through a softmax, as in the MixedOp
  require_gradcheck(vp::gradcheck(
      [&](T& t) { return vp::weighted_sum(vp::softmax_rows(t.leaf(w)), {t.leaf(x0), t.leaf(x1), t.leaf(x2)}); },
      {&w, &x0}));
  CHECK_THROWS_WITH(vp::weighted_sum(t.leaf(w), {t.leaf(x0), t.leaf(x1)}),
                    Catch::Contains("1x3") && Catch::Contains("2 operands"));
  CHECK_THROWS_AS(vp::weighted_sum(t.leaf(w), {t.leaf(x0), t.leaf(x1), t.leaf(w)}), vp::shape_error);
}

TEST_CASE("row softmax and log-softmax", "[autodiff][ops][nn]") {
  auto a = random_parameter<double>("a", 4, 5, 61, 2.0);
  T t;
  auto s = vp::softmax_rows(t.leaf(a));
  auto ls = vp::log_softmax_rows(t.leaf(a));
  for (vp::index i = 0; i < 4; ++i) {
    CHECK(s.value().row(i).sum() == Approx(1.0));
    M e = a.value().row(i).array().exp();
    CHECK((s.value().row(i) - e / e.sum()).norm() < 1e-12);
  }
  CHECK((ls.value().array().exp().matrix() - s.value()).norm() < 1e-12);
  // large logits stay finite
  auto big = vp::log_softmax_rows(t.constant(M{{1000.0, 0.0}}));
  CHECK(std::isfinite(big.value()(0, 1)));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::softmax_rows(t.leaf(a)); }, {&a}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::log_softmax_rows(t.leaf(a)); }, {&a}));
}

TEST_CASE("fused layer norm with affine", "[autodiff][ops][nn]") {
  auto x = random_parameter<double>("x", 5, 6, 71, 2.0, 0.3);
  auto g = random_parameter<double>("g", 1, 6, 72, 0.2, 1.0);
  auto b = random_parameter<double>("b", 1, 6, 73, 0.2);
  T t;
  auto y = vp::layer_norm(t.leaf(x), t.leaf(g), t.leaf(b));
  for (vp::index i = 0; i < 5; ++i) {
    Eigen::RowVectorXd r = x.value().row(i);
    const double mu = r.mean(), var = (r.array() - mu).square().mean();
    Eigen::RowVectorXd e = ((r.array() - mu) / std::sqrt(var + 1e-6)) * g.value().row(0).array() + b.value().row(0).array();
    CHECK((y.value().row(i) - e).norm() < 1e-12);
  }
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::layer_norm(t.leaf(x), t.leaf(g), t.leaf(b)); }, {&x, &g, &b}));
  g.freeze();
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::layer_norm(t.leaf(x), t.leaf(g), t.leaf(b)); }, {&x, &b}));
  t.reset();
  CHECK_THROWS_WITH(vp::layer_norm(t.leaf(x), t.leaf(x), t.leaf(b)),
                    Catch::Contains("gamma is 5x6") && Catch::Contains("1x6"));
}

TEST_CASE("cross-entropy with integer labels", "[autodiff][ops][nn]") {
  auto z = random_parameter<double>("z", 4, 3, 81);
  const std::vector<int> labels{2, 0, 1, 2};
  T t;
  auto loss = vp::cross_entropy(t.leaf(z), labels);
  double expect = 0;
  for (int i = 0; i < 4; ++i) {
    Eigen::RowVectorXd r = z.value().row(i);
    expect += std::log(r.array().exp().sum()) - r(labels[i]);
  }
  CHECK(loss.item() == Approx(expect / 4).epsilon(1e-12));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::cross_entropy(t.leaf(z), labels); }, {&z}));
  require_gradcheck(
      vp::gradcheck([&](T& t) { return vp::cross_entropy(vp::scale(t.leaf(z), 3.0), labels); }, {&z}));
  CHECK_THROWS_WITH(vp::cross_entropy(t.leaf(z), std::vector<int>{0, 1, 3, 0}),
                    Catch::Contains("label 2 is 3") && Catch::Contains("3 classes"));
  CHECK_THROWS_AS(vp::cross_entropy(t.leaf(z), std::vector<int>{0, -1, 0, 0}), vp::value_error);
  CHECK_THROWS_WITH(vp::cross_entropy(t.leaf(z), std::vector<int>{0, 1}), Catch::Contains("4x3") && Catch::Contains("2 labels"));
  M bad = z.value();
  bad(1, 1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(vp::cross_entropy(t.constant(bad), labels), Catch::Contains("NaN"));
}

TEST_CASE("concat, slice and gather rows", "[autodiff][ops][shape]") {
  auto a = random_parameter<double>("a", 2, 3, 91);
  auto b = random_parameter<double>("b", 3, 3, 92);
  T t;
  auto c = vp::concat_rows({t.leaf(a), t.leaf(b)});
  REQUIRE(c.rows() == 5);
  CHECK((c.value().topRows(2) - a.value()).norm() == 0);
  CHECK((c.value().bottomRows(3) - b.value()).norm() == 0);
  auto s = vp::slice_rows(t.leaf(b), 1, 2);
  CHECK((s.value() - b.value().bottomRows(2)).norm() == 0);
  const std::vector<vp::index> idx{2, 0, 2};
  auto g = vp::gather_rows(t.leaf(b), idx);
  CHECK((g.value().row(0) - b.value().row(2)).norm() == 0);
  CHECK((g.value().row(2) - b.value().row(2)).norm() == 0);
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::concat_rows({t.leaf(a), t.leaf(b), t.leaf(a)}); }, {&a, &b}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::slice_rows(t.leaf(b), 1, 2); }, {&b}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::gather_rows(t.leaf(b), idx); }, {&b}));
  CHECK_THROWS_WITH(vp::concat_rows({t.leaf(a), t.constant(M::Ones(2, 2))}),
                    Catch::Contains("2x2") && Catch::Contains("2x3"));
  CHECK_THROWS_WITH(vp::slice_rows(t.leaf(b), 2, 2), Catch::Contains("[2, 4)") && Catch::Contains("3x3"));
  CHECK_THROWS_WITH(vp::gather_rows(t.leaf(b), std::vector<vp::index>{0, 3}), Catch::Contains("index 1 is 3"));
}

TEST_CASE("fused multi-head attention core", "[autodiff][ops][attention]") {
  const vp::index batch = 2, seq = 4, dim = 6, heads = 2;
  auto qkv = random_parameter<double>("qkv", batch * seq, 3 * dim, 101);
  T t;
  auto o = vp::attention(t.leaf(qkv), batch, heads);
  REQUIRE(o.rows() == batch * seq);
  REQUIRE(o.cols() == dim);
  for (vp::index b = 0; b < batch; ++b) {
    M expect = reference_attention(qkv.value().middleRows(b * seq, seq), heads);
    CHECK((o.value().middleRows(b * seq, seq) - expect).norm() < 1e-12);
  }
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::attention(t.leaf(qkv), batch, heads); }, {&qkv}));
  // a single head, a single image, and attention inside a small network
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::attention(t.leaf(qkv), 1, 1); }, {&qkv}));
  auto x = random_parameter<double>("x", batch * seq, dim, 102);
  auto w = random_parameter<double>("w", 3 * dim, dim, 103, 0.5);
  w.freeze();
  require_gradcheck(vp::gradcheck(
      [&](T& t) { return vp::attention(vp::linear(t.leaf(x), t.leaf(w)), batch, heads); }, {&x}));
  // the inference path (no saved probabilities) gives the same values
  {
    T u;
    vp::no_grad<double> guard(u);
    CHECK((vp::attention(u.leaf(qkv), batch, heads).value() - o.value()).norm() < 1e-12);
  }
  CHECK_THROWS_WITH(vp::attention(t.leaf(qkv), 3, heads), Catch::Contains("batch 3") && Catch::Contains("8x18"));
  CHECK_THROWS_WITH(vp::attention(t.leaf(qkv), batch, 4), Catch::Contains("4 heads") && Catch::Contains("D = 6"));
  CHECK_THROWS_WITH(vp::attention(t.constant(M::Ones(batch * seq, 7)), batch, 1), Catch::Contains("multiple of 3"));
}

TEST_CASE("fused frozen-layer ops equal their compositions and keep less", "[autodiff][ops][fused]") {
  const vp::index batch = 2, seq = 5, dim = 6, heads = 3, hidden = 8, out = 7;
  const vp::index rows = batch * seq;
  auto x = random_parameter<double>("x", rows, dim, 111);
  auto h = random_parameter<double>("h", rows, hidden, 112);
  auto qkv = random_parameter<double>("qkv", rows, 3 * dim, 113);
  auto g = random_parameter<double>("g", 1, dim, 114, 0.2, 1.0);
  auto be = random_parameter<double>("be", 1, dim, 115, 0.2);
  auto w = random_parameter<double>("w", out, dim, 116, 0.5);
  auto wh = random_parameter<double>("wh", out, hidden, 117, 0.5);
  auto b = random_parameter<double>("b", 1, out, 118, 0.2);
  auto res = random_parameter<double>("res", rows, out, 119);
  auto ls = random_parameter<double>("ls", 1, out, 120, 0.2, 1.0);
  auto w1 = random_parameter<double>("w1", hidden, dim, 121, 0.5);
  auto b1 = random_parameter<double>("b1", 1, hidden, 122, 0.2);
  auto wq = random_parameter<double>("wq", 3 * dim, dim, 123, 0.5);
  auto bq = random_parameter<double>("bq", 1, 3 * dim, 124, 0.2);
  const double eps = 1e-6;
  auto ln_lin = [&](T& t) { return vp::layer_norm_linear(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(w), t.leaf(b)); };
  auto ln_lin_ref = [&](T& t) { return vp::linear(vp::layer_norm(t.leaf(x), t.leaf(g), t.leaf(be), eps), t.leaf(w), t.leaf(b)); };
  auto gelu_lin = [&](T& t) { return vp::gelu_linear(t.leaf(h), t.leaf(wh), t.leaf(b)); };
  auto gelu_lin_ref = [&](T& t) { return vp::linear(vp::gelu(t.leaf(h)), t.leaf(wh), t.leaf(b)); };
  auto att_lin = [&](T& t) { return vp::attention_linear(t.leaf(qkv), batch, heads, t.leaf(w), t.leaf(b)); };
  auto att_lin_ref = [&](T& t) { return vp::linear(vp::attention(t.leaf(qkv), batch, heads), t.leaf(w), t.leaf(b)); };
  // with a LayerScale and the skip connection (a transformer block's two branches)
  auto act_res = [&](T& t) {
    return vp::activation_linear(t.leaf(h), vp::activation::gelu, t.leaf(wh), t.leaf(b), t.leaf(ls), t.leaf(res));
  };
  auto act_res_ref = [&](T& t) { return vp::add(t.leaf(res), vp::mul(vp::linear(vp::gelu(t.leaf(h)), t.leaf(wh), t.leaf(b)), t.leaf(ls))); };
  auto att_res = [&](T& t) {
    return vp::attention_linear(t.leaf(qkv), batch, heads, t.leaf(w), t.leaf(b), t.leaf(ls), t.leaf(res));
  };
  auto att_res_ref = [&](T& t) {
    return vp::add(t.leaf(res), vp::mul(vp::linear(vp::attention(t.leaf(qkv), batch, heads), t.leaf(w), t.leaf(b)), t.leaf(ls)));
  };
  // the whole MLP branch: LayerNorm, fc1, GELU or QuickGELU, fc2, LayerScale, skip connection
  auto mlp = [&](vp::activation a) {
    return [&, a](T& t) {
      return vp::layer_norm_mlp(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(w1), t.leaf(b1), a, t.leaf(wh), t.leaf(b),
                                t.leaf(ls), t.leaf(res));
    };
  };
  auto mlp_keep = [&](vp::activation a) {  // keeping the hidden layer instead of computing it again
    return [&, a](T& t) {
      return vp::layer_norm_mlp(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(w1), t.leaf(b1), a, t.leaf(wh), t.leaf(b),
                                t.leaf(ls), t.leaf(res), vp::mlp_memory::keep);
    };
  };
  auto mlp_ref = [&](vp::activation a) {
    return [&, a](T& t) {
      const V f = vp::linear(vp::layer_norm(t.leaf(x), t.leaf(g), t.leaf(be), eps), t.leaf(w1), t.leaf(b1));
      const V act = a == vp::activation::gelu ? vp::gelu(f) : vp::quick_gelu(f);
      return vp::add(t.leaf(res), vp::mul(vp::linear(act, t.leaf(wh), t.leaf(b)), t.leaf(ls)));
    };
  };
  auto mlp_plain = [&](T& t) {  // no LayerScale, no residual, no first bias
    return vp::layer_norm_mlp(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(w1), V(), vp::activation::gelu, t.leaf(wh),
                              t.leaf(b));
  };
  auto mlp_plain_ref = [&](T& t) {
    return vp::linear(vp::gelu(vp::linear(vp::layer_norm(t.leaf(x), t.leaf(g), t.leaf(be), eps), t.leaf(w1), V())),
                      t.leaf(wh), t.leaf(b));
  };
  // the whole attention branch: LayerNorm, qkv, attention, projection, LayerScale, skip connection
  auto att_block = [&](T& t) {
    return vp::layer_norm_attention(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(wq), t.leaf(bq), batch, heads,
                                    t.leaf(w), t.leaf(b), t.leaf(ls), t.leaf(res));
  };
  auto att_block_recompute = [&](T& t) {  // computing qkv again in backward instead of keeping it
    return vp::layer_norm_attention(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(wq), t.leaf(bq), batch, heads,
                                    t.leaf(w), t.leaf(b), t.leaf(ls), t.leaf(res), vp::attention_memory::recompute);
  };
  auto att_block_ref = [&](T& t) {
    const V q = vp::linear(vp::layer_norm(t.leaf(x), t.leaf(g), t.leaf(be), eps), t.leaf(wq), t.leaf(bq));
    return vp::add(t.leaf(res), vp::mul(vp::linear(vp::attention(q, batch, heads), t.leaf(w), t.leaf(b)), t.leaf(ls)));
  };
  auto att_block_plain = [&](T& t) {  // one head, no qkv bias, no LayerScale, no residual
    return vp::layer_norm_attention(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(wq), V(), batch, 1, t.leaf(w),
                                    t.leaf(b));
  };
  auto att_block_plain_ref = [&](T& t) {
    const V q = vp::linear(vp::layer_norm(t.leaf(x), t.leaf(g), t.leaf(be), eps), t.leaf(wq), V());
    return vp::linear(vp::attention(q, batch, 1), t.leaf(w), t.leaf(b));
  };
  struct fused_case {
    std::function<V(T&)> fused, reference;
    std::vector<P*> inputs;
  };
  std::vector<fused_case> cases{{ln_lin, ln_lin_ref, {&x}},
                                {gelu_lin, gelu_lin_ref, {&h}},
                                {att_lin, att_lin_ref, {&qkv}},
                                {act_res, act_res_ref, {&h, &res}},
                                {att_res, att_res_ref, {&qkv, &res}},
                                {mlp(vp::activation::gelu), mlp_ref(vp::activation::gelu), {&x, &res}},
                                {mlp(vp::activation::quick_gelu), mlp_ref(vp::activation::quick_gelu), {&x, &res}},
                                {mlp_keep(vp::activation::gelu), mlp_ref(vp::activation::gelu), {&x, &res}},
                                {mlp_keep(vp::activation::quick_gelu), mlp_ref(vp::activation::quick_gelu), {&x, &res}},
                                {mlp_plain, mlp_plain_ref, {&x}},
                                {att_block, att_block_ref, {&x, &res}},
                                {att_block_recompute, att_block_ref, {&x, &res}},
                                {att_block_plain, att_block_plain_ref, {&x}}};

  // trainable weights: the composition itself, every gradient checked
  for (auto& c : cases) {
    std::vector<P*> all = c.inputs;
    for (P* p : {&g, &be, &w, &wh, &b, &ls, &w1, &b1, &wq, &bq}) all.push_back(p);
    require_gradcheck(vp::gradcheck(c.fused, std::span<P* const>(all)));
  }
  // frozen weights: the fused path, same values, same input gradients, and less kept in the arena
  for (P* p : {&g, &be, &w, &wh, &b, &ls, &w1, &b1, &wq, &bq}) p->freeze();
  for (auto& c : cases) {
    for (P* p : c.inputs) p->zero_grad();
    T t1, t2;
    V y1 = c.fused(t1), y2 = c.reference(t2);
    CHECK((y1.value() - y2.value()).norm() < 1e-12);
    CHECK(t1.memory().bytes_in_use() < t2.memory().bytes_in_use());
    t1.backward(vp::sum(vp::mul(y1, y1)));
    std::vector<M> fused_grads;
    for (P* p : c.inputs) fused_grads.push_back(p->grad());
    for (P* p : c.inputs) p->zero_grad();
    t2.backward(vp::sum(vp::mul(y2, y2)));
    for (std::size_t i = 0; i < c.inputs.size(); ++i) CHECK((fused_grads[i] - c.inputs[i]->grad()).norm() < 1e-10);
    for (P* p : c.inputs) p->zero_grad();
    require_gradcheck(vp::gradcheck(c.fused, std::span<P* const>(c.inputs)));
    T u;  // and under no_grad
    vp::no_grad<double> guard(u);
    CHECK((c.fused(u).value() - y2.value()).norm() < 1e-12);
  }
  // only the residual needs a gradient: it gets the output's, and the product's input gets none
  {
    qkv.freeze();
    h.freeze();
    require_gradcheck(vp::gradcheck(att_res, {&res}));
    require_gradcheck(vp::gradcheck(act_res, {&res}));
    x.freeze();
    require_gradcheck(vp::gradcheck(mlp(vp::activation::gelu), {&res}));
    require_gradcheck(vp::gradcheck(att_block, {&res}));
    qkv.unfreeze();
    h.unfreeze();
    x.unfreeze();
  }
  // shape errors name the fused op
  T t;
  CHECK_THROWS_WITH(vp::attention_linear(t.leaf(qkv), batch, heads, t.leaf(w), t.leaf(b), t.leaf(ls), t.leaf(x)),
                    Catch::Contains("attention_linear: the residual is 10x6, expected 10x7"));
  CHECK_THROWS_WITH(vp::activation_linear(t.leaf(h), vp::activation::gelu, t.leaf(wh), t.leaf(b), {}, t.leaf(x)),
                    Catch::Contains("activation_linear: the residual is 10x6, expected 10x7"));
  CHECK_THROWS_WITH(vp::layer_norm_mlp(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(w1), t.leaf(b1), vp::activation::gelu,
                                       t.leaf(w), t.leaf(b)),
                    Catch::Contains("layer_norm_mlp") && Catch::Contains("in-features differ"));
  CHECK_THROWS_WITH(vp::layer_norm_mlp(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(w1), t.leaf(b1), vp::activation::gelu,
                                       t.leaf(wh), t.leaf(b), {}, t.leaf(x)),
                    Catch::Contains("layer_norm_mlp: the residual is 10x6, expected 10x7"));
  CHECK_THROWS_WITH(vp::layer_norm_linear(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(wh), t.leaf(b)),
                    Catch::Contains("layer_norm_linear") && Catch::Contains("in-features differ"));
  CHECK_THROWS_WITH(vp::layer_norm_linear(t.leaf(h), t.leaf(g), t.leaf(be), eps, t.leaf(w), t.leaf(b)),
                    Catch::Contains("layer_norm_linear: gamma is 1x6"));
  CHECK_THROWS_WITH(vp::gelu_linear(t.leaf(x), t.leaf(wh), t.leaf(b)),
                    Catch::Contains("gelu_linear") && Catch::Contains("10x6"));
  CHECK_THROWS_WITH(vp::layer_norm_attention(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(wq), t.leaf(bq), 3, heads,
                                             t.leaf(w), t.leaf(b)),
                    Catch::Contains("layer_norm_attention") && Catch::Contains("batch 3"));
  CHECK_THROWS_WITH(vp::layer_norm_attention(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(wq), t.leaf(bq), batch, heads,
                                             t.leaf(wh), t.leaf(b)),
                    Catch::Contains("layer_norm_attention") && Catch::Contains("in-features differ"));
  CHECK_THROWS_WITH(vp::layer_norm_attention(t.leaf(x), t.leaf(g), t.leaf(be), eps, t.leaf(wq), t.leaf(bq), batch, heads,
                                             t.leaf(w), t.leaf(b), t.leaf(ls), t.leaf(x)),
                    Catch::Contains("layer_norm_attention: the residual is 10x6, expected 10x7"));
  CHECK_THROWS_WITH(vp::attention_linear(t.leaf(qkv), 3, heads, t.leaf(w), t.leaf(b)),
                    Catch::Contains("attention_linear") && Catch::Contains("batch 3"));
  CHECK_THROWS_WITH(vp::attention_linear(t.leaf(qkv), batch, heads, t.leaf(wh), t.leaf(b)),
                    Catch::Contains("attention_linear") && Catch::Contains("in-features differ"));
}

TEST_CASE("the fusion operators' one-node pre: scale_shift and prompt_attention equal their compositions",
          "[autodiff][ops][fused]") {
  // rows * dim past one parallel chunk, so that the threads split the rows
  const vp::index rows = GENERATE(vp::index{10}, vp::index{3001}), dim = 6, prompts = 3;
  CAPTURE(rows);
  auto x = random_parameter<double>("x", rows, dim, 211);
  auto a = random_parameter<double>("a", 1, dim, 212, 0.5, 1.0), b = random_parameter<double>("b", 1, dim, 213, 0.5);
  auto k = random_parameter<double>("k", prompts, dim, 214), v = random_parameter<double>("v", prompts, dim, 215);
  const double sc = 0.7;
  auto ss = [&](T& t) { return vp::scale_shift(t.leaf(x), t.leaf(a), t.leaf(b)); };
  auto ss_ref = [&](T& t) { return vp::add(vp::mul(t.leaf(x), t.leaf(a)), t.leaf(b)); };
  auto pa = [&](T& t) { return vp::prompt_attention(t.leaf(x), t.leaf(k), t.leaf(v), sc); };
  auto pa_ref = [&](T& t) {
    return vp::add(t.leaf(x), vp::matmul(vp::softmax_rows(vp::scale(vp::matmul(t.leaf(x), t.leaf(k), vp::transpose::b), sc)),
                                         t.leaf(v)));
  };
  struct fused_case {
    std::function<V(T&)> fused, composed;
    std::vector<P*> inputs;
  };
  const M g = random_matrix<double>(rows, dim, 216);
  for (const fused_case& c : {fused_case{ss, ss_ref, {&x, &a, &b}}, fused_case{pa, pa_ref, {&x, &k, &v}}}) {
    // values, gradients and what the tape keeps, against the composition
    std::vector<M> grads;
    for (int form = 0; form < 2; ++form) {
      for (P* p : c.inputs) p->zero_grad();
      T t;
      V y = form == 0 ? c.fused(t) : c.composed(t);
      grads.push_back(y.value());
      t.backward(vp::sum(vp::mul(y, t.constant(g))));
      for (P* p : c.inputs) grads.push_back(p->grad());
      grads.push_back(M::Constant(1, 1, static_cast<double>(t.memory().bytes_in_use())));
    }
    const std::size_t n = c.inputs.size() + 2;
    for (std::size_t i = 0; i + 1 < n; ++i) CHECK((grads[i] - grads[n + i]).norm() <= 1e-12 * (1 + grads[n + i].norm()));
    CHECK(grads[n - 1](0, 0) < grads[2 * n - 1](0, 0));  // one D-wide value fewer
    // without a gradient (inference) the same values, through working memory
    T t;
    vp::no_grad<double> guard(t);
    CHECK((c.fused(t).value() - grads[0]).norm() <= 1e-12 * grads[0].norm());
  }
  if (rows < 100) {
    require_gradcheck(vp::gradcheck(ss, {&x, &a, &b}));
    require_gradcheck(vp::gradcheck(pa, {&x, &k, &v}));
    // a negative scale and large scores: the softmax stays finite and exact
    auto big = random_parameter<double>("big", prompts, dim, 217, 30.0);
    T t;
    const V y = vp::prompt_attention(t.leaf(x), t.leaf(big), t.leaf(v), -2.0);
    const V want = vp::add(t.leaf(x), vp::matmul(vp::softmax_rows(vp::scale(vp::matmul(t.leaf(x), t.leaf(big), vp::transpose::b), -2.0)),
                                                 t.leaf(v)));
    CHECK(y.value().allFinite());
    CHECK((y.value() - want.value()).norm() <= 1e-12 * want.value().norm());
    require_gradcheck(vp::gradcheck([&](T& t) { return vp::prompt_attention(t.leaf(x), t.leaf(k), t.leaf(v), -1.3); },
                                    {&x, &k, &v}));
    // shapes, named
    auto wide = random_parameter<double>("w", 2, dim, 218);
    CHECK_THROWS_WITH(vp::scale_shift(t.leaf(x), t.leaf(wide), t.leaf(b)),
                      Catch::Contains("scale_shift") && Catch::Contains("scale is 2x6") && Catch::Contains("10x6"));
    CHECK_THROWS_WITH(vp::scale_shift(t.leaf(x), t.leaf(a), t.leaf(v)), Catch::Contains("shift is 3x6"));
    CHECK_THROWS_WITH(vp::prompt_attention(t.leaf(x), t.leaf(k), t.leaf(wide), sc),
                      Catch::Contains("prompt_attention") && Catch::Contains("K is 3x6") && Catch::Contains("V is 2x6"));
    CHECK_THROWS(vp::prompt_attention(t.leaf(x), t.constant(M(0, dim)), t.constant(M(0, dim)), sc));  // no prompt
  }
}

TEST_CASE("float and double agree", "[autodiff][ops]") {
  auto xd = random_parameter<double>("x", 6, 6, 111);
  vp::parameter<float> xf("x", xd.value().cast<float>());
  vp::tape<float> tf;
  T td;
  auto yf = vp::attention(vp::gelu(tf.leaf(xf)), 2, 2);
  auto yd = vp::attention(vp::gelu(td.leaf(xd)), 2, 2);
  CHECK((yf.value().cast<double>() - yd.value()).norm() / yd.value().norm() < 1e-5);
}

TEST_CASE("gradcheck catches a wrong gradient", "[autodiff][gradcheck]") {
  // An op with a deliberately wrong backward must fail the check.
  auto a = random_parameter<double>("a", 2, 2, 121);
  auto wrong = [](const V& x) {
    T& t = x.owner();
    V out = t.make(x.rows(), x.cols(), x.requires_grad());
    out.value() = x.value().array().square().matrix();
    t.on_backward(out, [ix = x.id(), io = out.id()](T& t) {
      t.adjoint(ix).array() += t.adjoint(io).array() * t.value(ix).array();  // should be 2x
    });
    return out;
  };
  auto r = vp::gradcheck([&](T& t) { return wrong(t.leaf(a)); }, {&a});
  CHECK_FALSE(r.passed);
  CHECK(r.max_error > 0.1);
  a.freeze();
  CHECK_THROWS_AS(vp::gradcheck([&](T& t) { return vp::exp(t.leaf(a)); }, {&a}), vp::state_error);
}

TEST_CASE("sequence ops: insert rows, remove rows, one row per sequence", "[autodiff][ops][sequence]") {
  const vp::index batch = 2, seq = 3, dim = 4;
  auto x = random_parameter<double>("x", batch * seq, dim, 131);
  auto p = random_parameter<double>("p", 2, dim, 132);
  T t;
  auto y = vp::insert_rows(t.leaf(x), t.leaf(p), batch, 1);
  REQUIRE(y.rows() == batch * (seq + 2));
  for (vp::index b = 0; b < batch; ++b) {
    CHECK((y.value().row(b * 5) - x.value().row(b * 3)).norm() == 0);
    CHECK((y.value().middleRows(b * 5 + 1, 2) - p.value()).norm() == 0);
    CHECK((y.value().middleRows(b * 5 + 3, 2) - x.value().middleRows(b * 3 + 1, 2)).norm() == 0);
  }
  auto back = vp::remove_rows(y, batch, 1, 2);
  CHECK((back.value() - x.value()).norm() == 0);
  auto cls = vp::sequence_row(t.leaf(x), batch, 0);
  CHECK((cls.value().row(1) - x.value().row(3)).norm() == 0);
  for (vp::index at : {vp::index(0), vp::index(1), seq}) {
    require_gradcheck(vp::gradcheck([&](T& t) { return vp::insert_rows(t.leaf(x), t.leaf(p), batch, at); }, {&x, &p}));
  }
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::remove_rows(t.leaf(x), batch, 1, 1); }, {&x}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::remove_rows(t.leaf(x), batch, 0, 2); }, {&x}));
  require_gradcheck(vp::gradcheck([&](T& t) { return vp::sequence_row(t.leaf(x), batch, 2); }, {&x}));
  CHECK_THROWS_WITH(vp::insert_rows(t.leaf(x), t.leaf(p), 4, 0), Catch::Contains("batch 4") && Catch::Contains("6x4"));
  CHECK_THROWS_WITH(vp::insert_rows(t.leaf(x), t.leaf(p), batch, 4), Catch::Contains("position 4"));
  CHECK_THROWS_AS(vp::insert_rows(t.leaf(x), t.constant(M::Ones(1, 3)), batch, 0), vp::shape_error);
  CHECK_THROWS_WITH(vp::remove_rows(t.leaf(x), batch, 2, 2), Catch::Contains("[2, 4)"));
  CHECK_THROWS_AS(vp::remove_rows(t.leaf(x), batch, 0, 3), vp::shape_error);
  CHECK_THROWS_WITH(vp::sequence_row(t.leaf(x), batch, 3), Catch::Contains("row 3"));
}

TEST_CASE("detail::gemm splits a large product over the threads and matches one product", "[autodiff][gemm]") {
  using M = vp::matrix<double>;
  // (m, n, k): split by rows, by columns (fewer rows than columns), odd sizes, and too small to split
  for (auto [m, n, k] : {std::array<vp::index, 3>{300, 70, 50}, {6, 500, 80}, {37, 41, 91}, {3, 4, 5}}) {
    INFO(m << " x " << n << " x " << k);
    const M a = random_matrix<double>(m, k, 1), b = random_matrix<double>(k, n, 2), c0 = random_matrix<double>(m, n, 3);
    const M at = a.transpose(), bt = b.transpose();
    const M ref = a.lazyProduct(b);  // coefficient-wise, no GEMM
    M c(m, n);
    vp::detail::gemm(c, a, b);
    CHECK((c - ref).norm() <= 1e-12 * ref.norm());
    vp::detail::gemm(c, at.transpose(), bt.transpose());
    CHECK((c - ref).norm() <= 1e-12 * ref.norm());
    c = c0;
    vp::detail::gemm(c, a, b, true);
    CHECK((c - (c0 + ref)).norm() <= 1e-12 * ref.norm());
    // into a map of a larger buffer, as the tape's nodes are
    std::vector<double> buf(static_cast<std::size_t>(m * n + 7), -1.0);
    vp::matrix_map<double> cm(buf.data() + 3, m, n);
    vp::detail::gemm(cm, a, b);
    CHECK((cm - ref).norm() <= 1e-12 * ref.norm());
    CHECK((buf[0] == -1.0 && buf[2] == -1.0 && buf[static_cast<std::size_t>(m * n + 3)] == -1.0));
  }
#ifdef _OPENMP
  // the large shapes are split when there are threads, never inside a parallel region
  if (omp_get_max_threads() > 1) {
    CHECK(vp::detail::gemm_threads(300, 70, 50) == std::min(omp_get_max_threads(), 300 * 70 * 50 / 50000));
    CHECK(vp::detail::gemm_threads(6, 500, 80) > 1);
  }
  CHECK(vp::detail::gemm_threads(3, 4, 5) == 1);
  int inside = 0;
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    inside = vp::detail::gemm_threads(300, 70, 50);
  }
  CHECK(inside == 1);
#endif
}
