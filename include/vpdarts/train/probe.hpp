#pragma once
/// @file probe.hpp
/// The linear probe, the baseline every prompt method must beat: the frozen
/// backbone's features (vit::features: timm's pooled, normed features) are computed once, and only a fresh
/// linear head is trained on them (SGD with momentum, warm-up then cosine).

#include <random>
#include <limits>
#include <vector>

#include "../data/labelled_images.hpp"
#include "../detail/gemm.hpp"
#include "../optim/sgd.hpp"
#include "../vit/vit.hpp"
#include "accuracy.hpp"
#include "loop.hpp"

namespace vpdarts {

/// Settings of linear_probe().
struct probe_options {
  long epochs = 50;            ///< passes over the training features
  index batch = 32;            ///< images per step
  /// The head's optimiser (weight decay on the head's weight only; op_lr_mult
  /// does not apply; no clipping by default).
  w_optimizer_options w = {.grad_clip = 0};
  std::uint64_t seed = 0;      ///< shuffling and the head's init
  bool progress = true;        ///< print a progress bar
  /// The processes the features and every batch are shared over (train/data_parallel.hpp); one by default.
  data_parallel parallel = {};
  /// How the backbone's tape runs its kernels (kernels/execution.hpp): the features and the test accuracy.
  execution_config execution = {};
};

/// What linear_probe() measured.
struct probe_result {
  double train_loss = 0;        ///< mean loss of the last epoch
  double train_accuracy = 0;    ///< on the whole training set after training
  double test_accuracy = 0;     ///< top-1 on the test set (NaN when it was empty)
  index trainable_params = 0;   ///< the head's values
  double seconds = 0;           ///< wall-clock time, features included
};

/// The frozen features (vit::features) of every image (N x D), in batches, no
/// gradient recorded; with `parallel` over several processes each computes
/// its share of the rows and every process gets them all. The tape runs as `execution` says.
template <Scalar S>
matrix<S> extract_features(vit<S>& model, const data::labelled_images<S>& data, index batch = 64,
                           const data_parallel& parallel = {}, const execution_config& execution = {}) {
  matrix<S> out = matrix<S>::Zero(data.size(), model.config().dim);
  {
    tape<S> t(execution);
    no_grad<S> guard(t);
    const auto share = parallel.share_of(data.size());
    for_each_batch(
        data, batch,
        [&](index start, const image_batch<S>& x, const std::vector<int>&) {
          t.reset();
          out.middleRows(start, x.size()) = model.features(t, x).value();
        },
        share.first, share.count);
  }
  parallel.sum(out);  // every row is non-zero on one process only: the sum is exact
  return out;
}

/// Replaces the head of `backbone` by a fresh one for `train`'s classes, trains
/// it alone on the frozen features, and reports accuracy on `test`. The
/// backbone is left frozen with the trained head. Every gradient passes
/// `hook` before the optimiser uses it. With o.parallel over several
/// processes, each computes its share of the features and trains on its
/// share of every batch (the single-process result).
/// An empty `test` is no test: nothing is evaluated and test_accuracy is NaN.
/// @throws config_error for fewer than two classes, test classes that differ, no epoch, or a batch larger
/// than the data; value_error for a NaN or Inf loss.
template <Scalar S>
probe_result linear_probe(vit<S>& backbone, const data::labelled_images<S>& train, const data::labelled_images<S>& test,
                          const probe_options& o = {}, const gradient_hook<S>& hook = {}) {
  if (train.classes() < 2)
    throw config_error(detail::cat("linear_probe: the training data has ", train.classes(), " class; at least two are needed"));
  if (test.size() > 0 && test.classes() != train.classes())
    throw config_error(detail::cat("linear_probe: ", train.classes(), " training classes but ", test.classes(), " test classes"));
  if (o.batch <= 0 || o.batch > train.size())
    throw config_error(detail::cat("linear_probe: batch ", o.batch, " does not fit ", train.size(), " images"));
  o.w.validate("linear_probe");
  const data_parallel& dp = o.parallel;
  dp.require_batch(o.batch, "linear_probe");
  backbone.reset_head(train.classes());
  backbone.freeze_backbone();
  backbone.head.weight.unfreeze();
  backbone.head.bias.unfreeze();
  const matrix<S> feats = extract_features(backbone, train, 64, dp, o.execution);
  std::vector<optim::param_group<S>> groups{{{&backbone.head.weight}, o.w.head_lr_mult, true, "head.weight"},
                                            {{&backbone.head.bias}, o.w.head_lr_mult, false, "head.bias"}};
  optim::sgd<S> opt(groups, o.w.sgd());
  std::vector<parameter<S>*> head{&backbone.head.weight, &backbone.head.bias};
  std::vector<index> rows = all_rows(train.size());
  std::mt19937_64 rng(o.seed);
  std::vector<int> y(static_cast<std::size_t>(std::max<index>(o.batch, 0)));
  tape<S> t;
  const loop_plan plan{.name = "linear_probe", .epochs = o.epochs, .batch = o.batch, .peak_lr = o.w.lr,
                       .warmup_epochs = o.w.warmup_epochs, .progress = o.progress && dp.root()};
  auto step = [&](long, std::span<const index> batch) {
    const std::span<const index> mine = dp.share_of(batch);
    const index rows_here = static_cast<index>(mine.size());
    const reduced_step s = dp.gradient_step<S>(head, rows_here, [&] {
      t.reset();
      var<S> x = t.input(rows_here, feats.cols());
      y.resize(mine.size());
      for (index i = 0; i < rows_here; ++i) {
        const index row = mine[static_cast<std::size_t>(i)];
        x.value().row(i) = feats.row(row);
        y[static_cast<std::size_t>(i)] = train.labels[static_cast<std::size_t>(row)];
      }
      const var<S> l = cross_entropy(linear(x, t.leaf(backbone.head.weight), t.leaf(backbone.head.bias)), y);
      opt.zero_grad();
      t.backward(l);
      return local_step{static_cast<double>(l.item())};
    });
    apply_gradients<S>(opt, head, o.w.grad_clip, hook);
    return step_report{.loss = s.loss, .images = o.batch};
  };
  const loop_result lr =
      run_epochs(plan, rows, rng, opt, step, [&](const epoch_report&) { dp.check_identical<S>(head, "linear_probe"); });
  probe_result r;
  r.train_loss = lr.last.loss;
  {
    matrix<S> logits(feats.rows(), backbone.head.weight.rows());
    detail::gemm(logits, feats, backbone.head.weight.value().transpose());
    logits.rowwise() += backbone.head.bias.value().row(0);
    r.train_accuracy = static_cast<double>(count_correct(logits, train.labels)) / static_cast<double>(train.size());
  }
  r.test_accuracy = test.size() > 0 ? accuracy(backbone, test, 64, dp, o.execution) : std::numeric_limits<double>::quiet_NaN();
  r.trainable_params = backbone.head.weight.size() + backbone.head.bias.size();
  r.seconds = lr.seconds;
  return r;
}

}  // namespace vpdarts
