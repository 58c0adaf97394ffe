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
  matrix<S> pixels;
  index channels = 0;
  index height = 0;
  index width = 0;

  image_batch() = default;
  /// An uninitialised batch of `batch` images.
  image_batch(index batch, index c, index h, index w) : pixels(batch, c * h * w), channels(c), height(h), width(w) {}

  index size() const noexcept { return pixels.rows(); }
  /// "8x3x32x32".
  std::string shape() const { return detail::cat(size(), "x", channels, "x", height, "x", width); }

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
