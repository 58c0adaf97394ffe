// The training loop (run_epochs, apply_gradients and its hook), pretraining,
// retraining and evaluating a derived model, the lr grid, and the linear probe.
#include "pch.hpp"

namespace vp = vpdarts;
using vpdarts_test::tiny_vit;
using vpdarts_test::tiny_data;

namespace {

/// An optimiser that records the learning rates it was given.
struct lr_recorder {
  std::vector<double> lrs;
  void set_lr(double lr) { lrs.push_back(lr); }
  void step() {}
};

}  // namespace

TEST_CASE("the loop shuffles, drops the partial batch, follows the schedule and names failing steps", "[train][loop]") {
  std::vector<vp::index> rows = vp::all_rows(10);
  std::mt19937_64 rng(3);
  lr_recorder opt;
  std::vector<std::vector<vp::index>> seen;
  std::vector<vp::epoch_report> epochs;
  const vp::loop_plan plan{.name = "unit", .epochs = 3, .batch = 4, .peak_lr = 0.5, .warmup_epochs = 1, .progress = false};
  const auto r = vp::run_epochs(
      plan, rows, rng, opt,
      [&](long e, std::span<const vp::index> batch) {
        seen.emplace_back(batch.begin(), batch.end());
        return vp::step_report{.loss = static_cast<double>(e + 1), .images = 4, .correct = 2};
      },
      [&](const vp::epoch_report& e) { epochs.push_back(e); });
  REQUIRE(seen.size() == 6);  // 2 full batches of 4 per epoch; 2 rows left out each time
  const vp::optim::warmup_cosine schedule{0.5, 2, 6};
  REQUIRE(opt.lrs.size() == 6);
  for (long s = 0; s < 6; ++s) CHECK(opt.lrs[static_cast<std::size_t>(s)] == Approx(schedule(s)));
  std::set<vp::index> first(seen[0].begin(), seen[0].end());
  first.insert(seen[1].begin(), seen[1].end());
  CHECK(first.size() == 8);  // no row twice in an epoch
  CHECK(seen[0] != seen[2]);  // reshuffled
  REQUIRE(epochs.size() == 3);
  CHECK(epochs[2].epoch == 3);
  CHECK(epochs[2].loss == Approx(3.0));
  CHECK(epochs[2].accuracy == Approx(0.5));
  CHECK(std::isnan(epochs[2].val_loss));
  CHECK(r.last.epoch == 3);
  // a resumed loop runs only the epochs left
  opt.lrs.clear();
  vp::loop_plan later = plan;
  later.first_epoch = 2;
  vp::run_epochs(later, rows, rng, opt, [&](long e, std::span<const vp::index>) {
    CHECK(e == 2);
    return vp::step_report{};
  });
  CHECK(opt.lrs.size() == 2);
  // a value_error names the loop, the epoch and the step
  CHECK_THROWS_WITH(vp::run_epochs(plan, rows, rng, opt,
                                   [&](long e, std::span<const vp::index>) -> vp::step_report {
                                     if (e == 1) throw vp::value_error("boom");
                                     return {};
                                   }),
                    Catch::Contains("unit: epoch 2 step 1: boom"));
  vp::loop_plan big = plan;
  big.batch = 11;
  CHECK_THROWS_WITH(vp::run_epochs(big, rows, rng, opt, [](long, std::span<const vp::index>) { return vp::step_report{}; }),
                    Catch::Contains("batch 11"));
  big = plan;
  big.epochs = 0;
  CHECK_THROWS_AS(vp::run_epochs(big, rows, rng, opt, [](long, std::span<const vp::index>) { return vp::step_report{}; }),
                  vp::config_error);
}

TEST_CASE("every trainer passes its gradients through the hook before the step", "[train][hook]") {
  auto data = tiny_data(30);
  // A hook that doubles the gradients is the same as doubling the learning rate (no clipping, no momentum).
  auto run = [&](double lr, bool doubling) {
    vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 5), vp::genotype::uniform("add", 2), {.prompts = 2});
    long calls = 0;
    vp::gradient_hook<float> hook;
    if (doubling)
      hook = [&](std::span<vp::parameter<float>* const> ps) {
        ++calls;
        for (auto* p : ps) p->grad() *= 2.0f;
      };
    vp::train(m, data, {.epochs = 2, .batch = 10, .w = {.lr = lr, .momentum = 0, .weight_decay = 0, .grad_clip = 0},
                        .progress = false}, hook);
    std::vector<vp::matrix<float>> out;
    for (auto* p : m.weights()) out.push_back(p->value());
    return std::make_pair(out, calls);
  };
  const auto [doubled, calls] = run(0.05, true);
  const auto [plain, none] = run(0.1, false);
  CHECK(calls == 6);  // 3 steps x 2 epochs
  CHECK(none == 0);
  for (std::size_t i = 0; i < plain.size(); ++i) CHECK((doubled[i] - plain[i]).norm() <= 1e-5f * (1 + plain[i].norm()));

  // the search reduces the alpha gradient and w's (first order: two calls a step after warm-up)
  vp::prompted_vit<float> s(vp::vit<float>(tiny_vit(), 1), {.prompts = 2, .seed = 1});
  long search_calls = 0;
  vp::search_options so;
  so.epochs = 2;
  so.warmup_epochs = 1;
  so.batch = 6;
  so.val_fraction = 0.5;
  so.progress = false;
  vp::search(s, tiny_data(24), so, vp::gradient_hook<float>([&](std::span<vp::parameter<float>* const>) { ++search_calls; }));
  CHECK(search_calls == 2 + 2 * 2);  // warm-up: 2 w steps; then 2 steps of alpha + w
}

TEST_CASE("pretraining trains every parameter and reports accuracy", "[train][pretrain]") {
  vp::vit<float> m(vp::vit_config{8, 3, 4, 16, 1, 2, 32, 3}, 1, vp::vit_init::xavier);
  auto train = vp::data::make_synthetic<float>({.image = 8, .count = 90, .seed = 1, .classes = {0, 1, 2}});
  auto test = vp::data::make_synthetic<float>({.image = 8, .count = 30, .seed = 2, .classes = {0, 1, 2}});
  const vp::matrix<float> qkv = m.blocks[0].attn.qkv.weight.value();
  const double before = vp::accuracy(m, train);
  const auto r = vp::pretrain(m, train, test, {.epochs = 8, .batch = 10, .lr = 3e-3, .progress = false});
  CHECK((m.blocks[0].attn.qkv.weight.value() - qkv).norm() > 0);  // the backbone moved too
  CHECK(r.train_accuracy > before + 0.1);
  CHECK(r.test_accuracy == Approx(vp::accuracy(m, test)));
  CHECK(r.seconds > 0);
  CHECK_THROWS_WITH(vp::pretrain(m, train, test, {.batch = 91, .progress = false}), Catch::Contains("batch 91"));
  auto five = vp::data::make_synthetic<float>({.image = 8, .count = 50, .seed = 1, .classes = {0, 1, 2, 3, 4}});
  CHECK_THROWS_WITH(vp::pretrain(m, five, five, {.progress = false}), Catch::Contains("5 classes"));
}

TEST_CASE("a derived model retrains and evaluates", "[train][retrain]") {
  auto data = tiny_data(30);
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 5), vp::genotype::uniform("concat", 2), {.prompts = 2});
  auto mean_loss = [&] {
    vp::tape<float> t;
    vp::no_grad<float> guard(t);
    return static_cast<double>(vp::cross_entropy(m.logits(t, data.images), data.labels).item());
  };
  const double initial = mean_loss();
  CHECK(initial == Approx(std::log(3.0)).epsilon(1e-6));  // zero head: uniform logits
  const double last_epoch = vp::train(m, data, {.epochs = 15, .batch = 10, .w = {.lr = 0.1}, .progress = false});
  CHECK(std::isfinite(last_epoch));
  CHECK(mean_loss() < initial);
  // evaluate() counts argmax hits
  vp::tape<float> t;
  auto logits = m.logits(t, data.images).value();
  int hits = 0;
  for (vp::index i = 0; i < data.size(); ++i) {
    vp::index k;
    logits.row(i).maxCoeff(&k);
    hits += k == data.labels[static_cast<std::size_t>(i)];
  }
  CHECK(vp::evaluate(m, data, 7) == Approx(hits / 30.0));
  CHECK_THROWS_AS(vp::train(m, data, {.batch = 31}), vp::config_error);
}

TEST_CASE("the w learning rate is chosen on search-val and the model is left as it was", "[train][lr_grid]") {
  auto data = tiny_data(24);
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 8), {.prompts = 2, .seed = 8});
  std::vector<vp::matrix<float>> before;
  for (auto* p : m.weights()) before.push_back(p->value());
  vp::lr_grid_options o{.grid = {1e-4, 0.05, 1e30}, .epochs = 2, .batch = 6, .val_fraction = 0.5, .progress = false};
  o.w.grad_clip = 0;
  const auto r = vp::choose_w_lr(m, data, o);
  REQUIRE(r.lrs.size() == 3);
  CHECK(r.val_accuracy[2] == 0);            // diverged
  CHECK(std::isnan(r.train_loss[2]));
  CHECK(std::isfinite(r.train_loss[0]));
  CHECK(r.best != 1e30);
  const auto w = m.weights();
  for (std::size_t i = 0; i < w.size(); ++i) CHECK((w[i]->value() - before[i]).norm() == 0);
  // deterministic
  CHECK(vp::choose_w_lr(m, data, o).val_accuracy == r.val_accuracy);
  o.grid = {};
  CHECK_THROWS_WITH(vp::choose_w_lr(m, data, o), Catch::Contains("empty"));
  o.grid = {0.1, -1};
  CHECK_THROWS_WITH(vp::choose_w_lr(m, data, o), Catch::Contains("not positive"));
}

TEST_CASE("the linear probe's lr is chosen on search-val, and a derived model's lr alike", "[train][lr_grid]") {
  vp::vit<float> bb(vp::vit_config{8, 3, 4, 16, 1, 2, 32, 5}, 2, vp::vit_init::xavier);
  auto data = vp::data::make_synthetic<float>({.image = 8, .count = 40, .seed = 1, .classes = {5, 6, 7}});
  vp::lr_grid_options o{.grid = {1e-6, 0.5}, .epochs = 10, .batch = 10, .val_fraction = 0.5, .progress = false};
  const auto r = vp::choose_probe_lr(bb, data, o);
  REQUIRE(r.val_accuracy.size() == 2);
  // each grid value is linear_probe() on search-train, scored on search-val (the split search() makes)
  std::mt19937_64 rng(o.seed);
  const auto split = vp::data::split_rows(40, 20, rng);
  for (std::size_t i = 0; i < 2; ++i) {
    vp::probe_options p{.epochs = 10, .batch = 10, .progress = false};
    p.w.lr = o.grid[i];
    CHECK(vp::linear_probe(bb, data.select(split.train), data.select(split.val), p).test_accuracy == r.val_accuracy[i]);
  }
  CHECK(r.best == (r.val_accuracy[1] > r.val_accuracy[0] ? 0.5 : 1e-6));
  CHECK(r.train_loss[1] < r.train_loss[0]);  // 1e-6 barely moves the zero head from ln 3
  o.epochs = 0;
  CHECK_THROWS_WITH(vp::choose_probe_lr(bb, data, o), Catch::Contains("epochs"));
  // a derived model: the grid starts every lr from the same fresh parameters
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 8), vp::genotype::uniform("add", 2), {.prompts = 2, .classes = 3});
  const auto g = vp::choose_w_lr(m, data, {.grid = {0.01, 0.1}, .epochs = 2, .batch = 10, .val_fraction = 0.5, .progress = false});
  CHECK(g.val_accuracy == vp::choose_w_lr(m, data, {.grid = {0.01, 0.1}, .epochs = 2, .batch = 10, .val_fraction = 0.5,
                                                    .progress = false}).val_accuracy);
}

TEST_CASE("the linear probe trains the head alone on frozen features", "[train][probe]") {
  vp::vit<float> m(vp::vit_config{8, 3, 4, 16, 1, 2, 32, 5}, 2, vp::vit_init::xavier);
  auto train = vp::data::make_synthetic<float>({.image = 8, .count = 60, .seed = 1, .classes = {5, 6, 7}});
  auto test = vp::data::make_synthetic<float>({.image = 8, .count = 30, .seed = 2, .classes = {5, 6, 7}});
  const vp::matrix<float> before = m.blocks[0].attn.qkv.weight.value();
  const auto r = vp::linear_probe(m, train, test, {.epochs = 20, .batch = 10, .progress = false});
  CHECK(m.config().classes == 3);
  CHECK(r.trainable_params == 3 * 16 + 3);
  CHECK(r.train_loss < std::log(3.0) - 0.05);  // the zero head starts at ln 3
  CHECK(r.train_accuracy > 0.4);
  CHECK((m.blocks[0].attn.qkv.weight.value() - before).norm() == 0);  // the backbone did not move
  // the probe's head is the model's head: the model's accuracy is the probe's
  CHECK(vp::accuracy(m, test) == Approx(r.test_accuracy));
  // no test set: nothing is evaluated
  const vp::data::labelled_images<float> none;
  CHECK(std::isnan(vp::linear_probe(m, train, none, {.epochs = 1, .batch = 10, .progress = false}).test_accuracy));

  CHECK_THROWS_WITH(vp::linear_probe(m, train.select(std::vector<vp::index>{0}), test, {.progress = false}),
                    Catch::Contains("batch 32"));
  auto one = vp::data::make_synthetic<float>({.image = 8, .count = 10, .seed = 1, .classes = {5}});
  CHECK_THROWS_WITH(vp::linear_probe(m, one, one, {.progress = false}), Catch::Contains("1 class"));
}
