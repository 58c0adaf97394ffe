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
#include "../optim/schedule.hpp"
#include "../vit/vit.hpp"

namespace vpdarts {

/// Settings of pretrain().
struct pretrain_options {
  long epochs = 5;              ///< passes over the training set
  index batch = 64;             ///< images per step
  double lr = 1e-3;             ///< AdamW peak learning rate (cosine decay after one warm-up epoch)
  double weight_decay = 0.05;   ///< decoupled
  std::uint64_t seed = 0;       ///< shuffling
  bool progress = true;         ///< print a progress bar
};

/// What pretrain() measured.
struct pretrain_result {
  double train_accuracy = 0;  ///< over the last epoch, as trained
  double test_accuracy = 0;   ///< top-1 on the test set after training
  double seconds = 0;         ///< wall-clock time of the training
};

namespace detail {

/// Number of rows of `logits` whose argmax is the label.
template <class Logits>
index count_correct(const Logits& logits, std::span<const int> labels) {
  index correct = 0;
  for (index i = 0; i < logits.rows(); ++i) {
    index arg;
    logits.row(i).maxCoeff(&arg);
    correct += arg == labels[static_cast<std::size_t>(i)];
  }
  return correct;
}

/// Calls fn(start, x, y) for consecutive batches of `data` in order (the last
/// one may be smaller), gathering into the same x and y each time.
template <Scalar S, class Fn>
void for_each_batch(const data::labelled_images<S>& data, index batch, Fn&& fn) {
  std::vector<index> rows;
  image_batch<S> x;
  std::vector<int> y;
  for (index start = 0; start < data.size(); start += batch) {
    rows.resize(static_cast<std::size_t>(std::min(batch, data.size() - start)));
    std::iota(rows.begin(), rows.end(), start);
    data.gather(rows, x, y);
    fn(start, x, y);
  }
}

/// Top-1 accuracy of `forward(tape, images) -> logits` on `data`, in batches, no gradient recorded.
template <Scalar S, class Forward>
double top1_accuracy(const data::labelled_images<S>& data, index batch, Forward&& forward) {
  tape<S> t;
  no_grad<S> guard(t);
  index correct = 0;
  for_each_batch(data, batch, [&](index, const image_batch<S>& x, const std::vector<int>& y) {
    t.reset();
    correct += count_correct(forward(t, x).value(), y);
  });
  return static_cast<double>(correct) / static_cast<double>(data.size());
}

}  // namespace detail

/// Top-1 accuracy of the model's logits on `data`, in batches, no gradient recorded.
/// @throws shape_error when the images do not fit the model.
template <Scalar S>
double accuracy(vit<S>& model, const data::labelled_images<S>& data, index batch = 64) {
  return detail::top1_accuracy(data, batch, [&](tape<S>& t, const image_batch<S>& x) { return model.logits(t, x); });
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
  const long steps = train.size() / o.batch;
  const optim::warmup_cosine schedule{o.lr, steps, steps * o.epochs};  // one warm-up epoch
  std::vector<index> order(static_cast<std::size_t>(train.size()));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(o.seed);
  tape<S> t;
  detail::progress bar("pretrain", o.epochs, steps);
  pretrain_result r;
  image_batch<S> x;
  std::vector<int> labels;
  for (long e = 1; e <= o.epochs; ++e) {
    std::shuffle(order.begin(), order.end(), rng);
    index correct = 0, seen = 0;
    double loss_sum = 0;
    for (long s = 0; s < steps; ++s) {
      opt.set_lr(schedule((e - 1) * steps + s));
      train.gather(std::span<const index>(order.data() + s * o.batch, static_cast<std::size_t>(o.batch)), x, labels);
      t.reset();
      auto logits = model.logits(t, x);
      var<S> loss;
      try {
        loss = cross_entropy(logits, labels);
      } catch (const value_error& err) {
        throw value_error(detail::cat("pretrain: epoch ", e, " step ", s + 1, ": ", err.message()));
      }
      opt.zero_grad();
      t.backward(loss);
      opt.step();
      correct += detail::count_correct(logits.value(), labels);
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
