// The cost objective (search/cost.hpp): the cost table, the expected cost and its gradient,
// the genotype within a budget, the search that prices or bounds its cost (and resumes with it),
// the perturbation selection within a budget, the widening lr / weight-decay grid, and the front.
#include "pch.hpp"

namespace vp = vpdarts;
using vpdarts_test::tiny_vit;
using vpdarts_test::tiny_data;

namespace {

vp::search_options cost_quick() { return vpdarts_test::quick_search(4); }

// the log-likelihood of a choice under weights w
double log_weight(const vp::matrix<double>& w, const std::vector<std::size_t>& ops) {
  double s = 0;
  for (std::size_t l = 0; l < ops.size(); ++l) s += std::log(w(static_cast<vp::index>(l), static_cast<vp::index>(ops[l])));
  return s;
}

}  // namespace

TEST_CASE("the expected cost under softmax(alpha) and its gradient match finite differences", "[search][cost][gradcheck]") {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> n01;
  for (int trial = 0; trial < 5; ++trial) {
    vp::matrix<double> alpha(3, 4), cost(3, 4);
    for (vp::index i = 0; i < alpha.size(); ++i) {
      alpha.data()[i] = 2 * n01(rng);
      cost.data()[i] = std::abs(100 * n01(rng));
    }
    vp::matrix<double> g;
    const double e = vp::expected_cost(alpha, cost, &g);
    double manual = 0;
    for (vp::index l = 0; l < 3; ++l) {
      const Eigen::RowVectorXd p = (alpha.row(l).array() - alpha.row(l).maxCoeff()).exp();
      manual += (p / p.sum()).dot(cost.row(l));
    }
    CHECK(e == Approx(manual).epsilon(1e-12));
    const double h = 1e-6;
    for (vp::index i = 0; i < alpha.size(); ++i) {
      vp::matrix<double> up = alpha, down = alpha;
      up.data()[i] += h;
      down.data()[i] -= h;
      const double fd = (vp::expected_cost(up, cost) - vp::expected_cost(down, cost)) / (2 * h);
      CHECK(g.data()[i] == Approx(fd).epsilon(1e-6).margin(1e-6));
    }
  }
  CHECK_THROWS_WITH(vp::expected_cost(vp::matrix<double>(2, 4), vp::matrix<double>(3, 4)), Catch::Contains("2x4"));
}

TEST_CASE("the cost table counts every candidate's trainable values exactly, and times each around its block",
          "[search][cost]") {
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(8, 3), 1), {.prompts = 3, .classes = 4, .seed = 1});
  vp::op_costs c = vp::param_costs(m);
  REQUIRE(c.params.rows() == 3);
  REQUIRE(c.params.cols() == 4);
  CHECK(c.fixed_params == 4 * 8 + 4);
  // a genotype's cost by the table is its derived model's trainable values
  std::mt19937_64 rng(2);
  for (int trial = 0; trial < 6; ++trial) {
    vp::genotype g;
    for (int l = 0; l < 3; ++l) g.layers.push_back({std::string(vp::default_ops::names[rng() % 4]), {}});
    vp::prompted_vit<float> derived(vp::vit<float>(tiny_vit(8, 3), 1), g, {.prompts = 3, .classes = 4, .seed = 1});
    const vp::cost_objective o = vp::make_cost_objective(c, vp::cost_kind::params);
    CHECK(o.of(vp::op_positions<vp::default_ops>(g)) == static_cast<double>(derived.trainable_params()));
  }
  CHECK_THROWS_WITH(c.of(vp::cost_kind::latency), Catch::Contains("latency table is empty"));
  vp::op_latency(m, c, {.runs = 3, .warmup = 1});
  REQUIRE(c.latency_ms.rows() == 3);
  CHECK(c.latency_ms.allFinite());
  CHECK(c.latency_ms.minCoeff() > 0);
  CHECK(c.fixed_latency_ms > 0);
  CHECK(c.latency_runs == 3);
  CHECK_THROWS_WITH(vp::op_latency(m, c, {.runs = 0}), Catch::Contains("runs 0"));
  // one candidate around its block is the layer's output when the layer has that operator alone
  vp::prompted_vit<float> only_add(vp::vit<float>(tiny_vit(8, 3), 1), vp::genotype::uniform("add", 3),
                                   {.prompts = 3, .classes = 4, .seed = 1});
  vp::tape<float> t;
  const vp::matrix<float> x = vp::matrix<float>::Random(tiny_vit(8, 3).tokens(), 8);
  const auto y = only_add.layer(0).forward_one(t, 1, only_add.backbone().blocks[0], t.constant(x), 1);
  const auto z = only_add.layer(0).forward(t, only_add.backbone().blocks[0], t.constant(x), 1, {}, false);
  CHECK((y.value() - z.value()).norm() == 0);
  CHECK_THROWS_WITH(only_add.layer(0).forward_one(t, 0, only_add.backbone().blocks[0], t.constant(x), 1),
                    Catch::Contains("not a candidate"));
}

TEST_CASE("the genotype within a budget fits it and no single layer can move to a likelier operator that fits",
          "[search][cost][budget]") {
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(0.01, 1.0);
  int optimal = 0;
  for (int trial = 0; trial < 40; ++trial) {
    vp::matrix<double> w(4, 4);
    vp::cost_objective c;
    c.cost.resize(4, 4);
    for (vp::index l = 0; l < 4; ++l) {
      for (vp::index k = 0; k < 4; ++k) w(l, k) = u(rng), c.cost(l, k) = std::floor(100 * u(rng));
      w.row(l) /= w.row(l).sum();
    }
    c.fixed = 7;
    c.budget = c.cheapest() + (c.costliest() - c.cheapest()) * u(rng) * 0.8;
    const auto ops = vp::choose_within_budget(w, c);
    INFO("trial " << trial);
    CHECK(c.of(ops) <= *c.budget);
    for (vp::index l = 0; l < 4; ++l)
      for (vp::index k = 0; k < 4; ++k) {
        auto moved = ops;
        moved[static_cast<std::size_t>(l)] = static_cast<std::size_t>(k);
        if (w(l, k) > w(l, static_cast<vp::index>(ops[static_cast<std::size_t>(l)]))) CHECK(c.of(moved) > *c.budget);
      }
    // as good as the best of every genotype, or close: the Lagrangian choice then the greedy raise
    double best = -1e300;
    for (int code = 0; code < 256; ++code) {
      std::vector<std::size_t> g{static_cast<std::size_t>(code & 3), static_cast<std::size_t>((code >> 2) & 3),
                                 static_cast<std::size_t>((code >> 4) & 3), static_cast<std::size_t>((code >> 6) & 3)};
      if (c.of(g) <= *c.budget) best = std::max(best, log_weight(w, g));
    }
    if (log_weight(w, ops) >= best - 1e-12) ++optimal;
  }
  CHECK(optimal >= 36);  // the best genotype within the budget in nearly every case
  // the argmax when it fits; the cheapest when the budget is the cheapest; refused below it
  vp::matrix<double> w(2, 3);
  w << 0.2, 0.7, 0.1, 0.6, 0.3, 0.1;
  vp::cost_objective c;
  c.cost.resize(2, 3);
  c.cost << 1, 5, 2, 4, 1, 3;
  c.unit = "values";
  CHECK(vp::choose_within_budget(w, c) == std::vector<std::size_t>{1, 0});
  c.budget = 2;
  CHECK(vp::choose_within_budget(w, c) == std::vector<std::size_t>{0, 1});
  c.budget = 1.5;
  CHECK_THROWS_WITH(vp::choose_within_budget(w, c), Catch::Contains("below the cheapest genotype (2 values)"));
  CHECK_THROWS_WITH(c.check(2, 3, "test"), Catch::Contains("below the cheapest"));
  CHECK_THROWS_WITH(c.check(3, 3, "test"), Catch::Contains("2x3"));
  c.budget.reset();
  c.lambda = 1e7;
  CHECK_THROWS_WITH(c.check(2, 3, "test"), Catch::Contains("swamp"));
  c.lambda = 0;
  c.cost(0, 0) = -1;
  CHECK_THROWS_WITH(c.check(2, 3, "test"), Catch::Contains("negative"));
}

TEST_CASE("the cost term adds lambda dE/dalpha / R to alpha's gradient; a large lambda makes the search choose the cheapest",
          "[search][cost]") {
  auto data = tiny_data(24);
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 2), {.prompts = 2, .seed = 2});
  const vp::op_costs table = vp::param_costs(m);
  vp::bilevel_options b;
  b.cost = vp::make_cost_objective(table, vp::cost_kind::params, 0.7);
  vp::bilevel_optimizer<float, vp::default_ops> opt(m, b);
  vp::image_batch<float> x;
  std::vector<int> y;
  const std::vector<vp::index> rows{0, 1, 2, 3, 4, 5};
  data.gather(rows, x, y);
  opt.alpha_grad_first(x, y);
  const vp::matrix<float> loss_grad = m.alpha().grad();
  opt.add_cost_gradient();
  vp::matrix<double> de;
  const double e = vp::expected_cost(m.alpha().value(), table.params, &de);
  CHECK(opt.expected_cost_now() == Approx(table.fixed_params + e));
  const vp::matrix<double> added = (m.alpha().grad() - loss_grad).cast<double>();
  CHECK((added - (0.7 / b.cost.range()) * de).norm() < 1e-6 * (1 + de.norm()));

  // priced heavily, every layer goes to the operator with the fewest values (affine: 2 x D)
  auto o = cost_quick();
  o.bilevel.cost = vp::make_cost_objective(table, vp::cost_kind::params, 50.0);
  vp::prompted_vit<float> priced(vp::vit<float>(tiny_vit(), 2), {.prompts = 2, .seed = 2});
  const auto r = vp::search(priced, data, o);
  CHECK(r.found.names() == std::vector<std::string>{"affine", "affine"});
  REQUIRE(r.expected_cost.size() == 4);
  CHECK(std::isnan(r.expected_cost[0]));  // warm-up: no alpha step
  CHECK(r.expected_cost[3] < r.expected_cost[1]);
  CHECK(r.cost_lambda == std::vector<double>(4, 50.0));  // no budget: lambda stays
}

TEST_CASE("a budgeted search sets lambda itself, keeps its genotype within the budget, and resumes with its cost state",
          "[search][cost][budget][resume]") {
  auto data = tiny_data(24);
  const vpdarts_test::temp_dir dir("vpdarts-cost-test");
  vp::prompted_vit<float> probe(vp::vit<float>(tiny_vit(), 3), {.prompts = 2, .seed = 3});
  const vp::op_costs table = vp::param_costs(probe);
  // a budget the unpriced search's genotype does not keep
  auto o = cost_quick();
  vp::prompted_vit<float> free(vp::vit<float>(tiny_vit(), 3), {.prompts = 2, .seed = 3});
  const auto unpriced = vp::search(free, data, o);
  const vp::cost_objective whole = vp::make_cost_objective(table, vp::cost_kind::params);
  const double budget = whole.cheapest() + 0.25 * (whole.of(vp::op_positions<vp::default_ops>(unpriced.found)) - whole.cheapest());
  o.bilevel.cost = vp::make_cost_objective(table, vp::cost_kind::params, 0.0, budget);
  o.bilevel.cost.lambda_rate = 2.0;
  vp::prompted_vit<float> bounded(vp::vit<float>(tiny_vit(), 3), {.prompts = 2, .seed = 3});
  const auto r = vp::search(bounded, data, o);
  CHECK(whole.of(vp::op_positions<vp::default_ops>(r.found)) <= budget);
  CHECK(*std::max_element(r.cost_lambda.begin(), r.cost_lambda.end()) > 0);  // the search raised lambda
  CHECK(r.cost_lambda[0] == 0);  // not before the first alpha step

  // resume: the table and lambda come from the checkpoint
  struct interrupted {};
  o.checkpoint = dir / "search.safetensors";
  o.resume = true;
  o.on_epoch = [](long epoch, const vp::matrix<double>&, double, double) {
    if (epoch == 2) throw interrupted{};
  };
  {
    vp::prompted_vit<float> first(vp::vit<float>(tiny_vit(), 3), {.prompts = 2, .seed = 3});
    CHECK_THROWS_AS(vp::search(first, data, o), interrupted);
  }
  o.on_epoch = {};
  auto other_table = o;
  other_table.bilevel.cost.cost(0, 1) += 5;  // a table measured again differs; the checkpoint's is used
  vp::prompted_vit<float> second(vp::vit<float>(tiny_vit(), 3), {.prompts = 2, .seed = 3});
  const auto resumed = vp::search(second, data, other_table);
  CHECK(resumed.resumed_from == 2);
  CHECK(resumed.cost_lambda == r.cost_lambda);
  CHECK(resumed.found.names() == r.found.names());
  for (std::size_t e = 0; e < 4; ++e) CHECK((resumed.alpha_history[e] - r.alpha_history[e]).norm() == 0);
  // a checkpoint with a cost term and a search without one (or another budget) do not mix
  auto none = o;
  none.bilevel.cost = {};
  vp::prompted_vit<float> third(vp::vit<float>(tiny_vit(), 3), {.prompts = 2, .seed = 3});
  CHECK_THROWS_WITH(vp::search(third, data, none), Catch::Contains("had a cost term, this one has none"));
  auto other_budget = o;
  other_budget.bilevel.cost.budget = budget + 1;
  CHECK_THROWS_WITH(vp::search(third, data, other_budget), Catch::Contains("settings differ") && Catch::Contains("budget"));
  // a budget below the cheapest genotype is refused before any work
  auto too_small = cost_quick();
  too_small.bilevel.cost = vp::make_cost_objective(table, vp::cost_kind::params, 0.0, whole.cheapest() - 1);
  CHECK_THROWS_WITH(vp::search(third, data, too_small), Catch::Contains("below the cheapest genotype"));
}

TEST_CASE("perturbation selection within a budget keeps the genotype within it", "[search][cost][budget][select]") {
  auto data = tiny_data(24);
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 4), {.prompts = 2, .seed = 4});
  vp::search(m, data, cost_quick());
  const vp::op_costs table = vp::param_costs(m);
  vp::cost_objective c = vp::make_cost_objective(table, vp::cost_kind::params);
  for (double share : {0.0, 0.3, 0.6}) {
    c.budget = c.cheapest() + share * (c.costliest() - c.cheapest());
    const auto r = vp::select_by_perturbation(
        m, data, {.finetune_epochs = 0, .batch = 6, .val_fraction = 0.5, .progress = false, .cost = c});
    INFO("budget " << *c.budget);
    CHECK(c.of(vp::op_positions<vp::default_ops>(r.found)) <= *c.budget);
    if (share == 0.0) CHECK(r.found.names() == std::vector<std::string>{"affine", "affine"});
  }
}

TEST_CASE("the lr grid tries every weight decay, widens past an edge the best sits at, and says so", "[train][lr_grid]") {
  auto data = tiny_data(24);
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 8), {.prompts = 2, .seed = 8});
  // with two lrs the best is always at an edge: widening adds the next value past it
  vp::lr_grid_options o{.grid = {1e-3, 0.05}, .weight_decays = {0, 1e-4}, .widen = 0, .epochs = 2, .batch = 6,
                        .val_fraction = 0.5, .progress = false};
  const auto narrow = vp::choose_w_lr(m, data, o);
  CHECK(narrow.lrs == std::vector<double>{1e-3, 1e-3, 0.05, 0.05});
  CHECK(narrow.weight_decays == std::vector<double>{0, 1e-4, 0, 1e-4});
  CHECK(narrow.widened.empty());
  REQUIRE(!narrow.at_edge.empty());
  o.widen = 1;
  const auto wide = vp::choose_w_lr(m, data, o);
  REQUIRE(!wide.widened.empty());
  const double next = narrow.best == 0.05 ? 0.05 * 0.05 / 1e-3 : 1e-3 * 1e-3 / 0.05;
  CHECK(std::count(wide.lrs.begin(), wide.lrs.end(), next) == (narrow.best_weight_decay == 1e-4 ? 3 : 2));
  if (narrow.best_weight_decay == 1e-4) CHECK(std::count(wide.weight_decays.begin(), wide.weight_decays.end(), 1e-3) == 3);
  CHECK(wide.best_accuracy == *std::max_element(wide.val_accuracy.begin(), wide.val_accuracy.end()));
  CHECK(wide.best_accuracy >= narrow.best_accuracy);
  for (std::size_t i = 0; i < narrow.lrs.size(); ++i) CHECK(wide.val_accuracy[i] == narrow.val_accuracy[i]);
  o.weight_decays = {-1};
  CHECK_THROWS_WITH(vp::choose_w_lr(m, data, o), Catch::Contains("weight decay -1"));
  o.weight_decays = {};
  o.widen = -1;
  CHECK_THROWS_WITH(vp::choose_w_lr(m, data, o), Catch::Contains("widen"));
}

TEST_CASE("the front marks the points no other beats, and is written as a table and a picture", "[report][front]") {
  const vpdarts_test::temp_dir dir("vpdarts-front-test");
  std::vector<vp::report::front_point> pts{{.label = "0", .accuracy = 0.8, .params = 100, .latency_ms = 1.0},
                                           {.label = "1", .accuracy = 0.9, .params = 300, .latency_ms = 1.0},
                                           {.label = "2", .accuracy = 0.85, .params = 400, .latency_ms = 1.2},
                                           {.label = "3", .accuracy = 0.7, .params = 100, .latency_ms = 0.5}};
  vp::report::mark_front(pts);
  CHECK(pts[0].on_front);
  CHECK(pts[1].on_front);
  CHECK(!pts[2].on_front);  // 1 is more accurate, smaller and faster
  CHECK(pts[3].on_front);   // the fastest
  vp::report::write_front_csv(dir / "front.csv", pts);
  vp::report::write_front_png(dir / "front.png", pts, "test front");
  std::ifstream in(dir / "front.csv");
  std::string header, first;
  std::getline(in, header);
  std::getline(in, first);
  CHECK(header == "budget,accuracy,trainable_params,latency_ms,on_front,genotype");
  CHECK(first.rfind("0,0.8,100,1,1,", 0) == 0);
  CHECK(std::filesystem::file_size(dir / "front.png") > 1000);
  pts[2].accuracy = std::nan("");
  CHECK_THROWS_WITH(vp::report::front_picture(pts, "x"), Catch::Contains("not finite"));
  CHECK_THROWS_WITH(vp::report::front_picture({}, "x"), Catch::Contains("no point"));
}
