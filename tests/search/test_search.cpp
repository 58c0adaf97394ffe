// The search loop: splits, warm-up, the alpha trajectory, the alpha lr rule,
// determinism, bad input, and the checkpoint (search_state) it resumes from.
#include "pch.hpp"

#include <numeric>

namespace vp = vpdarts;
using vpdarts_test::tiny_vit;
using vpdarts_test::tiny_data;

namespace {

vp::search_options quick() { return vpdarts_test::quick_search(3); }

}  // namespace

TEST_CASE("search records alpha every epoch and moves it only after warm-up", "[search][loop]") {
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 1), {.prompts = 2, .seed = 1});
  const vp::matrix<double> start = m.softmax_alpha();
  auto data = tiny_data(24);
  auto r = vp::search(m, data, quick());
  REQUIRE(r.alpha_history.size() == 3);
  CHECK((r.alpha_history[0] - start).norm() == 0);  // warm-up epoch: w only
  CHECK((r.alpha_history[2] - start).norm() > 0);
  CHECK(r.alpha_lr == Approx(6.0 / (2 * 2)));     // 2 steps per epoch x 2 alpha epochs
  CHECK(r.found.layers.size() == 2);
  CHECK(r.found.names() == m.derive().names());
  CHECK(r.train_loss.size() == 3);
  CHECK(std::isnan(r.val_loss[0]));
  CHECK(std::isfinite(r.val_loss[2]));
}

TEST_CASE("search is deterministic for a seed", "[search][loop]") {
  auto data = tiny_data(24);
  auto run = [&](vp::darts_order order) {
    vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 2), {.prompts = 2, .seed = 2});
    auto o = quick();
    o.bilevel.order = order;
    auto r = vp::search(m, data, o);
    return std::make_pair(r.found.names(), r.alpha_history.back());
  };
  for (auto order : {vp::darts_order::first, vp::darts_order::second}) {
    auto a = run(order), b = run(order);
    CHECK(a.first == b.first);
    CHECK((a.second - b.second).norm() == 0);
  }
}

TEST_CASE("interrupt_scope stops a search between two steps; it resumes from its last epoch's checkpoint", "[search][resume]") {
  auto data = tiny_data(24);
  const vpdarts_test::temp_dir dir("vpdarts-interrupt-test");
  auto o = quick();
  o.epochs = 4;
  vp::prompted_vit<float> straight(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 7});
  const auto whole = vp::search(straight, data, o);
  o.checkpoint = dir / "search.safetensors";
  o.resume = true;
  long polls = 0, epochs_seen = 0;
  const long steps = (24 - vp::data::val_count(24, o.val_fraction, o.batch, "t")) / o.batch;
  o.on_epoch = [&](long epoch, const vp::matrix<double>&, double, double) { epochs_seen = epoch; };
  {
    vp::prompted_vit<float> first(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 7});
    // asked to stop in the middle of epoch 3: that step is the last one
    vp::interrupt_scope stop([&] { return ++polls == 2 * steps + 1; });
    CHECK_THROWS_WITH(vp::search(first, data, o), Catch::Contains("stopped at epoch 3 step 1 as asked"));
  }
  CHECK(polls == 2 * steps + 1);
  CHECK(epochs_seen == 2);
  CHECK_FALSE(vp::interrupt_scope::requested());  // the scope ended with its block
  vp::prompted_vit<float> second(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 99});
  const auto resumed = vp::search(second, data, o);
  CHECK(resumed.resumed_from == 2);
  CHECK(resumed.found.names() == whole.found.names());
  CHECK((resumed.alpha_history.back() - whole.alpha_history.back()).norm() == 0);
  CHECK(resumed.train_loss == whole.train_loss);
}

TEST_CASE("an interrupted search resumes from its checkpoint to the uninterrupted result", "[search][resume]") {
  auto data = tiny_data(24);
  const vpdarts_test::temp_dir dir("vpdarts-resume-test");
  struct interrupted {};
  for (auto order : {vp::darts_order::first, vp::darts_order::second}) {
    auto o = quick();
    o.epochs = 4;
    o.bilevel.order = order;
    vp::prompted_vit<float> straight(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 7});
    const auto whole = vp::search(straight, data, o);

    o.checkpoint = dir / "search.safetensors";
    std::filesystem::remove(o.checkpoint);
    o.resume = true;  // no checkpoint yet: a fresh start
    o.on_epoch = [](long epoch, const vp::matrix<double>&, double, double) {
      if (epoch == 2) throw interrupted{};
    };
    {
      vp::prompted_vit<float> first(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 7});
      CHECK_THROWS_AS(vp::search(first, data, o), interrupted);
    }
    o.on_epoch = {};
    vp::prompted_vit<float> second(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 99});  // state comes from the file
    const auto resumed = vp::search(second, data, o);
    CHECK(resumed.resumed_from == 2);
    REQUIRE(resumed.alpha_history.size() == 4);
    CHECK(resumed.found.names() == whole.found.names());
    for (std::size_t e = 0; e < 4; ++e) CHECK((resumed.alpha_history[e] - whole.alpha_history[e]).norm() == 0);
    CHECK(resumed.train_loss == whole.train_loss);
    CHECK((second.alpha().value() - straight.alpha().value()).norm() == 0);
    auto ws = second.weights(), wt = straight.weights();
    for (std::size_t i = 0; i < ws.size(); ++i) CHECK((ws[i]->value() - wt[i]->value()).norm() == 0);

    // other settings are refused, naming what differs
    auto changed = o;
    changed.batch = 4;
    vp::prompted_vit<float> third(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 7});
    CHECK_THROWS_WITH(vp::search(third, data, changed), Catch::Contains("settings differ") && Catch::Contains("batch"));
  }
  // a file that is not a search checkpoint
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 7});
  m.save_state(dir / "state.safetensors");
  auto o = quick();
  o.checkpoint = dir / "state.safetensors";
  o.resume = true;
  CHECK_THROWS_WITH(vp::search(m, data, o), Catch::Contains("not a search checkpoint"));
}

TEST_CASE("search rejects bad input clearly", "[search][loop][errors]") {
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 3), {.prompts = 2});
  auto o = quick();
  o.batch = 20;
  CHECK_THROWS_WITH(vp::search(m, tiny_data(24), o), Catch::Contains("batch 20") && Catch::Contains("12 search-val"));
  CHECK_THROWS_WITH(vp::search(m, tiny_data(24, {5}), quick()), Catch::Contains("1 class"));
  o = quick();
  o.warmup_epochs = 3;
  CHECK_THROWS_AS(vp::search(m, tiny_data(24), o), vp::config_error);
  // a NaN in the data stops the search naming the step
  auto bad = tiny_data(24);
  bad.images.pixels.setConstant(std::numeric_limits<float>::quiet_NaN());
  CHECK_THROWS_WITH(vp::search(m, bad, quick()), Catch::Contains("epoch 1 step 1") && Catch::Contains("NaN"));
  vp::prompted_vit<float> derived(vp::vit<float>(tiny_vit(), 3), vp::genotype::uniform("add", 2), {.prompts = 2});
  CHECK_THROWS_WITH(vp::search(derived, tiny_data(24), quick()), Catch::Contains("derived model"));
}

TEST_CASE("a checkpoint that was edited, is inconsistent, or belongs to other data is refused", "[search][resume][errors]") {
  auto data = tiny_data(24);
  const vpdarts_test::temp_dir dir("vpdarts-resume-hostile");
  auto o = quick();
  o.checkpoint = dir / "search.safetensors";
  o.resume = true;
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 7});
  vp::search(m, data, o);
  // other data (same size and classes, another draw), or another backbone of the same shape
  auto other = vp::data::make_synthetic<float>({.image = 8, .count = 24, .seed = 5, .classes = {5, 6, 7}});
  vp::prompted_vit<float> a(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 7});
  CHECK_THROWS_WITH(vp::search(a, other, o), Catch::Contains("settings differ") && Catch::Contains("data ("));
  vp::prompted_vit<float> b(vp::vit<float>(tiny_vit(), 8), {.prompts = 2, .seed = 7});
  CHECK_THROWS_WITH(vp::search(b, data, o), Catch::Contains("settings differ") && Catch::Contains("backbone ("));
  // the precision of the frozen products is recorded: a float32 checkpoint does not resume in bf16
  {
    vp::prompted_vit<float> c(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 7});
    vp::bilevel_optimizer<float, vp::default_ops> opt(c, o.bilevel);
    nlohmann::json fp = vp::search_fingerprint(o, c, data);
    CHECK(fp["precision"] == "fp32");
    CHECK(fp.contains("fp32_products"));
    fp["precision"] = "bf16";
    CHECK_THROWS_WITH(vp::search_state::load(o.checkpoint, c, opt, fp, data.size(),
                                             vp::data::val_count(data.size(), o.val_fraction, o.batch, "search"), o.epochs),
                      Catch::Contains("settings differ: ") && Catch::Contains("precision (checkpoint \"fp32\", now \"bf16\")"));
  }
  // an edited state: the checksum no longer matches
  std::string bytes = vpdarts_test::read_bytes(o.checkpoint);
  const auto at = bytes.find("\\\"epoch\\\":3");  // inside the header, the metadata's quotes are escaped
  REQUIRE(at != std::string::npos);
  bytes[at + 10] = '2';  // as if only 2 of the 3 epochs were done
  vpdarts_test::write_bytes(dir / "edited.safetensors", bytes);
  auto edited = o;
  edited.checkpoint = dir / "edited.safetensors";
  vp::prompted_vit<float> c(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 7});
  CHECK_THROWS_WITH(vp::search(c, data, edited), Catch::Contains("checksum does not match"));
  // a state written with a valid checksum but impossible rows: refused, nothing loaded
  vp::prompted_vit<float> d(vp::vit<float>(tiny_vit(), 7), {.prompts = 2, .seed = 7});
  vp::bilevel_optimizer<float, vp::default_ops> opt(d, o.bilevel);
  const auto fingerprint = vp::search_fingerprint(o, d, data);
  for (int bad = 0; bad < 3; ++bad) {
    vp::search_state s;
    s.epoch = 1;
    s.rows = vp::data::split_rows(24, 12, s.rng);
    s.val_pos = 12;
    s.alpha_history = {d.softmax_alpha()};
    s.train_loss = s.val_loss = {1.0};
    if (bad == 0) s.rows.val.clear();
    if (bad == 1) s.rows.train.pop_back();
    if (bad == 2) s.val_pos = -1;
    s.save(dir / "bad.safetensors", d, opt, fingerprint);
    const vp::matrix<float> alpha = d.alpha().value();
    CHECK_THROWS_WITH(vp::search_state::load(dir / "bad.safetensors", d, opt, fingerprint, 24, 12, 2),
                      Catch::Contains("inconsistent search state"));
    CHECK((d.alpha().value() - alpha).norm() == 0);
  }
}

namespace {

/// The search space of the selection tests: affine (whose S[0] = -1 turns its block's
/// input to zero, so its output carries nothing of the image) and add.
using affine_add = vp::op_list<vp::affine, vp::add_prompt>;

}  // namespace

TEST_CASE("perturbation selection picks the operator whose removal costs most, where alpha's argmax is wrong",
          "[search][select]") {
  auto data = vp::data::make_synthetic<float>({.image = 8, .count = 60, .seed = 4, .classes = {0, 1, 7}, .noise = 0.02});
  vp::vit<float> backbone(vp::vit_config{8, 3, 4, 16, 2, 2, 32, 3}, 3, vp::vit_init::xavier);
  // features that tell the classes apart
  const auto pre = vp::pretrain(backbone, data, data, {.epochs = 40, .batch = 10, .lr = 3e-3, .progress = false});
  INFO("pretrained backbone: accuracy " << pre.test_accuracy);
  vp::prompted_vit<float, affine_add> m(backbone, {.prompts = 2, .classes = 3, .seed = 3});
  for (vp::index l = 0; l < 2; ++l) {
    m.op_parameters(l, 0)[0].value().row(0).setConstant(-1);  // affine: x * 0 + 0
    m.alpha().value().row(l) << 0.2f, 0.0f;                   // alpha prefers affine: 0.55 against 0.45
  }
  // train w with affine held where it is (lr multiplier 0): the head learns from add's share of the mixture
  vp::w_optimizer_options w{.lr = 0.1, .op_lr_mult = {0.0, 1.0}};
  vp::train(m, data, {.epochs = 60, .batch = 10, .w = w, .progress = false});
  const vp::matrix<float> alpha = m.alpha().value();
  std::vector<vp::matrix<float>> before;
  for (auto* p : m.weights()) before.push_back(p->value());
  REQUIRE(m.derive().names() == std::vector<std::string>{"affine", "affine"});

  const auto r = vp::select_by_perturbation(
      m, data, {.finetune_epochs = 1, .batch = 10, .val_fraction = 0.5, .w = w, .seed = 1, .progress = false});
  CHECK(r.found.names() == std::vector<std::string>{"add", "add"});
  REQUIRE(r.removed.size() == 2);
  for (std::size_t l = 0; l < 2; ++l) {
    // without add the features are the same for every image: one class for all (a third right at most + luck)
    CHECK(r.removed[l][1].accuracy < r.removed[l][0].accuracy);
    CHECK(r.removed[l][1].loss > r.removed[l][0].loss);
  }
  INFO("search-val accuracy " << r.before[0].accuracy << ", without add " << r.removed[0][1].accuracy << ", without affine "
                               << r.removed[0][0].accuracy);
  CHECK(r.before[0].accuracy > 0.6);
  CHECK(r.argmax_differs.size() == 2);
  CHECK(r.found.layers[0].weights.size() == 2);  // alpha's weights are kept for the report
  // the model is left as it was
  CHECK((m.alpha().value() - alpha).norm() == 0);
  const auto ws = m.weights();
  for (std::size_t i = 0; i < ws.size(); ++i) CHECK((ws[i]->value() - before[i]).norm() == 0);
  // deterministic; and a derived model has nothing to select
  CHECK(vp::select_by_perturbation(m, data, {.finetune_epochs = 1, .batch = 10, .val_fraction = 0.5, .w = w, .seed = 1,
                                             .progress = false})
            .removed[1][0]
            .accuracy == r.removed[1][0].accuracy);
  vp::prompted_vit<float, affine_add> derived(backbone, r.found, {.prompts = 2});
  CHECK_THROWS_WITH(vp::select_by_perturbation(derived, data, {}), Catch::Contains("derived model"));
  CHECK_THROWS_WITH(vp::select_by_perturbation(m, data, {.finetune_epochs = -1}), Catch::Contains("finetune_epochs"));
  CHECK_THROWS_WITH(vp::select_by_perturbation(m, data, {.batch = 40}), Catch::Contains("batch"));
  CHECK(vp::parse_selection_rule("perturbation") == vp::selection_rule::perturbation);
  CHECK_THROWS_WITH(vp::parse_selection_rule("max"), Catch::Contains("argmax or perturbation"));
}

TEST_CASE("best of several genotypes: each trained on search-train, the best search-val score kept", "[search][select]") {
  auto data = vp::data::make_synthetic<float>({.image = 8, .count = 60, .seed = 4, .classes = {0, 1, 7}, .noise = 0.02});
  const vp::vit<float> backbone(tiny_vit(), 3);
  const std::vector<vp::genotype> gs{vp::genotype::uniform("affine", 2), vp::genotype::uniform("add", 2),
                                     vp::genotype::uniform("concat", 2)};
  const vp::genotype_score_options o{.epochs = 4, .batch = 10, .val_fraction = 0.5, .w = {.lr = 0.1}, .prompts = 2,
                                     .seed = 5, .progress = false};
  const auto r = vp::score_genotypes(backbone, gs, data, o);
  REQUIRE(r.val.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(!r.val[i].better_than(r.val[r.best]));
    // the score is that of the genotype trained alone on search-train (the split search() makes), scored on search-val
    std::mt19937_64 rng(o.seed);
    const auto split = vp::data::split_rows(60, 30, rng);
    vp::prompted_vit<float> model(backbone, gs[i], {.prompts = 2, .classes = 3, .seed = o.seed});
    vp::train(model, data.select(split.train), {.epochs = 4, .batch = 10, .w = o.w, .seed = o.seed, .progress = false});
    const auto s = vp::score(model, data.select(split.val));
    CHECK(s.accuracy == r.val[i].accuracy);
    CHECK(s.loss == Approx(r.val[i].loss).epsilon(1e-9));
    CHECK(r.trainable[i] == model.trainable_params());
  }
  CHECK_THROWS_WITH(vp::score_genotypes(backbone, {}, data, o), Catch::Contains("no genotype"));
  CHECK_THROWS_WITH(vp::score_genotypes(backbone, {vp::genotype::uniform("add", 3)}, data, o), Catch::Contains("layers"));
  CHECK_THROWS_WITH(vp::score_genotypes(backbone, {vp::genotype::uniform("nope", 2)}, data, o), Catch::Contains("nope"));
}

TEST_CASE("best of several genotypes by K-fold cross-validation scores every training image once", "[search][select]") {
  auto data = vp::data::make_synthetic<float>({.image = 8, .count = 45, .seed = 4, .classes = {0, 1, 7}, .noise = 0.02});
  const vp::vit<float> backbone(tiny_vit(), 3);
  const std::vector<vp::genotype> gs{vp::genotype::uniform("affine", 2), vp::genotype::uniform("add", 2)};
  const vp::genotype_score_options o{.epochs = 2, .batch = 10, .w = {.lr = 0.1}, .prompts = 2, .seed = 5, .folds = 3,
                                     .progress = false};
  const auto r = vp::score_genotypes(backbone, gs, data, o);
  for (std::size_t i = 0; i < gs.size(); ++i) {
    std::vector<vp::index> rows(45);
    std::iota(rows.begin(), rows.end(), 0);
    std::mt19937_64 rng(o.seed);
    std::shuffle(rows.begin(), rows.end(), rng);
    double correct = 0;
    for (int f = 0; f < 3; ++f) {
      std::vector<vp::index> tr, va;
      for (std::size_t j = 0; j < rows.size(); ++j) (static_cast<int>(j % 3) == f ? va : tr).push_back(rows[j]);
      vp::prompted_vit<float> model(backbone, gs[i], {.prompts = 2, .classes = 3, .seed = o.seed});
      vp::train(model, data.select(tr), {.epochs = 2, .batch = 10, .w = o.w, .seed = o.seed, .progress = false});
      correct += vp::score(model, data.select(va)).accuracy * static_cast<double>(va.size());
    }
    CHECK(r.val[i].accuracy == Approx(correct / 45).epsilon(1e-12));
  }
  auto too_many = o;
  too_many.folds = 46;
  CHECK_THROWS_WITH(vp::score_genotypes(backbone, gs, data, too_many), Catch::Contains("folds is 46"));
  too_many.folds = 2;
  too_many.batch = 40;
  CHECK_THROWS_WITH(vp::score_genotypes(backbone, gs, data, too_many), Catch::Contains("fewer than the batch of 40"));
}
