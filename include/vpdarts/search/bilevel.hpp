#pragma once
/// @file bilevel.hpp
/// One step of bi-level DARTS (docs/method.md, section 5): first the architecture
/// alpha on a search-val batch, then the weights w on a search-train batch.
///
/// * First order: grad_alpha = d L_val(w, alpha) / d alpha (no gradient work for w).
/// * Second order (DARTS eq. 7-8, as its reference code): the virtual step
///   w' = w - xi (mu m + grad_w L_train(w, alpha) + wd w), with m the SGD momentum
///   buffer and xi the current w learning rate; v = grad_w' L_val(w', alpha);
///   grad_alpha = grad_alpha L_val(w', alpha)
///                - xi (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps),
///   w+- = w +- eps v, eps = 0.01 / ||v||. w is restored bit-exactly afterwards.
///   With per-group learning-rate multipliers c, the step of each group is c xi,
///   so v is replaced by c * v throughout (identical to the above when every c = 1).
/// * alpha: Adam (betas 0.5, 0.999; L2 weight decay added to the gradient).
/// * w: SGD momentum 0.9, weight decay on every part of w but the head's bias,
///   gradient-norm clipping, a learning-rate multiplier per operator and for the head.
/// * With a cost term (search/cost.hpp), alpha's gradient gains lambda dE/dalpha / R
///   after the loss's gradient (and the hook); with a budget, lambda then takes a step of
///   dual ascent towards the budget.

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "../optim/adam.hpp"
#include "../optim/sgd.hpp"
#include "../train/loop.hpp"
#include "cost.hpp"
#include "prompted_vit.hpp"

namespace vpdarts {

/// First- or second-order DARTS.
enum class darts_order {
  first,  ///< alpha's gradient at the current w (DARTS's first-order approximation)
  second  ///< through a virtual w step, with the finite-difference Hessian-vector product
};

/// Settings of the bi-level optimiser: w's SGD and alpha's Adam (docs/method.md's defaults).
struct bilevel_options {
  darts_order order = darts_order::first;  ///< first or second order
  w_optimizer_options w = {};     ///< w's optimiser (its lr is w's base learning rate; the schedule sets it per step)
  double alpha_lr = 3e-4;         ///< Adam learning rate of alpha (search() picks one from the step count)
  double alpha_beta1 = 0.5;       ///< Adam beta1 of alpha (DARTS's 0.5)
  double alpha_beta2 = 0.999;     ///< Adam beta2 of alpha
  double alpha_weight_decay = 1e-3;  ///< L2, added to the gradient (PyTorch's Adam)
  /// A cost in alpha's objective, with an optional budget (search/cost.hpp); none by default.
  cost_objective cost = {};
  /// How the step's tape runs its kernels (precision, product engine, memory; kernels/execution.hpp).
  execution_config execution = {};
};

/// Losses of one step.
struct bilevel_step_result {
  double val_loss = 0;    ///< L_val at the start of the step (w' for second order)
  double train_loss = 0;  ///< L_train of the w update
};

/// Runs DARTS steps on a search model: the bi-level optimiser of w (SGD) and
/// alpha (Adam). Holds the two optimisers and the buffers of the second-order
/// step (allocated once). Every gradient it uses passes the gradient hook
/// first (see apply_gradients()). With `parallel` over several processes,
/// every step's batches are the global ones and each process computes its
/// share of them (the caller gathers the share): each of the step's
/// gradients (both of a first-order step, all four of a second-order step)
/// is summed over the processes as it is computed, so every process takes
/// the single-process step.
template <Scalar S, OpList Ops>
class bilevel_optimizer {
 public:
  /// @throws config_error for a derived model or a multiplier list of the wrong length.
  bilevel_optimizer(prompted_vit<S, Ops>& model, const bilevel_options& o, gradient_hook<S> hook = {},
                    data_parallel parallel = {})
      : model_(model), opts_(o), hook_(std::move(hook)), parallel_(std::move(parallel)), w_opt_(model.weight_groups(o.w.op_lr_mult, o.w.head_lr_mult), o.w.sgd()),
        alpha_opt_({&model.alpha()}, {.lr = o.alpha_lr, .beta1 = o.alpha_beta1, .beta2 = o.alpha_beta2,
                                      .weight_decay = o.alpha_weight_decay, .decoupled = false}) {
    if (!model.is_search()) throw config_error("bilevel_optimizer: the model is a derived model; search needs alpha");
    o.cost.check(model.config().depth, static_cast<index>(Ops::size), "bilevel_optimizer");
    tape_.configure(o.execution);
    for (const auto& g : w_opt_.groups())
      for (parameter<S>* p : g.params) {
        flat_.push_back(p);
        mult_.push_back(g.lr_mult);
        decay_.push_back(g.decay);
        backup_.push_back(matrix<S>::Zero(p->rows(), p->cols()));
        dir_.push_back(matrix<S>::Zero(p->rows(), p->cols()));
      }
    dalpha_ = matrix<S>::Zero(model.alpha().rows(), model.alpha().cols());
    all_ = flat_;
    all_.push_back(&model.alpha());
  }

  /// One step: alpha on (val_x, val_y) unless `update_alpha` is false (warm-up), then w on (train_x, train_y).
  /// @throws value_error when a loss or gradient is NaN or Inf.
  bilevel_step_result step(const image_batch<S>& train_x, std::span<const int> train_y, const image_batch<S>& val_x,
                         std::span<const int> val_y, bool update_alpha = true) {
    bilevel_step_result r;
    if (update_alpha) {
      if (opts_.order == darts_order::first) {
        r.val_loss = alpha_grad_first(val_x, val_y);
        if (hook_) hook_(alpha_params());
      } else {
        r.val_loss = alpha_grad_second(train_x, train_y, val_x, val_y);  // its parts passed the hook
      }
      add_cost_gradient();
      alpha_opt_.step();
    }
    r.train_loss = w_step(train_x, train_y);
    return r;
  }

  /// Leaves d L_val(w, alpha) / d alpha in alpha's gradient; returns L_val.
  double alpha_grad_first(const image_batch<S>& x, std::span<const int> y) {
    model_.alpha().zero_grad();
    return loss(x, y, grad_target::alpha);
  }

  /// Leaves DARTS's second-order alpha gradient in alpha's gradient and w as it
  /// was (bit-exact); returns L_val(w', alpha). Each of its four gradients
  /// passes the gradient hook as it is computed.
  double alpha_grad_second(const image_batch<S>& tx, std::span<const int> ty, const image_batch<S>& vx,
                           std::span<const int> vy) {
    const std::size_t n = flat_.size();
    const S xi = static_cast<S>(w_opt_.lr()), mu = static_cast<S>(opts_.w.momentum);
    const S wd = static_cast<S>(opts_.w.weight_decay);
    auto& momentum = w_opt_.momentum_buffers();
    // grad_w L_train(w, alpha)
    w_opt_.zero_grad();
    loss(tx, ty, grad_target::weights);
    if (hook_) hook_(flat_);
    // w' = w - c xi (mu m + g + wd w)
    for (std::size_t i = 0; i < n; ++i) {
      matrix<S>& w = flat_[i]->value();
      backup_[i] = w;
      const S step = xi * static_cast<S>(mult_[i]);
      if (decay_[i]) w -= step * (mu * momentum[i] + flat_[i]->grad() + wd * backup_[i]);
      else w -= step * (mu * momentum[i] + flat_[i]->grad());
    }
    // v = grad_w' L_val(w', alpha), and grad_alpha L_val(w', alpha)
    w_opt_.zero_grad();
    model_.alpha().zero_grad();
    const double val = loss(vx, vy, grad_target::all);
    if (hook_) {
      hook_(flat_);
      hook_(alpha_params());
    }
    dalpha_ = model_.alpha().grad();
    double sq = 0;
    for (std::size_t i = 0; i < n; ++i) {
      dir_[i] = static_cast<S>(mult_[i]) * flat_[i]->grad();
      sq += static_cast<double>(dir_[i].squaredNorm());
    }
    const double norm = std::sqrt(sq);
    if (!std::isfinite(norm)) throw value_error(detail::cat("bilevel_optimizer: the norm of grad_w' L_val is ", norm));
    if (norm == 0) {  // no implicit term
      restore();
      model_.alpha().grad() = dalpha_;
      return val;
    }
    const S eps = static_cast<S>(0.01 / norm);
    // grad_alpha L_train(w +- eps v, alpha)
    for (std::size_t i = 0; i < n; ++i) flat_[i]->value() = backup_[i] + eps * dir_[i];
    model_.alpha().zero_grad();
    loss(tx, ty, grad_target::alpha);
    if (hook_) hook_(alpha_params());
    matrix<S>& g = model_.alpha().grad();
    dalpha_ -= (xi / (2 * eps)) * g;
    for (std::size_t i = 0; i < n; ++i) flat_[i]->value() = backup_[i] - eps * dir_[i];
    g.setZero();
    loss(tx, ty, grad_target::alpha);
    if (hook_) hook_(alpha_params());
    dalpha_ += (xi / (2 * eps)) * g;
    restore();
    g = dalpha_;
    w_opt_.zero_grad();
    return val;
  }

  /// Adds the cost term's gradient, lambda dE/dalpha / R, to alpha's gradient; with a budget,
  /// then moves lambda by dual ascent. Does nothing without a cost term.
  void add_cost_gradient() {
    cost_objective& c = opts_.cost;
    if (c.cost.size() == 0) return;
    matrix<double> g;
    const double e = expected_cost(model_.alpha().value(), c.cost, &g);
    expected_ = c.fixed + e;
    const double range = c.range();
    if (c.lambda > 0) model_.alpha().grad() += static_cast<S>(c.lambda / range) * g.cast<S>();
    if (c.budget) c.lambda = std::max(0.0, c.lambda + c.lambda_rate * (expected_ - *c.budget) / range);
  }

  /// The cost term as it stands (its lambda moves with a budget).
  const cost_objective& cost() const noexcept { return opts_.cost; }
  /// Replaces the cost term (a resumed search puts back the table and lambda it ran with).
  /// @throws config_error as cost_objective::check().
  void set_cost(cost_objective c) {
    c.check(model_.config().depth, static_cast<index>(Ops::size), "bilevel_optimizer");
    opts_.cost = std::move(c);
  }
  /// The expected total cost, fixed + E(alpha), at the last alpha step (NaN before one, or without a cost term).
  double expected_cost_now() const noexcept { return expected_; }

  /// The w update on a search-train batch (gradient for w only, clipped); returns L_train.
  double w_step(const image_batch<S>& x, std::span<const int> y) {
    w_opt_.zero_grad();
    const double l = loss(x, y, grad_target::weights);
    apply_gradients<S>(w_opt_, flat_, opts_.w.grad_clip, hook_);
    return l;
  }

  /// w's SGD (its lr is set per step by the schedule; checkpoints save its momentum buffers).
  optim::sgd<S>& w_optimizer() noexcept { return w_opt_; }
  /// alpha's Adam (checkpoints save its moments).
  optim::adam<S>& alpha_optimizer() noexcept { return alpha_opt_; }
  /// The settings.
  const bilevel_options& options() const noexcept { return opts_; }
  /// The tape every step records on (for memory statistics: memory(), adjoint_memory(), temp_memory()).
  const tape<S>& step_tape() const noexcept { return tape_; }
  /// Everything it trains: w (prompts, operator parameters and head, in the optimiser's order), then alpha.
  std::span<parameter<S>* const> parameters() const noexcept { return all_; }

 private:
  std::span<parameter<S>* const> alpha_params() noexcept { return {&alpha_ptr_, 1}; }

  // The loss of this process's share x, y and the gradient of `target`,
  // both summed over the processes: the global batch's mean loss and gradient.
  double loss(const image_batch<S>& x, std::span<const int> y, grad_target target) {
    std::span<parameter<S>* const> params = target == grad_target::alpha     ? alpha_params()
                                            : target == grad_target::weights ? std::span<parameter<S>* const>(flat_)
                                                                             : std::span<parameter<S>* const>(all_);
    return parallel_.gradient_step<S>(params, x.size(), [&] {
      tape_.reset();
      var<S> l = cross_entropy(model_.logits(tape_, x, target), y);
      tape_.backward(l);
      return local_step{static_cast<double>(l.item())};
    }).loss;
  }

  void restore() {
    for (std::size_t i = 0; i < flat_.size(); ++i) flat_[i]->value() = backup_[i];
  }

  prompted_vit<S, Ops>& model_;
  bilevel_options opts_;
  gradient_hook<S> hook_;
  data_parallel parallel_;
  parameter<S>* alpha_ptr_ = &model_.alpha();
  optim::sgd<S> w_opt_;
  optim::adam<S> alpha_opt_;
  tape<S> tape_;
  std::vector<parameter<S>*> flat_, all_;
  std::vector<double> mult_;
  std::vector<bool> decay_;
  std::vector<matrix<S>> backup_, dir_;
  matrix<S> dalpha_;
  double expected_ = std::numeric_limits<double>::quiet_NaN();
};

}  // namespace vpdarts
