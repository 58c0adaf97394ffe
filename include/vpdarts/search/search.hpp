#pragma once
/// @file search.hpp
/// The whole job as a library: split the training data into search-train and
/// search-val, run DARTS for some epochs (w-only warm-up first), record
/// softmax(alpha) every epoch and derive the genotype; then train a model
/// (the derived one, from fresh operator parameters) and evaluate it.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../data/synthetic.hpp"
#include "../detail/progress.hpp"
#include "../optim/schedule.hpp"
#include "../train/classifier.hpp"
#include "darts.hpp"

namespace vpdarts {

/// Settings of search().
struct search_options {
  darts_options darts = {};
  long epochs = 10;
  long warmup_epochs = 2;       ///< epochs that train w only, before alpha moves
  index batch = 32;             ///< search-train and search-val batches have this size
  double val_fraction = 0.2;    ///< share of the training data held out as search-val (VTAB-1k: 200 of 1000)
  long lr_warmup_epochs = 1;    ///< linear warm-up of w's learning rate, then cosine
  /// When true, alpha's learning rate is 6 / (planned alpha steps), DARTS's lr x steps
  /// (DESIGN.md section 5); false keeps darts.alpha_lr.
  bool auto_alpha_lr = true;
  std::uint64_t seed = 0;       ///< the split and the shuffling
  bool progress = true;
};

/// What search() found.
struct search_result {
  genotype found;
  std::vector<matrix<double>> alpha_history;  ///< softmax(alpha) (L x K) after every epoch
  std::vector<double> train_loss, val_loss;   ///< per-epoch means
  std::vector<std::string> warnings;          ///< layers whose two strongest operators are within 0.02
  double alpha_lr = 0;
  double seconds = 0;
};

/// Runs a DARTS search on `data` (split seeded into search-train and search-val).
/// @throws config_error for a derived model, fewer than two classes, or a batch larger than a split;
/// value_error when a loss becomes NaN or Inf (naming the epoch and step).
template <Scalar S, OpList Ops>
search_result search(prompted_vit<S, Ops>& model, const data::labelled_images<S>& data, search_options o) {
  if (data.classes() < 2)
    throw config_error(detail::cat("search: the dataset has ", data.classes(), " class; at least two are needed"));
  const index n = data.size();
  const index n_val = static_cast<index>(std::llround(static_cast<double>(n) * o.val_fraction));
  const index n_train = n - n_val;
  if (o.batch <= 0 || o.batch > std::min(n_train, n_val))
    throw config_error(detail::cat("search: batch ", o.batch, " does not fit the splits (", n_train,
                                   " search-train, ", n_val, " search-val images)"));
  if (o.epochs <= o.warmup_epochs)
    throw config_error(detail::cat("search: ", o.epochs, " epochs leave no alpha step after ", o.warmup_epochs,
                                   " warm-up epochs"));
  std::vector<index> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(o.seed);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<index> train_rows(order.begin(), order.begin() + n_train), val_rows(order.begin() + n_train, order.end());
  const long steps = static_cast<long>(std::min(n_train, n_val) / o.batch);
  search_result r;
  if (o.auto_alpha_lr) o.darts.alpha_lr = 6.0 / static_cast<double>(steps * (o.epochs - o.warmup_epochs));
  r.alpha_lr = o.darts.alpha_lr;
  darts<S, Ops> d(model, o.darts);
  const optim::warmup_cosine lr{o.darts.w_lr, o.lr_warmup_epochs * steps, o.epochs * steps};
  detail::progress bar("search", o.epochs, steps);
  image_batch<S> tx, vx;
  std::vector<int> ty, vy;
  for (long e = 0; e < o.epochs; ++e) {
    std::shuffle(train_rows.begin(), train_rows.end(), rng);
    std::shuffle(val_rows.begin(), val_rows.end(), rng);
    double tl = 0, vl = 0;
    for (long s = 0; s < steps; ++s) {
      d.w_optimizer().set_lr(lr(e * steps + s));
      data.gather(std::span<const index>(train_rows.data() + s * o.batch, static_cast<std::size_t>(o.batch)), tx, ty);
      data.gather(std::span<const index>(val_rows.data() + s * o.batch, static_cast<std::size_t>(o.batch)), vx, vy);
      darts_step_result res;
      try {
        res = d.step(tx, ty, vx, vy, e >= o.warmup_epochs);
      } catch (const value_error& err) {
        throw value_error(detail::cat("search: epoch ", e + 1, " step ", s + 1, ": ", err.what()));
      }
      tl += res.train_loss;
      vl += res.val_loss;
      if (o.progress) bar.update(e + 1, s + 1, tl / static_cast<double>(s + 1), 0.0, 2 * o.batch);
    }
    r.train_loss.push_back(tl / static_cast<double>(steps));
    r.val_loss.push_back(e >= o.warmup_epochs ? vl / static_cast<double>(steps) : std::nan(""));
    r.alpha_history.push_back(model.softmax_alpha());
  }
  r.found = model.derive();
  for (std::size_t l = 0; l < r.found.layers.size(); ++l)
    if (r.found.layers[l].margin() < 0.02)
      r.warnings.push_back(detail::cat("layer ", l, ": the two strongest operators are within ",
                                       r.found.layers[l].margin(), " (< 0.02): the choice there is a coin toss"));
  r.seconds = bar.seconds();
  return r;
}

/// Settings of train() (retraining a derived model, or a linear probe).
struct train_options {
  long epochs = 10;
  index batch = 32;
  double lr = 0.05;
  double momentum = 0.9;
  double weight_decay = 1e-4;   ///< on every part of w but the head's bias
  long warmup_epochs = 1;
  double grad_clip = 5;
  std::vector<double> op_lr_mult = {};
  double head_lr_mult = 1;
  std::uint64_t seed = 0;
  bool progress = true;
};

/// Trains w (operator parameters and head; alpha is not touched) on `data` with
/// SGD, warm-up then cosine; returns the mean loss of the last epoch.
/// @throws config_error for a batch larger than the data; value_error for a NaN or Inf loss.
template <Scalar S, OpList Ops>
double train(prompted_vit<S, Ops>& model, const data::labelled_images<S>& data, const train_options& o) {
  if (o.batch <= 0 || o.batch > data.size())
    throw config_error(detail::cat("train: batch ", o.batch, " does not fit ", data.size(), " images"));
  std::vector<optim::param_group<S>> groups = weight_groups(model, o.op_lr_mult, o.head_lr_mult);
  optim::sgd<S> opt(groups, {o.lr, o.momentum, o.weight_decay});
  std::vector<parameter<S>*> ws = model.weights();
  const long steps = static_cast<long>(data.size() / o.batch);
  const optim::warmup_cosine lr{o.lr, o.warmup_epochs * steps, o.epochs * steps};
  std::vector<index> rows(static_cast<std::size_t>(data.size()));
  std::iota(rows.begin(), rows.end(), 0);
  std::mt19937_64 rng(o.seed);
  tape<S> t;
  image_batch<S> x;
  std::vector<int> y;
  detail::progress bar("train", o.epochs, steps);
  double last = 0;
  for (long e = 0; e < o.epochs; ++e) {
    std::shuffle(rows.begin(), rows.end(), rng);
    double sum = 0;
    for (long s = 0; s < steps; ++s) {
      opt.set_lr(lr(e * steps + s));
      data.gather(std::span<const index>(rows.data() + s * o.batch, static_cast<std::size_t>(o.batch)), x, y);
      t.reset();
      var<S> l;
      try {
        l = cross_entropy(model.logits(t, x, grad_target::weights), y);
      } catch (const value_error& err) {
        throw value_error(detail::cat("train: epoch ", e + 1, " step ", s + 1, ": ", err.what()));
      }
      opt.zero_grad();
      t.backward(l);
      if (o.grad_clip > 0) optim::clip_grad_norm<S>(ws, o.grad_clip);
      opt.step();
      sum += static_cast<double>(l.item());
      if (o.progress) bar.update(e + 1, s + 1, sum / static_cast<double>(s + 1), 0.0, o.batch);
    }
    last = sum / static_cast<double>(steps);
  }
  return last;
}

/// Top-1 accuracy of a prompted model on `data`, in batches, no gradient recorded.
template <Scalar S, OpList Ops>
double evaluate(prompted_vit<S, Ops>& model, const data::labelled_images<S>& data, index batch = 64) {
  return detail::top1_accuracy(
      data, batch, [&](tape<S>& t, const image_batch<S>& x) { return model.logits(t, x, grad_target::none); });
}

}  // namespace vpdarts
