#pragma once
/// @file sgd.hpp
/// SGD with momentum and weight decay, as torch.optim.SGD (no dampening, no
/// Nesterov): g = grad + wd * p; buf = mu * buf + g; p -= lr * buf. Parameters
/// come in groups, each with a learning-rate multiplier and a decay switch
/// (DARTS decays every part of w but the head's bias), and gradient-norm clipping.

#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "../autodiff/parameter.hpp"
#include "../detail/profile.hpp"

namespace vpdarts::optim {

/// Parameters that share a learning-rate multiplier and a decay switch.
template <Scalar S>
struct param_group {
  std::vector<parameter<S>*> params = {};  ///< The group's parameters (not owned).
  double lr_mult = 1;                      ///< The group's lr is the optimiser's lr times this.
  bool decay = true;                       ///< Whether weight decay applies to the group.
  std::string name = {};                   ///< A label for messages and checkpoints.
};

/// Settings of sgd.
struct sgd_options {
  double lr = 0.1;          ///< Base learning rate.
  double momentum = 0.9;    ///< Momentum mu (0 for plain SGD).
  double weight_decay = 0;  ///< L2 weight decay added to the gradient.
};

/// SGD with momentum over parameter groups (the parameters must outlive it).
template <Scalar S>
class sgd {
 public:
  /// An optimiser over `groups`, with zero momentum buffers.
  sgd(std::vector<param_group<S>> groups, sgd_options o) : groups_(std::move(groups)), o_(o) {
    for (auto& g : groups_)
      for (parameter<S>* p : g.params) buffers_.push_back(matrix<S>::Zero(p->rows(), p->cols()));
  }

  /// One update from the current gradients (frozen parameters are skipped).
  void step() {
  detail::profile_scope profiled(detail::profile_kind::optimiser);
    std::size_t i = 0;
    for (auto& g : groups_) {
      const S lr = static_cast<S>(o_.lr * g.lr_mult), mu = static_cast<S>(o_.momentum);
      const S wd = g.decay ? static_cast<S>(o_.weight_decay) : S(0);
      for (parameter<S>* p : g.params) {
        matrix<S>& buf = buffers_[i++];
        if (!p->requires_grad()) continue;
        if (wd != 0) buf = mu * buf + p->grad() + wd * p->value();
        else buf = mu * buf + p->grad();
        p->value() -= lr * buf;
      }
    }
  }
  /// Zeroes every gradient.
  void zero_grad() {
    for (auto& g : groups_)
      for (parameter<S>* p : g.params) p->zero_grad();
  }
  /// Sets the base learning rate (schedules call it every step).
  void set_lr(double lr) noexcept { o_.lr = lr; }
  /// The base learning rate.
  double lr() const noexcept { return o_.lr; }
  /// The settings.
  const sgd_options& options() const noexcept { return o_; }
  /// The parameter groups, in the order given.
  const std::vector<param_group<S>>& groups() const noexcept { return groups_; }
  /// The momentum buffers, in group order (DARTS's virtual step reads them).
  std::vector<matrix<S>>& momentum_buffers() noexcept { return buffers_; }

 private:
  std::vector<param_group<S>> groups_;
  sgd_options o_;
  std::vector<matrix<S>> buffers_;
};

/// Scales the gradients so that their joint L2 norm is at most max_norm (as
/// torch.nn.utils.clip_grad_norm_); returns the norm before clipping.
/// @throws value_error when the norm is NaN or Inf.
template <Scalar S>
double clip_grad_norm(std::span<parameter<S>* const> params, double max_norm) {
  double sq = 0;
  for (parameter<S>* p : params)
    if (p->requires_grad()) sq += static_cast<double>(p->grad().squaredNorm());
  const double norm = std::sqrt(sq);
  if (!std::isfinite(norm)) throw value_error(detail::cat("clip_grad_norm: the gradient norm is ", norm));
  if (norm > max_norm) {
    const S scale = static_cast<S>(max_norm / (norm + 1e-6));
    for (parameter<S>* p : params)
      if (p->requires_grad()) p->grad() *= scale;
  }
  return norm;
}

}  // namespace vpdarts::optim
