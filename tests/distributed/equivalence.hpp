#pragma once
// The runs a data-parallel trainer must reproduce: each function trains or
// evaluates a tiny model with the given data_parallel, and returns what it
// produced. A test runs each once with one process (data_parallel{}) and once
// over several, and compares. Used by tests/train/test_data_parallel.cpp
// (processes as threads) and tests/distributed/test_mpi.cpp (MPI processes).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <vpdarts/vpdarts.hpp>

namespace vpdarts_test::equivalence {

namespace vp = vpdarts;

inline vp::vit_config tiny() { return {8, 3, 4, 8, 2, 2, 16, 3}; }

template <class S>
vp::data::labelled_images<S> data(vp::index count, std::uint64_t seed = 4) {
  return vp::data::make_synthetic<S>({.image = 8, .count = count, .seed = seed, .classes = {5, 6, 7}});
}

/// The largest |a - b| relative to the largest |b| (0 for two empty matrices).
template <class A, class B>
double rel_diff(const A& a, const B& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return INFINITY;
  if (a.size() == 0) return 0;
  const double scale = std::max(static_cast<double>(b.cwiseAbs().maxCoeff()), 1e-30);
  return static_cast<double>((a.template cast<double>() - b.template cast<double>()).cwiseAbs().maxCoeff()) / scale;
}

/// The largest rel_diff over two lists of matrices.
template <class M>
double rel_diff(const std::vector<M>& a, const std::vector<M>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, rel_diff(a[i], b[i]));
  return worst;
}

/// The largest relative difference of two lists of numbers.
inline double rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), 1e-30));
  return worst;
}

template <class S>
std::vector<vp::matrix<S>> values(const std::vector<vp::parameter<S>*>& ps) {
  std::vector<vp::matrix<S>> out;
  for (auto* p : ps) out.push_back(p->value());
  return out;
}

/// What a search produced.
struct search_run {
  std::vector<std::string> genotype;
  std::vector<vp::matrix<double>> alpha;  // softmax(alpha) per epoch
  std::vector<double> train_loss, val_loss;
  long resumed_from = 0;
};

/// Thrown by on_epoch to stop a search after some epochs (its checkpoint written).
struct stop_here {};

/// A 4-epoch search (1 warm-up) on 28 images split 14/14, batch `batch`, alpha's lr `alpha_lr` (0: the
/// auto rule, which gives 1.0 for these 6 alpha steps). With `stop_after` > 0 it stops after that
/// epoch (the checkpoint is written first).
///
/// Float runs compare at alpha lr 0.1: at 1.0 every Adam step moves alpha by about 1 and
/// amplifies float rounding, so that one process's float run is itself only within 1.3e-5 of
/// the double run (and 3 processes within 6e-5); at 0.1 those are 1.5e-6 and 7e-6.
template <class S>
search_run run_search(const vp::data_parallel& dp, vp::darts_order order, vp::index batch,
                      const std::filesystem::path& checkpoint = {}, bool resume = false, long stop_after = 0,
                      double alpha_lr = 0) {
  vp::prompted_vit<S> model(vp::vit<S>(tiny(), 2), {.prompts = 2, .seed = 2});
  vp::search_options o;
  o.epochs = 4;
  o.warmup_epochs = 1;
  o.batch = batch;
  o.val_fraction = 0.5;
  o.progress = false;
  o.bilevel.order = order;
  if (alpha_lr > 0) {
    o.auto_alpha_lr = false;
    o.bilevel.alpha_lr = alpha_lr;
  }
  o.parallel = dp;
  o.checkpoint = checkpoint;
  o.resume = resume;
  if (stop_after > 0)
    o.on_epoch = [&](long e, const vp::matrix<double>&, double, double) {
      if (e == stop_after) throw stop_here{};
    };
  const auto r = vp::search(model, data<S>(28), o);
  return {r.found.names(), r.alpha_history, r.train_loss, r.val_loss, r.resumed_from};
}

/// A fixed hybrid genotype retrained for 2 epochs with crop and flip; the final w and the last loss.
template <class S>
std::pair<std::vector<vp::matrix<S>>, double> run_train(const vp::data_parallel& dp, vp::index batch) {
  vp::genotype g;
  g.ops = {vp::default_ops::names.begin(), vp::default_ops::names.end()};
  g.layers = {{"add", {}}, {"concat", {}}};
  vp::prompted_vit<S> model(vp::vit<S>(tiny(), 3), g, {.prompts = 2, .classes = 3, .seed = 3});
  const double loss = vp::train(model, data<S>(21),
                                {.epochs = 2, .batch = batch, .seed = 5, .progress = false,
                                 .augment = {.crop_padding = 1, .flip = true}, .parallel = dp});
  return {values(model.weights()), loss};
}

/// Accuracy of a search model with random alpha on 23 images.
template <class S>
double run_evaluate(const vp::data_parallel& dp) {
  vp::prompted_vit<S> model(vp::vit<S>(tiny(), 4), {.prompts = 2, .seed = 4});
  return vp::evaluate(model, data<S>(23, 9), 5, dp);
}

/// The lr grid's scores.
template <class S>
vp::lr_grid_result run_lr_grid(const vp::data_parallel& dp) {
  vp::prompted_vit<S> model(vp::vit<S>(tiny(), 5), {.prompts = 2, .seed = 5});
  return vp::choose_w_lr(model, data<S>(28),
                         {.grid = {0.01, 0.1, 1.0}, .epochs = 1, .batch = 5, .val_fraction = 0.5, .seed = 1,
                          .progress = false, .parallel = dp});
}

/// The linear probe's head and its accuracies.
template <class S>
std::pair<std::vector<vp::matrix<S>>, vp::probe_result> run_probe(const vp::data_parallel& dp) {
  vp::vit<S> backbone(tiny(), 6);
  const auto r = vp::linear_probe(backbone, data<S>(22), data<S>(13, 8),
                                  {.epochs = 3, .batch = 5, .seed = 2, .progress = false, .parallel = dp});
  return {values(std::vector<vp::parameter<S>*>{&backbone.head.weight, &backbone.head.bias}), r};
}

/// Every parameter of a ViT pretrained for 2 epochs (AdamW), and its accuracies.
template <class S>
std::pair<std::vector<vp::matrix<S>>, vp::pretrain_result> run_pretrain(const vp::data_parallel& dp) {
  vp::vit<S> m(tiny(), 7, vp::vit_init::xavier);
  const auto r = vp::pretrain(m, data<S>(20), data<S>(11, 3), {.epochs = 2, .batch = 7, .progress = false, .parallel = dp});
  return {values(m.parameters()), r};
}

}  // namespace vpdarts_test::equivalence
