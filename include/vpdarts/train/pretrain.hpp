#pragma once
/// @file pretrain.hpp
/// Pretraining a ViT classifier from scratch (backbone and head), for users
/// who have no backbone: AdamW, one warm-up epoch, then cosine decay.

#include <algorithm>
#include <random>
#include <vector>

#include "../data/labelled_images.hpp"
#include "../data/transforms.hpp"
#include "../optim/adam.hpp"
#include "../vit/vit.hpp"
#include "accuracy.hpp"
#include "loop.hpp"

namespace vpdarts {

/// Settings of pretrain().
struct pretrain_options {
  long epochs = 5;              ///< passes over the training set
  index batch = 64;             ///< images per step
  double lr = 1e-3;             ///< AdamW peak learning rate (cosine decay after one warm-up epoch)
  double weight_decay = 0.05;   ///< decoupled
  std::uint64_t seed = 0;       ///< shuffling
  bool progress = true;         ///< print a progress bar
  data::augment_options augment = {};  ///< random crop and flip of every training batch
  /// The processes every batch is shared over (train/data_parallel.hpp); one by default.
  data_parallel parallel = {};
};

/// What pretrain() measured.
struct pretrain_result {
  double train_accuracy = 0;  ///< over the last epoch, as trained
  double test_accuracy = 0;   ///< top-1 on the test set after training
  double seconds = 0;         ///< wall-clock time of the training
};

/// Trains every parameter of `model` (backbone and head) on `train` with AdamW,
/// one warm-up epoch then cosine decay, and reports accuracy on `test`. Every
/// gradient passes `hook` before the optimiser uses it. With o.parallel over
/// several processes, each trains on its share of every batch (the
/// single-process result).
/// @throws config_error when the batch is not positive, larger than the training set or smaller than the processes,
/// or the data has more classes than the head; value_error when the loss becomes NaN or Inf (naming the step).
template <Scalar S>
pretrain_result pretrain(vit<S>& model, const data::labelled_images<S>& train, const data::labelled_images<S>& test,
                         const pretrain_options& o = {}, const gradient_hook<S>& hook = {}) {
  if (train.classes() > model.config().classes)
    throw config_error(detail::cat("pretrain: the data has ", train.classes(), " classes, the head ",
                                   model.config().classes));
  o.parallel.require_batch(o.batch, "pretrain");
  if (o.augment.crop_padding < 0 || o.augment.crop_padding > std::min(train.images.height, train.images.width) / 2)
    throw config_error(detail::cat("pretrain: crop padding ", o.augment.crop_padding, " is not in 0..",
                                   std::min(train.images.height, train.images.width) / 2, " (half the image side)"));
  model.unfreeze_all();
  std::vector<parameter<S>*> params = model.parameters();
  optim::adam<S> opt(params, {.lr = o.lr, .weight_decay = o.weight_decay, .decoupled = true});
  std::vector<index> rows = all_rows(train.size());
  std::mt19937_64 rng(o.seed);
  tape<S> t;
  image_batch<S> x;
  std::vector<int> labels;
  std::vector<S> scratch;
  const data_parallel& dp = o.parallel;
  const loop_plan plan{.name = "pretrain", .epochs = o.epochs, .batch = o.batch, .peak_lr = o.lr,
                       .warmup_epochs = 1, .progress = o.progress && dp.root()};
  auto step = [&](long, std::span<const index> batch) {
    const auto share = dp.share_of(static_cast<index>(batch.size()));
    train.gather(batch.subspan(static_cast<std::size_t>(share.first), static_cast<std::size_t>(share.count)), x, labels);
    data::augment_batch(x, o.augment, rng, scratch, share.first, static_cast<index>(batch.size()));
    const reduced_step s = dp.gradient_step<S>(params, x.size(), [&] {
      t.reset();
      const var<S> logits = model.logits(t, x);
      const var<S> loss = cross_entropy(logits, labels);
      opt.zero_grad();
      t.backward(loss);
      return local_step{static_cast<double>(loss.item()), count_correct(logits.value(), labels)};
    });
    apply_gradients<S>(opt, params, 0, hook);
    return step_report{.loss = s.loss, .images = o.batch, .correct = s.correct};
  };
  const loop_result lr =
      run_epochs(plan, rows, rng, opt, step, [&](const epoch_report&) { dp.check_identical<S>(params, "pretrain"); });
  pretrain_result r;
  r.train_accuracy = lr.last.accuracy;
  r.test_accuracy = accuracy(model, test, 64, dp);
  r.seconds = lr.seconds;
  return r;
}

}  // namespace vpdarts
