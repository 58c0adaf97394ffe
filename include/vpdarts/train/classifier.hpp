#pragma once
/// @file classifier.hpp
/// Training and evaluating a plain ViT classifier: pretraining a backbone from
/// scratch (when a user has none), and accuracy on a labelled set.

#include <algorithm>
#include <cmath>
#include <numbers>
#include <numeric>
#include <random>
#include <vector>

#include "../data/synthetic.hpp"
#include "../detail/progress.hpp"
#include "../optim/adam.hpp"
#include "../vit/vit.hpp"

namespace vpdarts {

/// Settings of pretrain().
struct pretrain_options {
  long epochs = 5;
  index batch = 64;
  double lr = 1e-3;             ///< AdamW peak learning rate (cosine decay after one warm-up epoch)
  double weight_decay = 0.05;   ///< decoupled
  std::uint64_t seed = 0;       ///< shuffling
  bool progress = true;         ///< print a progress bar
};

/// What pretrain() measured.
struct pretrain_result {
  double train_accuracy = 0;  ///< over the last epoch, as trained
  double test_accuracy = 0;
  double seconds = 0;
};

/// Top-1 accuracy of the model's logits on `data`, in batches, no gradient recorded.
/// @throws shape_error when the images do not fit the model.
template <Scalar S>
double accuracy(vit<S>& model, const data::labelled_images<S>& data, index batch = 64) {
  tape<S> t;
  no_grad<S> guard(t);
  index correct = 0;
  std::vector<index> rows;
  for (index start = 0; start < data.size(); start += batch) {
    const index n = std::min(batch, data.size() - start);
    rows.resize(static_cast<std::size_t>(n));
    std::iota(rows.begin(), rows.end(), start);
    t.reset();
    auto logits = model.logits(t, data.images.select(rows)).value();
    for (index i = 0; i < n; ++i) {
      index arg;
      logits.row(i).maxCoeff(&arg);
      correct += arg == data.labels[static_cast<std::size_t>(start + i)];
    }
  }
  return static_cast<double>(correct) / static_cast<double>(data.size());
}

/// Trains every parameter of `model` (backbone and head) on `train` with AdamW,
/// one warm-up epoch then cosine decay, and reports accuracy on `test`.
/// @throws config_error when the batch is not positive or larger than the training set;
/// value_error when the loss becomes NaN or Inf (naming the step).
template <Scalar S>
pretrain_result pretrain(vit<S>& model, const data::labelled_images<S>& train, const data::labelled_images<S>& test,
                         const pretrain_options& o = {}) {
  if (o.batch <= 0 || o.batch > train.size())
    throw config_error(detail::cat("pretrain: batch ", o.batch, " does not fit a training set of ", train.size()));
  if (train.classes() > model.config().classes)
    throw config_error(detail::cat("pretrain: the data has ", train.classes(), " classes, the head ",
                                   model.config().classes));
  model.unfreeze_all();
  std::vector<parameter<S>*> params = model.parameters();
  optim::adam<S> opt(params, {.lr = o.lr, .weight_decay = o.weight_decay, .decoupled = true});
  const long steps = train.size() / o.batch, total = steps * o.epochs;
  std::vector<index> order(static_cast<std::size_t>(train.size()));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(o.seed);
  tape<S> t;
  detail::progress bar("pretrain", o.epochs, steps);
  pretrain_result r;
  std::vector<int> labels(static_cast<std::size_t>(o.batch));
  for (long e = 1; e <= o.epochs; ++e) {
    std::shuffle(order.begin(), order.end(), rng);
    index correct = 0, seen = 0;
    double loss_sum = 0;
    for (long s = 0; s < steps; ++s) {
      const long k = (e - 1) * steps + s;
      const double lr = k < steps ? o.lr * static_cast<double>(k + 1) / static_cast<double>(steps)
                                  : 0.5 * o.lr * (1 + std::cos(std::numbers::pi * static_cast<double>(k - steps) /
                                                               static_cast<double>(std::max<long>(1, total - steps))));
      opt.set_lr(lr);
      std::span<const index> rows(order.data() + s * o.batch, static_cast<std::size_t>(o.batch));
      for (index i = 0; i < o.batch; ++i) labels[static_cast<std::size_t>(i)] = train.labels[static_cast<std::size_t>(rows[static_cast<std::size_t>(i)])];
      t.reset();
      auto logits = model.logits(t, train.images.select(rows));
      var<S> loss;
      try {
        loss = cross_entropy(logits, labels);
      } catch (const value_error& err) {
        throw value_error(detail::cat("pretrain: epoch ", e, " step ", s + 1, ": ", err.what()));
      }
      opt.zero_grad();
      t.backward(loss);
      opt.step();
      for (index i = 0; i < o.batch; ++i) {
        index arg;
        logits.value().row(i).maxCoeff(&arg);
        correct += arg == labels[static_cast<std::size_t>(i)];
      }
      seen += o.batch;
      loss_sum += static_cast<double>(loss.item());
      if (o.progress)
        bar.update(e, s + 1, loss_sum / static_cast<double>(s + 1), static_cast<double>(correct) / static_cast<double>(seen),
                   o.batch);
    }
    r.train_accuracy = static_cast<double>(correct) / static_cast<double>(std::max<index>(seen, 1));
  }
  r.test_accuracy = accuracy(model, test);
  r.seconds = bar.seconds();
  return r;
}

}  // namespace vpdarts
