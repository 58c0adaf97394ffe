#pragma once
/// @file schedule.hpp
/// Learning-rate schedules.

#include <algorithm>
#include <cmath>
#include <numbers>

namespace vpdarts::optim {

/// Linear warm-up from base/warmup to base over `warmup` steps, then cosine
/// decay to `min_lr` at step `total` (steps count from 0).
struct warmup_cosine {
  double base = 0.1;   ///< Peak learning rate, reached at the end of the warm-up.
  long warmup = 0;     ///< Warm-up steps (0: none).
  long total = 1;      ///< Step at which the cosine reaches min_lr.
  double min_lr = 0;   ///< Floor of the decay.

  /// The learning rate at `step` (counting from 0); min_lr after `total`.
  double operator()(long step) const {
    if (step < warmup) return base * static_cast<double>(step + 1) / static_cast<double>(warmup);
    const long span = std::max<long>(1, total - warmup);
    const double t = std::clamp(static_cast<double>(step - warmup) / static_cast<double>(span), 0.0, 1.0);
    return min_lr + 0.5 * (base - min_lr) * (1 + std::cos(std::numbers::pi * t));
  }
};

}  // namespace vpdarts::optim
