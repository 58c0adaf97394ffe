#pragma once
/// @file pos_embed.hpp
/// Resampling a position embedding to another patch grid, as timm's
/// resample_abs_pos_embed does when a checkpoint is used at another image
/// size: the prefix rows are kept, the grid rows are resampled by bicubic
/// interpolation with antialiasing, exactly as
/// torch.nn.functional.interpolate(mode="bicubic", antialias=True,
/// align_corners=False) computes it (PIL's filter: cubic convolution with
/// a = -0.5, its support widened by the scale when shrinking, weights
/// normalised to sum 1).

#include <algorithm>
#include <cmath>
#include <vector>

#include "../detail/format.hpp"
#include "../error.hpp"
#include "../fwd.hpp"

namespace vpdarts {
namespace detail {

/// PIL's (and PyTorch's antialiased) bicubic filter, a = -0.5.
inline double aa_bicubic(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

/// The antialiased resampling weights from `in` samples to `out`: for output
/// i, the first input index and the normalised weights.
struct aa_weights {
  std::vector<index> first;
  std::vector<std::vector<double>> w;

  aa_weights(index in, index out) : first(static_cast<std::size_t>(out)), w(static_cast<std::size_t>(out)) {
    const double scale = static_cast<double>(in) / static_cast<double>(out);
    const double support = scale >= 1 ? 2.0 * scale : 2.0;  // interp_size / 2, widened when shrinking
    const double invscale = scale >= 1 ? 1.0 / scale : 1.0;
    for (index i = 0; i < out; ++i) {
      const double center = scale * (static_cast<double>(i) + 0.5);
      const index lo = std::max<index>(static_cast<index>(center - support + 0.5), 0);
      const index hi = std::min<index>(static_cast<index>(center + support + 0.5), in);
      auto& wi = w[static_cast<std::size_t>(i)];
      double total = 0;
      for (index j = lo; j < hi; ++j) {
        wi.push_back(aa_bicubic((static_cast<double>(j) - center + 0.5) * invscale));
        total += wi.back();
      }
      if (total != 0)
        for (double& v : wi) v /= total;
      first[static_cast<std::size_t>(i)] = lo;
    }
  }
};

}  // namespace detail

/// pos_embed (rows x D, the first `prefix` rows kept as they are, the rest an
/// old_grid x old_grid grid in row-major order) resampled to a new_grid x new_grid
/// grid: (prefix + new_grid^2) x D. Unchanged when the grids are equal.
/// @throws shape_error when the rows are not prefix + old_grid^2, or a grid is not positive.
template <Scalar S>
matrix<S> resample_pos_embed(const matrix<S>& pos, index prefix, index old_grid, index new_grid) {
  if (old_grid <= 0 || new_grid <= 0 || prefix < 0 || pos.rows() != prefix + old_grid * old_grid)
    throw shape_error(detail::cat("resample_pos_embed: pos_embed has ", pos.rows(), " rows, not ", prefix, " prefix rows and a ",
                                  old_grid, "x", old_grid, " grid (to resample to ", new_grid, "x", new_grid, ")"));
  if (old_grid == new_grid) return pos;
  const index d = pos.cols();
  const detail::aa_weights wt(old_grid, new_grid);
  // rows first (the y axis), in double, then columns
  matrix<double> mid = matrix<double>::Zero(new_grid * old_grid, d);
  for (index y = 0; y < new_grid; ++y) {
    const auto& w = wt.w[static_cast<std::size_t>(y)];
    for (std::size_t j = 0; j < w.size(); ++j) {
      const index sy = wt.first[static_cast<std::size_t>(y)] + static_cast<index>(j);
      for (index x = 0; x < old_grid; ++x)
        mid.row(y * old_grid + x) += w[j] * pos.row(prefix + sy * old_grid + x).template cast<double>();
    }
  }
  matrix<S> out(prefix + new_grid * new_grid, d);
  out.topRows(prefix) = pos.topRows(prefix);
  for (index y = 0; y < new_grid; ++y)
    for (index x = 0; x < new_grid; ++x) {
      const auto& w = wt.w[static_cast<std::size_t>(x)];
      Eigen::RowVectorXd acc = Eigen::RowVectorXd::Zero(d);
      for (std::size_t j = 0; j < w.size(); ++j)
        acc += w[j] * mid.row(y * old_grid + wt.first[static_cast<std::size_t>(x)] + static_cast<index>(j));
      out.row(prefix + y * new_grid + x) = acc.cast<S>();
    }
  return out;
}

}  // namespace vpdarts
