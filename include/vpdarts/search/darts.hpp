#pragma once
/// @file darts.hpp
/// One step of bi-level DARTS (DESIGN.md section 5): first the architecture
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

#include <cmath>
#include <span>
#include <vector>

#include "../optim/adam.hpp"
#include "../optim/sgd.hpp"
#include "prompted_vit.hpp"

namespace vpdarts {

/// First- or second-order DARTS.
enum class darts_order {
  first,  ///< alpha's gradient at the current w (DARTS's first-order approximation)
  second  ///< through a virtual w step, with the finite-difference Hessian-vector product
};

/// Settings of a DARTS step (DESIGN.md's defaults).
struct darts_options {
  darts_order order = darts_order::first;  ///< first or second order
  double w_lr = 0.05;             ///< base learning rate of w (the schedule sets it per step)
  double w_momentum = 0.9;        ///< SGD momentum of w
  double w_weight_decay = 1e-4;   ///< on every part of w but the head's bias
  double grad_clip = 5;           ///< w's gradient-norm clip (0: none)
  std::vector<double> op_lr_mult = {};  ///< per operator, in op-list order (empty: all 1)
  double head_lr_mult = 1;        ///< lr multiplier of the classification head
  double alpha_lr = 3e-4;         ///< Adam learning rate of alpha (search() picks one from the step count)
  double alpha_beta1 = 0.5;       ///< Adam beta1 of alpha (DARTS's 0.5)
  double alpha_beta2 = 0.999;     ///< Adam beta2 of alpha
  double alpha_weight_decay = 1e-3;  ///< L2, added to the gradient (PyTorch's Adam)
};

/// Losses of one step.
struct darts_step_result {
  double val_loss = 0;    ///< L_val at the start of the step (w' for second order)
  double train_loss = 0;  ///< L_train of the w update
};

/// The SGD groups of w: one per operator (its parameters at every layer, with
/// its lr multiplier), the head's weight, and the head's bias (no weight decay).
/// @throws config_error when op_lr_mult is neither empty nor one per operator.
template <Scalar S, OpList Ops>
std::vector<optim::param_group<S>> weight_groups(prompted_vit<S, Ops>& m, const std::vector<double>& op_lr_mult,
                                                 double head_lr_mult) {
  if (!op_lr_mult.empty() && op_lr_mult.size() != Ops::size)
    throw config_error(detail::cat("weight_groups: ", op_lr_mult.size(), " operator lr multipliers for ", Ops::size,
                                   " operators (", detail::join(Ops::names), ")"));
  std::vector<optim::param_group<S>> out;
  for (std::size_t k = 0; k < Ops::size; ++k) {
    optim::param_group<S> g{{}, op_lr_mult.empty() ? 1.0 : op_lr_mult[k], true, std::string(Ops::names[k])};
    for (index l = 0; l < m.config().depth; ++l)
      for (auto& p : m.op_parameters(l, k)) g.params.push_back(&p);
    out.push_back(std::move(g));
  }
  out.push_back({{&m.backbone().head.weight}, head_lr_mult, true, "head.weight"});
  out.push_back({{&m.backbone().head.bias}, head_lr_mult, false, "head.bias"});
  return out;
}

/// Runs DARTS steps on a search model. Holds the two optimisers and the buffers
/// of the second-order step (allocated once).
template <Scalar S, OpList Ops>
class darts {
 public:
  /// @throws config_error for a derived model or a multiplier list of the wrong length.
  darts(prompted_vit<S, Ops>& model, const darts_options& o)
      : model_(model), opts_(o), w_opt_(groups(model, o), {o.w_lr, o.w_momentum, o.w_weight_decay}),
        alpha_opt_({&model.alpha()}, {.lr = o.alpha_lr, .beta1 = o.alpha_beta1, .beta2 = o.alpha_beta2,
                                      .weight_decay = o.alpha_weight_decay, .decoupled = false}) {
    if (!model.is_search()) throw config_error("darts: the model is a derived model; search needs alpha");
    for (const auto& g : w_opt_.groups())
      for (parameter<S>* p : g.params) {
        flat_.push_back(p);
        mult_.push_back(g.lr_mult);
        decay_.push_back(g.decay);
        backup_.push_back(matrix<S>::Zero(p->rows(), p->cols()));
        dir_.push_back(matrix<S>::Zero(p->rows(), p->cols()));
      }
    dalpha_ = matrix<S>::Zero(model.alpha().rows(), model.alpha().cols());
  }

  /// One step: alpha on (val_x, val_y) unless `update_alpha` is false (warm-up), then w on (train_x, train_y).
  /// @throws value_error when a loss or gradient is NaN or Inf.
  darts_step_result step(const image_batch<S>& train_x, std::span<const int> train_y, const image_batch<S>& val_x,
                         std::span<const int> val_y, bool update_alpha = true) {
    darts_step_result r;
    if (update_alpha) {
      r.val_loss = opts_.order == darts_order::first ? alpha_grad_first(val_x, val_y)
                                                     : alpha_grad_second(train_x, train_y, val_x, val_y);
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
  /// was (bit-exact); returns L_val(w', alpha).
  double alpha_grad_second(const image_batch<S>& tx, std::span<const int> ty, const image_batch<S>& vx,
                           std::span<const int> vy) {
    const std::size_t n = flat_.size();
    const S xi = static_cast<S>(w_opt_.lr()), mu = static_cast<S>(opts_.w_momentum);
    const S wd = static_cast<S>(opts_.w_weight_decay);
    auto& momentum = w_opt_.momentum_buffers();
    // grad_w L_train(w, alpha)
    w_opt_.zero_grad();
    loss(tx, ty, grad_target::weights);
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
    dalpha_ = model_.alpha().grad();
    double sq = 0;
    for (std::size_t i = 0; i < n; ++i) {
      dir_[i] = static_cast<S>(mult_[i]) * flat_[i]->grad();
      sq += static_cast<double>(dir_[i].squaredNorm());
    }
    const double norm = std::sqrt(sq);
    if (!std::isfinite(norm)) throw value_error(detail::cat("darts: the norm of grad_w' L_val is ", norm));
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
    matrix<S>& g = model_.alpha().grad();
    dalpha_ -= (xi / (2 * eps)) * g;
    for (std::size_t i = 0; i < n; ++i) flat_[i]->value() = backup_[i] - eps * dir_[i];
    g.setZero();
    loss(tx, ty, grad_target::alpha);
    dalpha_ += (xi / (2 * eps)) * g;
    restore();
    g = dalpha_;
    w_opt_.zero_grad();
    return val;
  }

  /// The w update on a search-train batch (gradient for w only, clipped); returns L_train.
  double w_step(const image_batch<S>& x, std::span<const int> y) {
    w_opt_.zero_grad();
    const double l = loss(x, y, grad_target::weights);
    if (opts_.grad_clip > 0) optim::clip_grad_norm<S>(flat_, opts_.grad_clip);
    w_opt_.step();
    return l;
  }

  /// w's SGD (its lr is set per step by the schedule; checkpoints save its momentum buffers).
  optim::sgd<S>& w_optimizer() noexcept { return w_opt_; }
  /// alpha's Adam (checkpoints save its moments).
  optim::adam<S>& alpha_optimizer() noexcept { return alpha_opt_; }
  /// The settings.
  const darts_options& options() const noexcept { return opts_; }

 private:
  static std::vector<optim::param_group<S>> groups(prompted_vit<S, Ops>& m, const darts_options& o) {
    return weight_groups(m, o.op_lr_mult, o.head_lr_mult);
  }

  double loss(const image_batch<S>& x, std::span<const int> y, grad_target target) {
    tape_.reset();
    var<S> l = cross_entropy(model_.logits(tape_, x, target), y);
    tape_.backward(l);
    return static_cast<double>(l.item());
  }

  void restore() {
    for (std::size_t i = 0; i < flat_.size(); ++i) flat_[i]->value() = backup_[i];
  }

  prompted_vit<S, Ops>& model_;
  darts_options opts_;
  optim::sgd<S> w_opt_;
  optim::adam<S> alpha_opt_;
  tape<S> tape_;
  std::vector<parameter<S>*> flat_;
  std::vector<double> mult_;
  std::vector<bool> decay_;
  std::vector<matrix<S>> backup_, dir_;
  matrix<S> dalpha_;
};

}  // namespace vpdarts
