#pragma once
/// @file labelled_images.hpp
/// The dataset type every loader returns (synthetic, image folders and lists,
/// IDX files): images, one label per image, and the class names.

#include <span>
#include <string>
#include <vector>

#include "../fwd.hpp"
#include "image_batch.hpp"

namespace vpdarts::data {

/// Labelled images: `labels[i]` in [0, class_names.size()) is the class of image i.
template <Scalar S>
struct labelled_images {
  image_batch<S> images;                 ///< one image per row
  std::vector<int> labels;               ///< one label per image
  std::vector<std::string> class_names;  ///< name of each label

  /// Number of images.
  index size() const noexcept { return images.size(); }
  /// Number of classes.
  index classes() const noexcept { return static_cast<index>(class_names.size()); }
  /// Copies the listed images and their labels into x and y, reusing their
  /// storage (no allocation in a training loop once warm).
  /// @throws shape_error for an index outside the set.
  void gather(std::span<const index> rows, image_batch<S>& x, std::vector<int>& y) const {
    images.gather(rows, x);
    y.resize(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) y[i] = labels[static_cast<std::size_t>(rows[i])];
  }
  /// The subset of the listed images, same classes.
  labelled_images select(std::span<const index> rows) const {
    labelled_images out{images.select(rows), {}, class_names};
    for (index r : rows) out.labels.push_back(labels[static_cast<std::size_t>(r)]);
    return out;
  }
};

}  // namespace vpdarts::data
