#pragma once
/// @file lr_grid.hpp
/// Choosing w's learning rate and weight decay on search-val (docs/method.md,
/// section 5; VPT's protocol): train on search-train at every (lr, weight decay)
/// of a grid, score on search-val. When the best value sits at an edge of the
/// grid, the grid can widen past it (lr_grid_options::widen). Test images are
/// never read.

#include <cmath>
#include <algorithm>
#include <cstdio>
#include <limits>
#include <string>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "../data/labelled_images.hpp"
#include "../data/split.hpp"
#include "probe.hpp"
#include "retrain.hpp"

namespace vpdarts {

/// How choose_w_lr() trains and splits.
struct lr_grid_options {
  std::vector<double> grid = {};  ///< the learning rates to try
  /// The weight decays to try with every lr (empty: w.weight_decay alone).
  std::vector<double> weight_decays = {};
  /// Times the grid may widen when the best lr is its smallest or largest (one more value past
  /// it, at the ratio of the grid's two outermost values there), or the best weight decay its
  /// largest non-zero one (ten times more); 0 keeps the grid as given.
  int widen = 0;
  long epochs = 2;                ///< epochs of training per lr
  index batch = 32;               ///< batch size of training
  double val_fraction = 0.2;      ///< share of the data held out as search-val (as search() splits it)
  w_optimizer_options w = {};     ///< w's optimiser; its lr is replaced by each grid value
  std::uint64_t seed = 0;         ///< the split, the shuffling (as search() with this seed)
  bool progress = true;           ///< print one line per lr
  data::augment_options augment = {};  ///< augmentation of every training batch (choose_w_lr; the probe has none)
  /// The processes every batch and the scoring are shared over (train/data_parallel.hpp); one by default.
  data_parallel parallel = {};
  /// How the tapes run their kernels (kernels/execution.hpp).
  execution_config execution = {};
};

/// What choose_w_lr measured.
struct lr_grid_result {
  std::vector<double> lrs;            ///< the lr of every trial, in the order tried
  std::vector<double> weight_decays;  ///< the weight decay of every trial
  std::vector<double> val_accuracy;   ///< search-val top-1 accuracy after training w at each trial
  std::vector<double> train_loss;     ///< last-epoch training loss at each trial (NaN when it diverged)
  double best = 0;                    ///< the lr of the best accuracy (on a tie the smaller lr, then the smaller decay)
  double best_weight_decay = 0;       ///< the weight decay of the best accuracy
  double best_accuracy = 0;           ///< the best search-val accuracy
  std::vector<std::string> widened;   ///< what the grid added, and why ("lr 0.001: 0.005 was the smallest")
  std::vector<std::string> at_edge;   ///< what the best still sits at the edge of after widening (empty: inside)
};

namespace detail {

/// Runs `fit(train_set, val_set, lr, weight_decay) -> {train loss, val accuracy}` for every
/// (lr, weight decay) of the grid on the split search() makes with o.seed and o.val_fraction,
/// widening it past an edge the best sits at (o.widen times at most), and keeps the best (a
/// value_error, a diverged run, scores 0).
template <Scalar S, class Fit>
lr_grid_result run_lr_grid(const data::labelled_images<S>& data, const lr_grid_options& o, const char* who, Fit&& fit) {
  if (o.grid.empty()) throw config_error(cat(who, ": the lr grid is empty"));
  for (double lr : o.grid)
    if (!(lr > 0) || !std::isfinite(lr)) throw config_error(cat(who, ": lr ", lr, " in the grid is not positive"));
  for (double wd : o.weight_decays)
    if (!(wd >= 0) || !std::isfinite(wd)) throw config_error(cat(who, ": weight decay ", wd, " in the grid is negative"));
  if (o.widen < 0) throw config_error(cat(who, ": widen is ", o.widen, ", must be >= 0"));
  if (o.epochs < 1) throw config_error(cat(who, ": ", o.epochs, " epochs per lr; at least one is needed"));
  std::mt19937_64 rng(o.seed);
  const data::row_split split = data::split_rows(data.size(), data::val_count(data.size(), o.val_fraction, o.batch, who), rng);
  const auto train_set = data.select(split.train), val_set = data.select(split.val);
  auto sorted = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
  };
  std::vector<double> lrs = sorted(o.grid), wds = sorted(o.weight_decays.empty() ? std::vector<double>{o.w.weight_decay}
                                                                                : o.weight_decays);
  lr_grid_result r;
  double best_acc = -1;
  auto trial = [&](double lr, double wd) {
    double loss = std::numeric_limits<double>::quiet_NaN(), acc = 0;
    try {
      std::tie(loss, acc) = fit(train_set, val_set, lr, wd);
    } catch (const value_error&) {
      loss = std::numeric_limits<double>::quiet_NaN();
      acc = 0;  // diverged: scores 0
    }
    r.lrs.push_back(lr);
    r.weight_decays.push_back(wd);
    r.val_accuracy.push_back(acc);
    r.train_loss.push_back(loss);
    const bool tie = std::abs(acc - best_acc) <= 1e-12;
    if (acc > best_acc + 1e-12 || (tie && (lr < r.best || (lr == r.best && wd < r.best_weight_decay)))) {
      best_acc = acc;
      r.best_accuracy = acc;
      r.best = lr;
      r.best_weight_decay = wd;
    }
    if (o.progress && o.parallel.root())
      std::printf("lr grid: %s lr %-8g weight decay %-8g search-val accuracy %.4f  train loss %.4f\n", who, lr, wd, acc, loss);
  };
  for (double lr : lrs)
    for (double wd : wds) trial(lr, wd);
  for (int round = 0;; ++round) {
    std::vector<std::string> edges;
    double new_lr = 0, new_wd = -1;
    if (lrs.size() > 1 && r.best == lrs.front()) {
      new_lr = lrs.front() * lrs.front() / lrs[1];
      edges.push_back(cat("lr ", r.best, " is the grid's smallest"));
    } else if (lrs.size() > 1 && r.best == lrs.back()) {
      new_lr = lrs.back() * lrs.back() / lrs[lrs.size() - 2];
      edges.push_back(cat("lr ", r.best, " is the grid's largest"));
    }
    if (wds.size() > 1 && r.best_weight_decay == wds.back() && wds.back() > 0) {
      new_wd = wds.back() * 10;
      edges.push_back(cat("weight decay ", r.best_weight_decay, " is the grid's largest"));
    }
    if (edges.empty() || round >= o.widen) {
      r.at_edge = std::move(edges);
      break;
    }
    if (new_lr > 0) {
      r.widened.push_back(cat("lr ", new_lr, ": ", edges.front()));
      for (double wd : wds) trial(new_lr, wd);
      lrs.push_back(new_lr);
      lrs = sorted(std::move(lrs));
    }
    if (new_wd > 0) {
      r.widened.push_back(cat("weight decay ", new_wd, ": ", edges.back()));
      for (double lr : lrs) trial(lr, new_wd);
      wds.push_back(new_wd);
      wds = sorted(std::move(wds));
    }
  }
  return r;
}

}  // namespace detail

/// For every (lr, weight decay) of the grid, trains w alone (alpha fixed) for `o.epochs` on
/// search-train (the split search() makes with the same seed and
/// val_fraction), measures search-val accuracy, and restores w. A diverging
/// lr scores 0. Returns the grid's results and the best lr; the model is unchanged.
/// Works for the search model and for derived models alike.
/// @throws config_error for an empty grid, a non-positive lr, no epoch, or a batch larger than a split.
template <Scalar S, Trainable<S> M>
lr_grid_result choose_w_lr(M& model, const data::labelled_images<S>& data, const lr_grid_options& o) {
  values_kept<S> start(model.weights());  // every lr starts from here, and the model ends here
  return detail::run_lr_grid(data, o, "choose_w_lr", [&](const auto& train_set, const auto& val_set, double lr, double wd) {
    train_options t{.epochs = o.epochs, .batch = o.batch, .w = o.w, .seed = o.seed, .progress = false,
                    .augment = o.augment, .parallel = o.parallel, .execution = o.execution};
    t.w.lr = lr;
    t.w.weight_decay = wd;
    t.w.warmup_epochs = std::min(o.w.warmup_epochs, o.epochs);
    struct restore_after {  // w back to the start after this lr, whatever happens
      values_kept<S>& start;
      ~restore_after() { start.restore(); }
    } guard{start};
    const double loss = train(model, train_set, t);
    return std::pair<double, double>(loss, evaluate(model, val_set, 64, o.parallel, o.execution));
  });
}

/// The linear probe's lr chosen the same way: for every lr of the grid a fresh head is
/// trained on the frozen features of search-train for `o.epochs` and scored on
/// search-val. The backbone's head is replaced (linear_probe() replaces it again).
/// @throws config_error as choose_w_lr(), and as linear_probe() for the data.
template <Scalar S>
lr_grid_result choose_probe_lr(vit<S>& backbone, const data::labelled_images<S>& data, const lr_grid_options& o) {
  return detail::run_lr_grid(data, o, "choose_probe_lr", [&](const auto& train_set, const auto& val_set, double lr, double wd) {
    probe_options p{.epochs = o.epochs, .batch = o.batch, .w = o.w, .seed = o.seed, .progress = false,
                    .parallel = o.parallel, .execution = o.execution};
    p.w.lr = lr;
    p.w.weight_decay = wd;
    p.w.warmup_epochs = std::min(o.w.warmup_epochs, o.epochs);
    const probe_result r = linear_probe(backbone, train_set, val_set, p);
    return std::pair<double, double>(r.train_loss, r.test_accuracy);
  });
}

}  // namespace vpdarts
