#pragma once
/// @file config.hpp
/// The shape of a Vision Transformer, with validation and the reference workloads of docs/method.md (section 7) as presets.

#include <string>

#include "../detail/format.hpp"
#include "../error.hpp"
#include "../fwd.hpp"

namespace vpdarts {

/// The shape of a ViT: square images of `image` pixels with `channels`
/// channels cut into patch x patch patches (N = (image/patch)^2, T = N + 1
/// tokens with cls), width `dim`, `depth` blocks of `heads` heads, MLP hidden
/// width `mlp`, and a head of `classes` outputs.
struct vit_config {
  index image = 32;     ///< Side of the square input image in pixels; a multiple of `patch`.
  index channels = 3;   ///< Colour channels of the input (1 grey, 3 RGB).
  index patch = 4;      ///< Side of a square patch in pixels.
  index dim = 192;      ///< Token width D; a multiple of `heads`.
  index depth = 6;      ///< Number of transformer blocks.
  index heads = 3;      ///< Attention heads per block.
  index mlp = 768;      ///< Hidden width of each block's MLP.
  index classes = 10;   ///< Outputs of the classification head.

  /// Number of patches N.
  index patches() const { return (image / patch) * (image / patch); }
  /// Number of tokens T = N + 1 (with cls).
  index tokens() const { return patches() + 1; }
  /// Channels per head, D / H.
  index head_dim() const { return dim / heads; }
  /// Values per image, C * H * W.
  index pixels() const { return channels * image * image; }
  /// MLP ratio, mlp / dim.
  double mlp_ratio() const { return static_cast<double>(mlp) / static_cast<double>(dim); }

  /// @throws config_error for a zero or negative size, a patch that does not
  /// divide the image, or heads that do not divide the width.
  void validate() const {
    const std::pair<const char*, index> sizes[] = {{"image", image}, {"channels", channels}, {"patch", patch},
                                                   {"dim", dim},     {"depth", depth},       {"heads", heads},
                                                   {"mlp", mlp},     {"classes", classes}};
    for (const auto& [name, v] : sizes)
      if (v <= 0) throw config_error(detail::cat("vit_config: ", name, " is ", v, ", must be positive"));
    if (image % patch != 0)
      throw config_error(detail::cat("vit_config: patch ", patch, " does not divide the image size ", image));
    if (dim % heads != 0)
      throw config_error(detail::cat("vit_config: ", heads, " heads do not divide the width dim = ", dim));
  }

  /// "image 32x32x3, patch 4 (T = 65), D 192, depth 6, heads 3, MLP 768, 10 classes".
  std::string describe() const {
    return detail::cat("image ", image, "x", image, "x", channels, ", patch ", patch, " (T = ", tokens(), "), D ", dim,
                       ", depth ", depth, ", heads ", heads, ", MLP ", mlp, ", ", classes, " classes");
  }

  /// The `toy` workload: 32x32x3, patch 4, D 192, depth 6, heads 3, MLP 768, 10 classes.
  static vit_config toy() { return {}; }
  /// timm's vit_tiny_patch16_224: 224x224x3, patch 16, D 192, depth 12, heads 3, MLP 768.
  static vit_config tiny16(index classes = 10) { return {224, 3, 16, 192, 12, 3, 768, classes}; }
  /// The `fashion` workload: 28x28x1, patch 4, D 192, depth 6, heads 3, MLP 768.
  static vit_config fashion(index classes = 5) { return {28, 1, 4, 192, 6, 3, 768, classes}; }

  /// Field-by-field equality.
  friend bool operator==(const vit_config&, const vit_config&) = default;
};

}  // namespace vpdarts
