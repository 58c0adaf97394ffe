#pragma once
/// @file retrain.hpp
/// Retraining a prompted model (the derived model of a genotype, from fresh
/// operator parameters, or one operator at every layer) and evaluating it;
/// any Trainable model (train/trainable.hpp) trains the same way.

#include <random>
#include <vector>

#include "../data/labelled_images.hpp"
#include "../data/transforms.hpp"
#include "../kernels/execution.hpp"
#include "accuracy.hpp"
#include "loop.hpp"
#include "trainable.hpp"

namespace vpdarts {

/// Settings of train().
struct train_options {
  long epochs = 10;               ///< passes over the data
  index batch = 32;               ///< images per step
  w_optimizer_options w = {};     ///< the optimiser of w (operator parameters and head)
  std::uint64_t seed = 0;         ///< shuffling and augmentation
  bool progress = true;           ///< print a progress bar
  data::augment_options augment = {};  ///< random crop and flip of every training batch
  /// The processes every batch is shared over (train/data_parallel.hpp); one by default.
  data_parallel parallel = {};
  /// How the tape runs its kernels (precision, product engine, memory; kernels/execution.hpp).
  execution_config execution = {};
};

/// Trains w (operator parameters and head; alpha is not touched) on `data` with
/// SGD, warm-up then cosine; returns the mean loss of the last epoch. Every
/// gradient passes `hook` before the optimiser uses it. With o.parallel over
/// several processes, each trains on its share of every batch and the result
/// is the single-process one (the same global batch).
/// @throws config_error for a batch larger than the data or smaller than the processes, no epoch, or a bad
/// optimiser setting; value_error for a NaN or Inf loss (naming the epoch and step).
template <Scalar S, Trainable<S> M>
double train(M& model, const data::labelled_images<S>& data, const train_options& o,
             const gradient_hook<S>& hook = {}) {
  o.w.validate("train");
  o.execution.check("train");
  o.parallel.require_batch(o.batch, "train");
  if (o.parallel.active())  // every process must train the same model on the same data (see data_parallel::require_same)
    o.parallel.require_same({{"images", data.size()},
                             {"data", data.fingerprint()},
                             {"model", model.config().describe()},
                             {"trainable", model.trainable_params()},
                             {"epochs", o.epochs},
                             {"batch", o.batch},
                             {"lr", o.w.lr},
                             {"seed", o.seed},
                             {"precision", to_string(o.execution.products)}},
                            "train");
  if (o.augment.crop_padding < 0 || o.augment.crop_padding > std::min(data.images.height, data.images.width) / 2)
    throw config_error(detail::cat("train: crop padding ", o.augment.crop_padding, " is not in 0..",
                                   std::min(data.images.height, data.images.width) / 2, " (half the image side)"));
  optim::sgd<S> opt(model.weight_groups(o.w.op_lr_mult, o.w.head_lr_mult), o.w.sgd());
  std::vector<parameter<S>*> ws = model.weights();
  std::vector<index> rows = all_rows(data.size());
  std::mt19937_64 rng(o.seed);
  tape<S> t(o.execution);
  image_batch<S> x;
  std::vector<int> y;
  std::vector<S> scratch;
  const data_parallel& dp = o.parallel;
  const loop_plan plan{.name = "train", .epochs = o.epochs, .batch = o.batch, .peak_lr = o.w.lr,
                       .warmup_epochs = o.w.warmup_epochs, .progress = o.progress && dp.root()};
  auto step = [&](long, std::span<const index> batch) {
    const auto share = dp.share_of(static_cast<index>(batch.size()));
    data.gather(batch.subspan(static_cast<std::size_t>(share.first), static_cast<std::size_t>(share.count)), x, y);
    data::augment_batch(x, o.augment, rng, scratch, share.first, static_cast<index>(batch.size()));
    const reduced_step s = dp.gradient_step<S>(ws, x.size(), [&] {
      t.reset();
      const var<S> logits = model.logits(t, x, grad_target::weights);
      const var<S> l = cross_entropy(logits, y);
      opt.zero_grad();
      t.backward(l);
      return local_step{static_cast<double>(l.item()), count_correct(logits.value(), y)};
    });
    apply_gradients<S>(opt, ws, o.w.grad_clip, hook);
    return step_report{.loss = s.loss, .images = o.batch, .correct = s.correct};
  };
  const loop_result r = run_epochs(plan, rows, rng, opt, step, [&](const epoch_report&) { dp.check_identical<S>(ws, "train"); });
  return r.last.loss;
}

/// Top-1 accuracy of a prompted model on `data`, in batches, no gradient
/// recorded; with `parallel` over several processes each evaluates its share
/// of the images and the counts are summed.
template <Scalar S, Trainable<S> M>
double evaluate(M& model, const data::labelled_images<S>& data, index batch = 64,
                const data_parallel& parallel = {}, const execution_config& execution = {}) {
  return top1_accuracy(
      data, batch, [&](tape<S>& t, const image_batch<S>& x) { return model.logits(t, x, grad_target::none); }, parallel,
      execution);
}

}  // namespace vpdarts
