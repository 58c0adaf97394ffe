#pragma once
/// @file labelled_images.hpp
/// The dataset type every loader returns (synthetic, image folders and lists,
/// IDX files): images, one label per image, and the class names.

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "../detail/hash.hpp"
#include "../error.hpp"
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
  /// A hash of the pixels, the labels and the class names (16 hex digits): two processes that were
  /// meant to load the same data compare it before they train together.
  std::string fingerprint() const {
    detail::fnv1a h;
    h.add(images.pixels.data(), static_cast<std::size_t>(images.pixels.size()) * sizeof(S));
    h.add(labels.data(), labels.size() * sizeof(int));
    for (const auto& name : class_names) h.add(name);
    return h.hex();
  }
  /// Copies the listed images and their labels into x and y, reusing their
  /// storage (no allocation in a training loop once warm).
  /// @throws shape_error for an index outside the set.
  void gather(std::span<const index> rows, image_batch<S>& x, std::vector<int>& y) const {
    images.gather(rows, x);
    y.resize(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) y[i] = labels[static_cast<std::size_t>(rows[i])];
  }
  /// Re-numbers the labels so that class_names becomes `names`, matching classes
  /// by name (a test set read from folders against the classes a model was
  /// trained on). @throws config_error naming `who` and the class when one of
  /// this set's classes is not in `names`.
  void relabel_to(const std::vector<std::string>& names, const std::string& who) {
    std::vector<int> to(class_names.size());
    for (std::size_t k = 0; k < class_names.size(); ++k) {
      const auto it = std::find(names.begin(), names.end(), class_names[k]);
      if (it == names.end())
        throw config_error(who + ": the data's class '" + class_names[k] + "' is not one of the " +
                           std::to_string(names.size()) + " classes it is matched against");
      to[k] = static_cast<int>(it - names.begin());
    }
    for (int& y : labels) y = to[static_cast<std::size_t>(y)];
    class_names = names;
  }
  /// The subset of the listed images, same classes.
  labelled_images select(std::span<const index> rows) const {
    labelled_images out{images.select(rows), {}, class_names};
    for (index r : rows) out.labels.push_back(labels[static_cast<std::size_t>(r)]);
    return out;
  }
};

}  // namespace vpdarts::data
