#pragma once
/// @file adam.hpp
/// Adam, as PyTorch defines it, with L2 weight decay added to the gradient
/// (torch.optim.Adam, what DARTS uses for alpha) or decoupled (AdamW).

#include <cmath>
#include <vector>

#include "../autodiff/parameter.hpp"
#include "../detail/profile.hpp"

namespace vpdarts::optim {

/// Settings of adam.
struct adam_options {
  double lr = 1e-3;         ///< Learning rate.
  double beta1 = 0.9;       ///< Decay of the first-moment estimate.
  double beta2 = 0.999;     ///< Decay of the second-moment estimate.
  double eps = 1e-8;        ///< Added to the denominator.
  double weight_decay = 0;  ///< Weight decay (see `decoupled`).
  /// false: L2 (wd * p added to the gradient, torch.optim.Adam); true: decoupled (torch.optim.AdamW).
  bool decoupled = false;
};

/// Adam over a list of trainable parameters (they must outlive the optimiser).
template <Scalar S>
class adam {
 public:
  /// An optimiser over `params`, with zero moments and step count 0.
  adam(std::vector<parameter<S>*> params, adam_options o) : params_(std::move(params)), o_(o) {
    for (parameter<S>* p : params_) {
      m_.push_back(matrix<S>::Zero(p->rows(), p->cols()));
      v_.push_back(matrix<S>::Zero(p->rows(), p->cols()));
    }
  }

  /// One update from the parameters' current gradients (frozen parameters are skipped).
  void step() {
  detail::profile_scope profiled(detail::profile_kind::optimiser);
    ++t_;
    const double c1 = 1 - std::pow(o_.beta1, t_), c2 = 1 - std::pow(o_.beta2, t_);
    const S lr = static_cast<S>(o_.lr), b1 = static_cast<S>(o_.beta1), b2 = static_cast<S>(o_.beta2);
    const S wd = static_cast<S>(o_.weight_decay), eps = static_cast<S>(o_.eps);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      parameter<S>& p = *params_[i];
      if (!p.requires_grad()) continue;
      auto w = p.value().array();
      auto g = p.grad().array();
      if (o_.decoupled && wd != 0) w *= S(1) - lr * wd;
      auto m = m_[i].array();
      auto v = v_[i].array();
      if (!o_.decoupled && wd != 0) {
        m = b1 * m + (S(1) - b1) * (g + wd * w);
        v = b2 * v + (S(1) - b2) * (g + wd * w).square();
      } else {
        m = b1 * m + (S(1) - b1) * g;
        v = b2 * v + (S(1) - b2) * g.square();
      }
      w -= lr * (m / static_cast<S>(c1)) / ((v / static_cast<S>(c2)).sqrt() + eps);
    }
  }
  /// Zeroes every parameter's gradient.
  void zero_grad() {
    for (parameter<S>* p : params_) p->zero_grad();
  }
  /// Sets the learning rate.
  void set_lr(double lr) noexcept { o_.lr = lr; }
  /// The learning rate.
  double lr() const noexcept { return o_.lr; }
  /// Number of steps taken.
  long steps() const noexcept { return t_; }
  /// The first moment estimates, in parameter order. With second_moments() and
  /// steps() this is what a checkpoint must keep for a resumed run to continue exactly.
  std::vector<matrix<S>>& first_moments() noexcept { return m_; }
  /// The second moment estimates, in parameter order.
  std::vector<matrix<S>>& second_moments() noexcept { return v_; }
  /// Sets the step count (used by bias correction), as restored from a checkpoint.
  void set_steps(long t) noexcept { t_ = t; }

 private:
  std::vector<parameter<S>*> params_;
  adam_options o_;
  std::vector<matrix<S>> m_, v_;
  long t_ = 0;
};

}  // namespace vpdarts::optim
