#pragma once
/// @file activation.hpp
/// The MLP activations the ops know (a ViT's configuration names one).

namespace vpdarts {

/// The MLP's activation.
enum class activation {
  gelu,        ///< exact (erf) GELU, timm's default
  quick_gelu,  ///< x * sigmoid(1.702 x), OpenAI CLIP's
};

}  // namespace vpdarts
