#pragma once
/// @file loop.hpp
/// The training loop every trainer of vpdarts runs (pretraining, retraining,
/// the linear probe, the DARTS search): epochs of shuffled full batches, the
/// learning rate of a warm-up-then-cosine schedule set before every step,
/// a progress bar, and errors that name the epoch and step. What a step does
/// is the caller's; how gradients reach the optimiser goes through one
/// function, apply_gradients(), the place where data-parallel training sums
/// them across processes (gradient_hook).

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "../autodiff/parameter.hpp"
#include "../detail/format.hpp"
#include "../detail/progress.hpp"
#include "../error.hpp"
#include "../optim/schedule.hpp"
#include "../optim/sgd.hpp"
#include "data_parallel.hpp"
#include "interrupt.hpp"

namespace vpdarts {

/// The optimiser of the weights w (prompts, operator parameters, head; or the
/// probe's head): SGD with momentum, linear warm-up then cosine decay,
/// gradient-norm clipping and learning-rate multipliers (docs/method.md, section 5).
/// The search, retraining, the lr grid and the linear probe all take it.
struct w_optimizer_options {
  double lr = 0.05;              ///< peak learning rate (reached at the end of the warm-up)
  double momentum = 0.9;         ///< SGD momentum
  double weight_decay = 1e-4;    ///< on every part of w but the head's bias
  double grad_clip = 5;          ///< gradient-norm clip of w (0: none)
  long warmup_epochs = 1;        ///< epochs of linear lr warm-up before the cosine decay
  std::vector<double> op_lr_mult = {};  ///< lr multiplier per operator, in op-list order (empty: all 1)
  double head_lr_mult = 1;       ///< lr multiplier of the head

  /// The SGD settings (lr, momentum, weight decay).
  optim::sgd_options sgd() const { return {lr, momentum, weight_decay}; }
  /// @throws config_error naming `who` for a negative or non-finite setting.
  void validate(const char* who) const {
    auto bad = [&](const char* name, double v, bool ok) {
      if (!ok || !std::isfinite(v)) throw config_error(detail::cat(who, ": w's ", name, " is ", v));
    };
    bad("lr", lr, lr > 0);
    bad("momentum", momentum, momentum >= 0 && momentum < 1);
    bad("weight_decay", weight_decay, weight_decay >= 0);
    bad("grad_clip", grad_clip, grad_clip >= 0);
    bad("head_lr_mult", head_lr_mult, head_lr_mult >= 0);
    if (warmup_epochs < 0) throw config_error(detail::cat(who, ": w's warmup_epochs is ", warmup_epochs));
    for (double m : op_lr_mult) bad("op_lr_mult", m, m >= 0);
  }
};

/// Called once the gradients of `params` are computed (after a backward pass),
/// before they are clipped and stepped; empty means nothing to do. A
/// data-parallel run sums the gradients of every process here.
template <Scalar S>
using gradient_hook = std::function<void(std::span<parameter<S>* const> params)>;

/// The one way gradients reach an optimiser: the hook, then gradient-norm
/// clipping (when `clip` > 0), then the optimiser's step.
template <Scalar S, class Optimizer>
void apply_gradients(Optimizer& opt, std::span<parameter<S>* const> params, double clip, const gradient_hook<S>& hook) {
  if (hook) hook(params);
  if (clip > 0) optim::clip_grad_norm<S>(params, clip);
  opt.step();
}

/// What one step of a training loop reports.
struct step_report {
  double loss = 0;        ///< the step's training loss
  index images = 0;       ///< images the step processed (the progress bar's rate)
  index correct = -1;     ///< correctly classified training images (negative: not measured)
  double val_loss = std::numeric_limits<double>::quiet_NaN();  ///< a search's validation loss (NaN: none)
};

/// What one epoch of a training loop measured.
struct epoch_report {
  long epoch = 0;           ///< 1-based
  double loss = 0;          ///< mean training loss of the epoch's steps
  double accuracy = std::numeric_limits<double>::quiet_NaN();  ///< training accuracy as trained (NaN: not measured)
  double val_loss = std::numeric_limits<double>::quiet_NaN();  ///< mean validation loss (NaN: none)
  double seconds = 0;       ///< wall-clock time since the loop started
};

/// How run_epochs() runs.
struct loop_plan {
  std::string name;          ///< names the loop in the progress bar and in error messages
  long epochs = 1;           ///< epochs in all
  index batch = 32;          ///< rows per step (the last partial batch of an epoch is dropped)
  double peak_lr = 0.05;     ///< the schedule's peak learning rate
  long warmup_epochs = 1;    ///< epochs of linear warm-up before the cosine decay
  long first_epoch = 0;      ///< epochs already done (a resumed run continues after them)
  bool progress = true;      ///< print a progress bar
};

/// What run_epochs() did.
struct loop_result {
  epoch_report last;   ///< the last epoch (zero when no epoch ran)
  double seconds = 0;  ///< wall-clock time of this run
};

/// Runs epochs plan.first_epoch+1 .. plan.epochs. Every epoch shuffles `rows`
/// with `rng`, then, for each full batch of `plan.batch` rows, sets the
/// optimiser's learning rate from the schedule and calls
/// `step(epoch, rows_of_the_batch) -> step_report`; after the epoch,
/// `end_epoch(epoch_report)`. A value_error from a step is re-thrown naming
/// the loop, the epoch and the step.
/// @throws config_error when a batch does not fit `rows` or there are no epochs.
template <class Optimizer, class Step, class EndEpoch>
loop_result run_epochs(const loop_plan& plan, std::vector<index>& rows, std::mt19937_64& rng, Optimizer& opt,
                       Step&& step, EndEpoch&& end_epoch) {
  const index n = static_cast<index>(rows.size());
  if (plan.batch <= 0 || plan.batch > n)
    throw config_error(detail::cat(plan.name, ": batch ", plan.batch, " does not fit ", n, " images"));
  if (plan.epochs < 1) throw config_error(detail::cat(plan.name, ": ", plan.epochs, " epochs; at least one is needed"));
  const long steps = static_cast<long>(n / plan.batch);
  const optim::warmup_cosine lr{plan.peak_lr, plan.warmup_epochs * steps, plan.epochs * steps};
  detail::progress bar(plan.name, plan.epochs, steps);
  bar.resume_at(plan.first_epoch + 1);
  loop_result out;
  for (long e = plan.first_epoch; e < plan.epochs; ++e) {
    std::shuffle(rows.begin(), rows.end(), rng);
    double loss = 0, val = 0;
    index correct = 0, seen = 0, val_steps = 0;
    bool counted = false;
    for (long s = 0; s < steps; ++s) {
      opt.set_lr(lr(e * steps + s));
      const std::span<const index> batch(rows.data() + s * plan.batch, static_cast<std::size_t>(plan.batch));
      step_report r;
      try {
        r = step(e, batch);
      } catch (const value_error& err) {
        throw value_error(detail::cat(plan.name, ": epoch ", e + 1, " step ", s + 1, ": ", err.message()));
      }
      detail::check_interrupt(plan.name, e + 1, s + 1);
      loss += r.loss;
      seen += plan.batch;
      if (r.correct >= 0) {
        correct += r.correct;
        counted = true;
      }
      if (!std::isnan(r.val_loss)) {
        val += r.val_loss;
        ++val_steps;
      }
      if (plan.progress)
        bar.update(e + 1, s + 1, loss / static_cast<double>(s + 1),
                   counted ? static_cast<double>(correct) / static_cast<double>(seen) : -1.0, r.images,
                   val_steps > 0 ? val / static_cast<double>(val_steps) : std::numeric_limits<double>::quiet_NaN());
    }
    out.last = {e + 1, loss / static_cast<double>(steps),
                counted ? static_cast<double>(correct) / static_cast<double>(seen) : std::numeric_limits<double>::quiet_NaN(),
                val_steps > 0 ? val / static_cast<double>(steps) : std::numeric_limits<double>::quiet_NaN(),
                bar.seconds()};
    end_epoch(out.last);
  }
  out.seconds = bar.seconds();
  return out;
}

/// run_epochs() with nothing to do after an epoch.
template <class Optimizer, class Step>
loop_result run_epochs(const loop_plan& plan, std::vector<index>& rows, std::mt19937_64& rng, Optimizer& opt,
                       Step&& step) {
  return run_epochs(plan, rows, rng, opt, std::forward<Step>(step), [](const epoch_report&) {});
}

/// Rows 0..n-1, the order a loop starts from before its first shuffle.
inline std::vector<index> all_rows(index n) {
  std::vector<index> rows(static_cast<std::size_t>(std::max<index>(n, 0)));
  for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<index>(i);
  return rows;
}

}  // namespace vpdarts
