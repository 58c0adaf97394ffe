#pragma once
/// @file image_batch.hpp
/// A batch of images as the models take it.

#include <span>
#include <vector>

#include "../detail/format.hpp"
#include "../error.hpp"
#include "../fwd.hpp"

namespace vpdarts {

/// B images of C x H x W, one image per row of `pixels` in NCHW order
/// (channel planes, each row-major), so row b is PyTorch's images[b].flatten().
template <Scalar S>
struct image_batch {
  matrix<S> pixels;    ///< B x (C*H*W).
  index channels = 0;  ///< C.
  index height = 0;    ///< H.
  index width = 0;     ///< W.

  /// An empty batch.
  image_batch() = default;
  /// An uninitialised batch of `batch` images.
  image_batch(index batch, index c, index h, index w) : pixels(batch, c * h * w), channels(c), height(h), width(w) {}

  /// Number of images B.
  index size() const noexcept { return pixels.rows(); }
  /// "8x3x32x32".
  std::string shape() const { return detail::cat(size(), "x", channels, "x", height, "x", width); }

  /// Copies the listed images into `out`, reusing its storage when the size fits
  /// (no allocation in a training loop once warm).
  /// @throws shape_error for an index outside the batch.
  void gather(std::span<const index> rows, image_batch& out) const {
    const index n = static_cast<index>(rows.size());
    if (out.pixels.rows() != n || out.pixels.cols() != pixels.cols()) out.pixels.resize(n, pixels.cols());
    out.channels = channels;
    out.height = height;
    out.width = width;
    for (index i = 0; i < n; ++i) {
      const index r = rows[static_cast<std::size_t>(i)];
      if (r < 0 || r >= size())
        throw shape_error(detail::cat("image_batch::gather: index ", r, " is outside a batch of ", size()));
      out.pixels.row(i) = pixels.row(r);
    }
  }

  /// The images whose indices are listed, as a new batch.
  image_batch select(std::span<const index> rows) const {
    image_batch out(static_cast<index>(rows.size()), channels, height, width);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (rows[i] < 0 || rows[i] >= size())
        throw shape_error(detail::cat("image_batch::select: index ", rows[i], " is outside a batch of ", size()));
      out.pixels.row(static_cast<index>(i)) = pixels.row(rows[i]);
    }
    return out;
  }
};

}  // namespace vpdarts
