// Fusion operators: the trait and concept, each operator's definition, its
// identity at init, and its gradients. A new operator is tested by adding it
// to `all_ops`.
#include "custom_ops.hpp"
#include "pch.hpp"

namespace vp = vpdarts;
using vpdarts_test::tiny_vit;
using vpdarts_test::gated_add;
using vpdarts_test::none;

namespace {

struct not_an_op {};

using all_ops = std::tuple<vp::concat, vp::add_prompt, vp::affine, vp::cross_attention, gated_add, none>;

// A derived model with Op at every layer, random non-zero backbone.
template <class Op>
vp::prompted_vit<double, vp::op_list<Op>> single_op_model(unsigned seed) {
  vp::vit<double> backbone(tiny_vit(6), seed);
  vp::init::engine rng(seed);
  for (auto* p : backbone.parameters()) vp::init::normal(*p, 0.4, rng);
  const std::string name(vp::fusion_traits<Op>::name);
  return vp::prompted_vit<double, vp::op_list<Op>>(std::move(backbone), vp::genotype::uniform(name, 2), {.prompts = 3});
}

}  // namespace

TEST_CASE("the fusion trait is detectable and the concept checks it", "[fusion][traits]") {
  STATIC_REQUIRE(vp::FusionOp<vp::concat>);
  STATIC_REQUIRE(vp::FusionOp<vp::add_prompt>);
  STATIC_REQUIRE(vp::FusionOp<vp::affine>);
  STATIC_REQUIRE(vp::FusionOp<vp::cross_attention>);
  STATIC_REQUIRE(vp::FusionOp<gated_add>);
  STATIC_REQUIRE_FALSE(vp::is_fusion_op_v<not_an_op>);
  STATIC_REQUIRE_FALSE(vp::FusionOp<not_an_op>);
  STATIC_REQUIRE(vp::default_ops::size == 4);
  CHECK(vp::default_ops::names[3] == "cross_attention");
  CHECK(vp::default_ops::index_of("affine") == 2);
  CHECK_THROWS_WITH(vp::default_ops::index_of("gated"), Catch::Contains("unknown fusion operator 'gated'") &&
                                                            Catch::Contains("concat, add, affine, cross_attention"));
  vp::fusion_context ctx{vp::vit_config::toy(), 8};
  CHECK(vp::fusion_param_count<vp::concat>(ctx) == 8 * 192);
  CHECK(vp::fusion_param_count<vp::add_prompt>(ctx) == 65 * 192);
  CHECK(vp::fusion_param_count<vp::affine>(ctx) == 2 * 192);
  CHECK(vp::fusion_param_count<vp::cross_attention>(ctx) == 2 * 8 * 192);
  CHECK(ctx.vpt_bound() == Approx(std::sqrt(6.0 / (3 * 16 + 192))));
}

TEST_CASE("operators compute the definitions of docs/method.md", "[fusion]") {
  const vp::index batch = 2, seq = 3, d = 4;
  vp::tape<double> t;
  vp::matrix<double> x = vpdarts_test::random_matrix<double>(batch * seq, d, 1);
  auto X = t.constant(x);
  SECTION("concat inserts after cls and drops afterwards") {
    vp::matrix<double> P = vpdarts_test::random_matrix<double>(2, d, 2);
    vp::op_params<double> p{{"P", t.constant(P)}};
    auto y = vp::fusion_traits<vp::concat>::pre(X, p, batch);
    REQUIRE(y.rows() == batch * (seq + 2));
    CHECK((y.value().middleRows(5 + 1, 2) - P).norm() == 0);
    CHECK((y.value().row(5) - x.row(3)).norm() == 0);
    CHECK((vp::fusion_traits<vp::concat>::post(y, p, batch).value() - x).norm() == 0);
  }
  SECTION("add covers every token, cls included, of every image") {
    vp::matrix<double> A = vpdarts_test::random_matrix<double>(seq, d, 3);
    auto y = vp::fusion_traits<vp::add_prompt>::pre(X, {{"A", t.constant(A)}}, batch);
    CHECK((y.value().middleRows(3, 3) - x.middleRows(3, 3) - A).norm() < 1e-15);
  }
  SECTION("affine scales and shifts every channel") {
    vp::matrix<double> S = vpdarts_test::random_matrix<double>(2, d, 4);
    auto y = vp::fusion_traits<vp::affine>::pre(X, {{"S", t.constant(S)}}, batch);
    for (vp::index i = 0; i < x.rows(); ++i)
      for (vp::index j = 0; j < d; ++j) CHECK(y.value()(i, j) == Approx((1 + S(0, j)) * x(i, j) + S(1, j)));
  }
  SECTION("cross_attention attends over the prompts per token") {
    vp::matrix<double> K = vpdarts_test::random_matrix<double>(2, d, 5), V = vpdarts_test::random_matrix<double>(2, d, 6);
    auto y = vp::fusion_traits<vp::cross_attention>::pre(X, {{"K", t.constant(K)}, {"V", t.constant(V)}}, batch);
    for (vp::index i = 0; i < x.rows(); ++i) {
      Eigen::RowVectorXd s = (x.row(i) * K.transpose()) / 2.0;  // sqrt(D) = 2
      s = (s.array() - s.maxCoeff()).exp().matrix();
      s /= s.sum();
      CHECK((y.value().row(i) - x.row(i) - s * V).norm() < 1e-12);
    }
  }
  SECTION("a missing symbol names the known ones") {
    vp::op_params<double> p{{"P", X}};
    CHECK_THROWS_WITH(p["Q"], Catch::Contains("no parameter 'Q'") && Catch::Contains("has: P"));
  }
}

TEMPLATE_LIST_TEST_CASE("every operator passes a gradient check", "[fusion][gradcheck]", all_ops) {
  auto m = single_op_model<TestType>(3);
  vp::init::engine rng(4);
  for (auto* p : m.fusion_parameters()) vp::init::normal(*p, 0.5, rng);
  vp::init::normal(m.backbone().head.weight, 0.5, rng);
  vp::image_batch<double> img(2, 3, 8, 8);
  img.pixels.setRandom();
  const std::vector<int> labels{2, 0};
  auto params = m.weights();
  auto r = vp::gradcheck<double>([&](vp::tape<double>& t) { return vp::cross_entropy(m.logits(t, img), labels); },
                                 params);
  INFO(vp::fusion_traits<TestType>::name << ": " << r.worst);
  CHECK(r.passed);
  CHECK(r.max_error < 1e-6);
}

TEMPLATE_LIST_TEST_CASE("operators start as the identity, except concat", "[fusion][init]", all_ops) {
  auto m = single_op_model<TestType>(5);
  m.backbone().head.weight.value().setRandom();
  vp::image_batch<double> img(2, 3, 8, 8);
  img.pixels.setRandom();
  vp::tape<double> t;
  vp::no_grad<double> guard(t);
  auto with_op = m.logits(t, img).value();
  auto plain = m.backbone().logits(t, img).value();
  const double diff = (with_op - plain).norm();
  if constexpr (std::is_same_v<TestType, vp::concat>) {
    CHECK(diff > 1e-6);
  } else {
    CHECK(diff < 1e-12);
  }
}
