#pragma once
/// @file probe.hpp
/// The linear probe, the baseline every prompt method must beat: the frozen
/// backbone's features (LN(x_L)[cls]) are computed once, and only a fresh
/// linear head is trained on them (SGD with momentum, warm-up then cosine).

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "../data/synthetic.hpp"
#include "../detail/progress.hpp"
#include "../optim/schedule.hpp"
#include "../optim/sgd.hpp"
#include "../vit/vit.hpp"
#include "classifier.hpp"

namespace vpdarts {

/// Settings of linear_probe().
struct probe_options {
  long epochs = 50;            ///< passes over the training features
  index batch = 32;            ///< images per step
  double lr = 0.05;            ///< SGD peak learning rate (cosine decay after the warm-up)
  double momentum = 0.9;       ///< SGD momentum
  double weight_decay = 1e-4;  ///< on the head's weight only
  long warmup_epochs = 1;      ///< epochs of linear lr warm-up
  std::uint64_t seed = 0;      ///< shuffling and the head's init
  bool progress = true;        ///< print a progress bar
};

/// What linear_probe() measured.
struct probe_result {
  double train_loss = 0;        ///< mean loss of the last epoch
  double train_accuracy = 0;    ///< on the whole training set after training
  double test_accuracy = 0;     ///< top-1 on the test set
  index trainable_params = 0;   ///< the head's values
  double seconds = 0;           ///< wall-clock time, features included
};

/// The frozen features LN(x_L)[cls] of every image (N x D), in batches, no gradient recorded.
template <Scalar S>
matrix<S> extract_features(vit<S>& model, const data::labelled_images<S>& data, index batch = 64) {
  matrix<S> out(data.size(), model.config().dim);
  tape<S> t;
  no_grad<S> guard(t);
  detail::for_each_batch(data, batch, [&](index start, const image_batch<S>& x, const std::vector<int>&) {
    t.reset();
    out.middleRows(start, x.size()) = model.features(t, x).value();
  });
  return out;
}

/// Replaces the head of `backbone` by a fresh one for `train`'s classes, trains
/// it alone on the frozen features, and reports accuracy on `test`. The
/// backbone is left frozen with the trained head.
/// @throws config_error for fewer than two classes, test classes that differ, or a batch larger than the data;
/// value_error for a NaN or Inf loss.
template <Scalar S>
probe_result linear_probe(vit<S>& backbone, const data::labelled_images<S>& train, const data::labelled_images<S>& test,
                          const probe_options& o = {}) {
  if (train.classes() < 2)
    throw config_error(detail::cat("linear_probe: the training data has ", train.classes(), " class; at least two are needed"));
  if (test.classes() != train.classes())
    throw config_error(detail::cat("linear_probe: ", train.classes(), " training classes but ", test.classes(), " test classes"));
  if (o.batch <= 0 || o.batch > train.size())
    throw config_error(detail::cat("linear_probe: batch ", o.batch, " does not fit ", train.size(), " images"));
  detail::progress bar("probe", o.epochs, train.size() / o.batch);
  backbone.reset_head(train.classes());
  backbone.freeze_backbone();
  backbone.head.weight.unfreeze();
  backbone.head.bias.unfreeze();
  const matrix<S> feats = extract_features(backbone, train);
  std::vector<optim::param_group<S>> groups{{{&backbone.head.weight}, 1.0, true, "head.weight"},
                                            {{&backbone.head.bias}, 1.0, false, "head.bias"}};
  optim::sgd<S> opt(groups, {o.lr, o.momentum, o.weight_decay});
  const long steps = static_cast<long>(train.size() / o.batch);
  const optim::warmup_cosine lr{o.lr, o.warmup_epochs * steps, o.epochs * steps};
  std::vector<index> order(static_cast<std::size_t>(train.size()));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(o.seed);
  std::vector<int> y(static_cast<std::size_t>(o.batch));
  tape<S> t;
  probe_result r;
  for (long e = 0; e < o.epochs; ++e) {
    std::shuffle(order.begin(), order.end(), rng);
    double sum = 0;
    for (long s = 0; s < steps; ++s) {
      opt.set_lr(lr(e * steps + s));
      t.reset();
      var<S> x = t.input(o.batch, feats.cols());
      for (index i = 0; i < o.batch; ++i) {
        const index row = order[static_cast<std::size_t>(s * o.batch + i)];
        x.value().row(i) = feats.row(row);
        y[static_cast<std::size_t>(i)] = train.labels[static_cast<std::size_t>(row)];
      }
      var<S> l;
      try {
        l = cross_entropy(linear(x, t.leaf(backbone.head.weight), t.leaf(backbone.head.bias)), y);
      } catch (const value_error& err) {
        throw value_error(detail::cat("linear_probe: epoch ", e + 1, " step ", s + 1, ": ", err.message()));
      }
      opt.zero_grad();
      t.backward(l);
      opt.step();
      sum += static_cast<double>(l.item());
      if (o.progress) bar.update(e + 1, s + 1, sum / static_cast<double>(s + 1), -1, o.batch);
    }
    r.train_loss = sum / static_cast<double>(steps);
  }
  {
    matrix<S> logits = feats * backbone.head.weight.value().transpose();
    logits.rowwise() += backbone.head.bias.value().row(0);
    r.train_accuracy = static_cast<double>(detail::count_correct(logits, train.labels)) / static_cast<double>(train.size());
  }
  r.test_accuracy = accuracy(backbone, test);
  r.trainable_params = backbone.head.weight.size() + backbone.head.bias.size();
  r.seconds = bar.seconds();
  return r;
}

}  // namespace vpdarts
