// The search loop: splits, warm-up, the alpha trajectory, the alpha lr rule,
// determinism and bad input; retraining and evaluation of a derived model.
#include "pch.hpp"

namespace vp = vpdarts;

namespace {

vp::vit_config tiny() { return {8, 3, 4, 8, 2, 2, 16, 3}; }

vp::data::labelled_images<float> tiny_data(vp::index count, std::vector<int> classes = {5, 6, 7}) {
  return vp::data::make_synthetic<float>({.image = 8, .count = count, .seed = 4, .classes = classes});
}

vp::search_options quick() {
  vp::search_options o;
  o.epochs = 3;
  o.warmup_epochs = 1;
  o.batch = 6;
  o.val_fraction = 0.5;
  o.progress = false;
  return o;
}

}  // namespace

TEST_CASE("search records alpha every epoch and moves it only after warm-up", "[search][loop]") {
  vp::prompted_vit<float> m(vp::vit<float>(tiny(), 1), {.prompts = 2, .seed = 1});
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
    vp::prompted_vit<float> m(vp::vit<float>(tiny(), 2), {.prompts = 2, .seed = 2});
    auto o = quick();
    o.darts.order = order;
    auto r = vp::search(m, data, o);
    return std::make_pair(r.found.names(), r.alpha_history.back());
  };
  for (auto order : {vp::darts_order::first, vp::darts_order::second}) {
    auto a = run(order), b = run(order);
    CHECK(a.first == b.first);
    CHECK((a.second - b.second).norm() == 0);
  }
}

TEST_CASE("search rejects bad input clearly", "[search][loop][errors]") {
  vp::prompted_vit<float> m(vp::vit<float>(tiny(), 3), {.prompts = 2});
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
  vp::prompted_vit<float> derived(vp::vit<float>(tiny(), 3), vp::genotype::uniform("add", 2), {.prompts = 2});
  CHECK_THROWS_WITH(vp::search(derived, tiny_data(24), quick()), Catch::Contains("derived model"));
}

TEST_CASE("a derived model retrains and evaluates", "[search][loop]") {
  auto data = tiny_data(30);
  vp::prompted_vit<float> m(vp::vit<float>(tiny(), 5), vp::genotype::uniform("concat", 2), {.prompts = 2});
  auto mean_loss = [&] {
    vp::tape<float> t;
    vp::no_grad<float> guard(t);
    return static_cast<double>(vp::cross_entropy(m.logits(t, data.images), data.labels).item());
  };
  const double initial = mean_loss();
  CHECK(initial == Approx(std::log(3.0)).epsilon(1e-6));  // zero head: uniform logits
  const double last_epoch = vp::train(m, data, {.epochs = 15, .batch = 10, .lr = 0.1, .progress = false});
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
