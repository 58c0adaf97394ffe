// The layer contracts of nn/: timm names and shapes, initialisation, forward
// values against the formula, gradients against central differences, and
// collect() order.
#include "pch.hpp"

namespace vp = vpdarts;

TEST_CASE("a linear layer computes x W^T + b with PyTorch's names, shapes and init", "[nn][linear]") {
  vp::init::engine rng(1);
  vp::nn::linear_layer<double> l("fc", 4, 3, rng);
  CHECK(l.weight.name() == "fc.weight");
  CHECK(l.bias.name() == "fc.bias");
  CHECK(l.weight.shape() == std::vector<vp::index>{3, 4});
  CHECK(l.bias.shape() == std::vector<vp::index>{3});  // saved as a vector, like PyTorch's
  CHECK(l.bias.value().isZero());
  CHECK(l.weight.value().cwiseAbs().maxCoeff() <= 0.04 + 1e-12);  // trunc_normal(0.02) cuts at two std
  CHECK(l.weight.value().cwiseAbs().maxCoeff() > 0);
  l.bias.value().setRandom();
  vp::tape<double> t;
  const vp::matrix<double> x = vpdarts_test::random_matrix<double>(5, 4, 2);
  const vp::matrix<double> y = l.forward(t, t.constant(x)).value();
  vp::matrix<double> want = x * l.weight.value().transpose();
  want.rowwise() += l.bias.value().row(0);
  CHECK((y - want).norm() < 1e-12);
  std::vector<vp::parameter<double>*> ps;
  l.collect(ps);
  REQUIRE(ps.size() == 2);
  CHECK(ps[0] == &l.weight);
  auto r = vp::gradcheck<double>([&](vp::tape<double>& tt) { return vp::sum(l.forward(tt, tt.constant(x))); }, ps);
  CHECK(r.passed);
}

TEST_CASE("a LayerNorm layer normalises rows with eps 1e-6, weight ones and bias zeros", "[nn][layer_norm]") {
  vp::nn::layer_norm_layer<double> n("norm", 6);
  CHECK(n.weight.name() == "norm.weight");
  CHECK(n.weight.shape() == std::vector<vp::index>{6});
  CHECK((n.weight.value().array() == 1.0).all());
  CHECK(n.bias.value().isZero());
  n.weight.value() = vpdarts_test::random_matrix<double>(1, 6, 3);
  n.bias.value() = vpdarts_test::random_matrix<double>(1, 6, 4);
  const vp::matrix<double> x = vpdarts_test::random_matrix<double>(4, 6, 5, 3.0);
  vp::tape<double> t;
  const vp::matrix<double> y = n.forward(t, t.constant(x)).value();
  for (vp::index i = 0; i < 4; ++i) {
    const double mean = x.row(i).mean();
    const double var = (x.row(i).array() - mean).square().mean();
    for (vp::index j = 0; j < 6; ++j)
      CHECK(y(i, j) == Approx((x(i, j) - mean) / std::sqrt(var + 1e-6) * n.weight.value()(0, j) + n.bias.value()(0, j)));
  }
  CHECK_THROWS_AS(n.forward(t, t.constant(vp::matrix<double>::Ones(2, 5))), vp::shape_error);
  std::vector<vp::parameter<double>*> ps;
  n.collect(ps);
  auto r = vp::gradcheck<double>(
      [&](vp::tape<double>& tt) { return vp::sum(vp::mul(n.forward(tt, tt.constant(x)), tt.constant(x))); }, ps);
  CHECK(r.passed);
}

TEST_CASE("attention and MLP layers hold timm's parameters in checkpoint order", "[nn][attention][mlp]") {
  vp::init::engine rng(2);
  vp::nn::attention_layer<float> a("blocks.0.attn", 8, 2, rng);
  vp::nn::mlp_layer<float> m("blocks.0.mlp", 8, 32, rng);
  std::vector<vp::parameter<float>*> ps;
  a.collect(ps);
  m.collect(ps);
  std::vector<std::string> names;
  for (auto* p : ps) names.push_back(p->name() + " " + std::to_string(p->rows()) + "x" + std::to_string(p->cols()));
  CHECK(names == std::vector<std::string>{"blocks.0.attn.qkv.weight 24x8", "blocks.0.attn.qkv.bias 1x24",
                                          "blocks.0.attn.proj.weight 8x8", "blocks.0.attn.proj.bias 1x8",
                                          "blocks.0.mlp.fc1.weight 32x8", "blocks.0.mlp.fc1.bias 1x32",
                                          "blocks.0.mlp.fc2.weight 8x32", "blocks.0.mlp.fc2.bias 1x8"});
  CHECK(a.heads == 2);
}
