// The prompted search space: MixedOp gradients, parameter groups and counts,
// derived models, genotypes and state files; a user operator searched
// alongside the built-in four.
#include "custom_ops.hpp"
#include "pch.hpp"

namespace vp = vpdarts;
using vpdarts_test::tiny_vit;
namespace fs = std::filesystem;

namespace {

template <class S, class Ops = vp::default_ops>
vp::prompted_vit<S, Ops> random_search_model(unsigned seed, vp::index prompts = 2) {
  vp::vit<S> backbone(tiny_vit(6, 3), seed);
  vp::init::engine rng(seed);
  for (auto* p : backbone.parameters()) vp::init::normal(*p, 0.4, rng);
  vp::prompted_vit<S, Ops> m(std::move(backbone), {.prompts = prompts, .seed = seed});
  for (auto* p : m.weights()) vp::init::normal(*p, 0.5, rng);
  vp::init::normal(m.alpha(), 1.0, rng);
  return m;
}

}  // namespace

TEST_CASE("gradients of alpha, every operator parameter and the head", "[search][gradcheck]") {
  auto m = random_search_model<double>(1);
  vp::image_batch<double> img(2, 3, 8, 8);
  img.pixels.setRandom();
  const std::vector<int> labels{1, 2};
  auto params = m.weights();
  params.push_back(&m.alpha());
  auto r = vp::gradcheck<double>([&](vp::tape<double>& t) { return vp::cross_entropy(m.logits(t, img), labels); },
                                 params, {.max_entries = 16});
  INFO(r.worst);
  CHECK(r.passed);
  CHECK(r.max_error < 1e-6);
  CHECK(r.checked > 100);
}

TEST_CASE("parameter groups and counts", "[search]") {
  vp::vit<float> backbone(vp::vit_config::toy());
  const vp::index bb = backbone.backbone_size();
  vp::prompted_vit<float> m(std::move(backbone), {.prompts = 8, .classes = 7});
  CHECK(m.is_search());
  CHECK(m.config().classes == 7);
  CHECK(m.alpha().rows() == 6);
  CHECK(m.alpha().cols() == 4);
  CHECK(m.alpha().value().cwiseAbs().maxCoeff() < 0.01);  // 1e-3 N(0, 1)
  CHECK(m.alpha().value().cwiseAbs().maxCoeff() > 0);
  const vp::index per_layer = 8 * 192 + 65 * 192 + 2 * 192 + 2 * 8 * 192;
  CHECK(m.trainable_params() == 6 * per_layer + 7 * 192 + 7);
  CHECK(m.trainable_params(true) == 6 * per_layer + 7 * 192 + 7 + 24);
  CHECK(m.trainable_percent() == Approx(100.0 * m.trainable_params() / bb));
  for (auto* p : m.backbone().backbone_parameters()) CHECK_FALSE(p->requires_grad());
  for (auto* p : m.weights()) CHECK(p->requires_grad());
  CHECK(m.fusion_parameters()[0]->name() == "fusion.0.concat.P");
  CHECK(m.fusion_parameters().back()->name() == "fusion.5.cross_attention.V");
  // a derived model holds only its operators' parameters
  vp::genotype g = vp::genotype::uniform("affine", 6);
  g.layers[0].op = "concat";
  vp::prompted_vit<float> d(vp::vit<float>(vp::vit_config::toy()), g, {.prompts = 8, .classes = 7});
  CHECK_FALSE(d.is_search());
  CHECK(d.trainable_params() == 8 * 192 + 5 * 2 * 192 + 7 * 192 + 7);
  CHECK(d.derive().names() == g.names());
  CHECK_THROWS_AS(d.softmax_alpha(), vp::state_error);
}

TEST_CASE("a derived model equals the search model with one-hot alpha", "[search]") {
  auto m = random_search_model<double>(2);
  const std::vector<std::string> ops{"concat", "add", "cross_attention"};
  vp::genotype g = vp::genotype::uniform("concat", 3);
  for (std::size_t l = 0; l < 3; ++l) g.layers[l].op = ops[l];
  m.alpha().value().setConstant(-1e4);
  for (vp::index l = 0; l < 3; ++l) m.alpha().value()(l, static_cast<vp::index>(vp::default_ops::index_of(ops[static_cast<std::size_t>(l)]))) = 0;
  vp::prompted_vit<double> d(vp::vit<double>(m.backbone()), g, {.prompts = 2});
  // same operator parameters and head
  for (auto* p : d.weights())
    for (auto* q : m.weights())
      if (p->name() == q->name()) p->value() = q->value();
  vp::image_batch<double> img(3, 3, 8, 8);
  img.pixels.setRandom();
  vp::tape<double> t;
  auto a = m.logits(t, img).value();
  auto b = d.logits(t, img).value();
  CHECK((a - b).norm() < 1e-12 * a.norm());
  CHECK(m.derive().names() == ops);
}

TEST_CASE("genotypes: derive, JSON round trip and errors", "[search][genotype]") {
  auto m = random_search_model<float>(3);
  vp::genotype g = m.derive();
  REQUIRE(g.layers.size() == 3);
  CHECK(g.ops == std::vector<std::string>{"concat", "add", "affine", "cross_attention"});
  auto w = m.softmax_alpha();
  for (std::size_t l = 0; l < 3; ++l) {
    vp::index k;
    w.row(static_cast<vp::index>(l)).maxCoeff(&k);
    CHECK(g.layers[l].op == g.ops[static_cast<std::size_t>(k)]);
    CHECK(g.layers[l].weights[0] == Approx(w(static_cast<vp::index>(l), 0)));
    CHECK(g.layers[l].margin() >= 0);
  }
  const vpdarts_test::temp_dir dir("vpdarts-genotype-test");
  const auto path = dir / "genotype.json";
  g.save(path);
  vp::genotype back = vp::genotype::load(path);
  CHECK(back.names() == g.names());
  CHECK(back.ops == g.ops);
  CHECK(back.layers[1].weights[2] == Approx(g.layers[1].weights[2]));
  auto json = nlohmann::json::parse(g.to_json().dump());
  CHECK(json["layers"][0]["weights"].contains("cross_attention"));
  fs::remove(path);
  // errors
  vp::genotype bad = vp::genotype::uniform("gated", 3);
  CHECK_THROWS_WITH((vp::prompted_vit<float>(vp::vit<float>(tiny_vit(6, 3)), bad, {})),
                    Catch::Contains("unknown fusion operator 'gated'") && Catch::Contains("known: concat, add"));
  CHECK_THROWS_WITH((vp::prompted_vit<float>(vp::vit<float>(tiny_vit(6, 3)), vp::genotype::uniform("add", 5), {})),
                    Catch::Contains("5 layers") && Catch::Contains("3 blocks"));
  CHECK_THROWS_WITH(vp::genotype::from_json("{\"layers\": []}", "g.json"), Catch::Contains("g.json") && Catch::Contains("no layers"));
  CHECK_THROWS_WITH(vp::genotype::from_json("[", "g.json"), Catch::Contains("not valid JSON"));
  CHECK_THROWS_AS(vp::genotype::load("/nonexistent/genotype.json"), vp::io_error);
  CHECK_THROWS_AS((vp::prompted_vit<float>(vp::vit<float>(tiny_vit(6, 3)), {.prompts = 0})), vp::config_error);
}

TEST_CASE("state files round-trip w and alpha", "[search][io]") {
  auto a = random_search_model<float>(4);
  const vpdarts_test::temp_dir dir("vpdarts-state-test");
  const auto path = dir / "state.safetensors";
  a.save_state(path);
  auto b = random_search_model<float>(5);
  b.load_state(path);
  auto pa = a.state_parameters(), pb = b.state_parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) CHECK((pa[i]->value() - pb[i]->value()).norm() == 0);
  auto f = vp::io::safetensors::read(path);
  CHECK(f.at("alpha").shape == std::vector<std::int64_t>{3, 4});
  CHECK(f.at("fusion.2.affine.S").shape == std::vector<std::int64_t>{2, 6});
  // a derived model takes its own operators' parameters from a search state
  vp::prompted_vit<float> d(vp::vit<float>(tiny_vit(6, 3)), vp::genotype::uniform("add", 3), {.prompts = 2});
  CHECK_THROWS_WITH(d.load_state(path), Catch::Contains("unexpected 'alpha'"));
  d.load_state(path, true);
  CHECK((d.op_parameters(1, 1)[0].value() - a.op_parameters(1, 1)[0].value()).norm() == 0);
  fs::remove(path);
}

TEST_CASE("a user-defined operator is searched alongside the built-in four", "[search][custom]") {
  using ops = vp::op_list<vp::concat, vp::add_prompt, vp::affine, vp::cross_attention, vpdarts_test::gated_add,
                          vpdarts_test::none>;
  auto m = random_search_model<double, ops>(6);
  CHECK(m.alpha().cols() == 6);
  CHECK(m.derive().ops.back() == "none");
  vp::image_batch<double> img(2, 3, 8, 8);
  img.pixels.setRandom();
  const std::vector<int> labels{0, 1};
  auto params = m.weights();
  params.push_back(&m.alpha());
  auto r = vp::gradcheck<double>([&](vp::tape<double>& t) { return vp::cross_entropy(m.logits(t, img), labels); },
                                 params, {.max_entries = 8});
  INFO(r.worst);
  CHECK(r.passed);
  // and the derived model of a genotype that picks it
  vp::genotype g = vp::genotype::uniform("gated_add", 3);
  g.layers[2].op = "none";
  vp::prompted_vit<double, ops> d(vp::vit<double>(tiny_vit(6, 3)), g, {.prompts = 2});
  CHECK(d.trainable_params() == 2 * (5 * 6 + 1) + 3 * 6 + 3);
}

TEST_CASE("a pass records gradients for the requested group only", "[search]") {
  auto m = random_search_model<float>(7);
  vp::image_batch<float> img(2, 3, 8, 8);
  img.pixels.setRandom();
  const std::vector<int> labels{0, 1};
  vp::tape<float> t;
  t.backward(vp::cross_entropy(m.logits(t, img, vp::grad_target::alpha), labels));
  CHECK(m.alpha().grad().norm() > 0);
  for (auto* p : m.weights()) CHECK(p->grad().norm() == 0);
  m.alpha().zero_grad();
  t.reset();
  t.backward(vp::cross_entropy(m.logits(t, img, vp::grad_target::weights), labels));
  CHECK(m.alpha().grad().norm() == 0);
  CHECK(m.backbone().head.weight.grad().norm() > 0);
  CHECK(m.fusion_parameters()[0]->grad().norm() > 0);
  t.reset();
  CHECK_THROWS_AS(t.backward(vp::cross_entropy(m.logits(t, img, vp::grad_target::none), labels)), vp::state_error);
}

TEST_CASE("a warm first-order search step allocates nothing", "[search][alloc]") {
  if (!vpdarts_test::counting_allocations()) {
    WARN("allocation counting is off in sanitizer builds");
    return;
  }
  auto m = random_search_model<float>(8);
  vp::image_batch<float> img(4, 3, 8, 8);
  img.pixels.setRandom();
  const std::vector<int> labels{0, 1, 2, 1};
  vp::tape<float> t;
  auto step = [&] {
    t.reset();
    t.backward(vp::cross_entropy(m.logits(t, img, vp::grad_target::alpha), labels));
    t.reset();
    t.backward(vp::cross_entropy(m.logits(t, img, vp::grad_target::weights), labels));
  };
  step();
  step();
  const std::size_t before = vpdarts_test::allocations();
  for (int i = 0; i < 3; ++i) step();
  CHECK(vpdarts_test::allocations() - before == 0);
}

TEST_CASE("mixed_op owns its candidates' parameters", "[search][mixed_op]") {
  vp::fusion_context ctx{tiny_vit(6, 3), 2};
  vp::mixed_op<float, vp::default_ops> m(1, ctx, {0, 3}, 0);
  CHECK(m.is_mixed());
  CHECK(m.parameters(0).size() == 1);
  CHECK(m.parameters(1).empty());
  CHECK(m.parameters(3)[1].name() == "fusion.1.cross_attention.V");
  std::vector<vp::parameter<float>*> all;
  m.collect(all);
  CHECK(all.size() == 3);
  CHECK_THROWS_WITH((vp::mixed_op<float, vp::default_ops>(0, ctx, {}, 0)), Catch::Contains("no candidate"));
  CHECK_THROWS_WITH((vp::mixed_op<float, vp::default_ops>(0, ctx, {4}, 0)), Catch::Contains("position 4"));
}

TEST_CASE("a search model and a derived model give the same logits with and without gradients", "[search]") {
  // under no_grad every block runs on the tape's block tape (alpha and the operators' leaves included)
  auto m = random_search_model<double>(4);
  vp::genotype g = vp::genotype::uniform("concat", 3);
  g.layers[1].op = "cross_attention";
  g.layers[2].op = "affine";
  vp::prompted_vit<double> d(vp::vit<double>(m.backbone()), g, {.prompts = 2, .seed = 4});
  vp::image_batch<double> img(3, 3, 8, 8);
  img.pixels.setRandom();
  for (auto* model : {&m, &d}) {
    vp::tape<double> recorded, quiet;
    const vp::matrix<double> a = model->logits(recorded, img, vp::grad_target::all).value();
    vp::no_grad<double> guard(quiet);
    const vp::matrix<double> b = model->logits(quiet, img, vp::grad_target::none).value();
    CHECK((a - b).norm() <= 1e-13 * a.norm());  // the recorded mixture may sum in another order
  }
}
