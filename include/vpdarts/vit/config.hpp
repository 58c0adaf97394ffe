#pragma once
/// @file config.hpp
/// The shape of a Vision Transformer, with validation and the reference workloads of docs/method.md (section 7) as presets.

#include <string>

#include "../kernels/activation.hpp"
#include "../detail/format.hpp"
#include "../error.hpp"
#include "../fwd.hpp"

namespace vpdarts {

/// How the features are pooled from the last block's tokens.
enum class pooling {
  token,  ///< the class token (the first prefix token)
  avg,    ///< the mean of the non-prefix (patch) tokens
};

/// The shape of a ViT: square images of `image` pixels with `channels`
/// channels cut into patch x patch patches (N = (image/patch)^2, T = N + 1
/// tokens with cls), width `dim`, `depth` blocks of `heads` heads, MLP hidden
/// width `mlp`, and a head of `classes` outputs. The fields after `classes`
/// describe the variants of timm's VisionTransformer that foundation models use
/// (DINOv2, CLIP, DeiT-III, MAE-style pooling); their defaults are the classic ViT.
/// Tokens are [cls ; registers ; patches]: `prefix_tokens()` of them come first.
struct vit_config {
  index image = 32;     ///< Side of the square input image in pixels; a multiple of `patch`.
  index channels = 3;   ///< Colour channels of the input (1 grey, 3 RGB).
  index patch = 4;      ///< Side of a square patch in pixels.
  index dim = 192;      ///< Token width D; a multiple of `heads`.
  index depth = 6;      ///< Number of transformer blocks.
  index heads = 3;      ///< Attention heads per block.
  index mlp = 768;      ///< Hidden width of each block's MLP.
  index classes = 10;   ///< Outputs of the classification head.
  bool class_token = true;      ///< A class token `cls_token` (1 x 1 x D) first in every sequence.
  index reg_tokens = 0;         ///< Register tokens `reg_token` (1 x R x D) after the class token (DINOv2-reg).
  bool no_embed_class = false;  ///< pos_embed covers the patches only, added before the prefix tokens are prepended.
  bool pre_norm = false;        ///< A LayerNorm `norm_pre` on the embedded tokens before block 0 (CLIP).
  bool patch_bias = true;       ///< The patch convolution has a bias (CLIP's has none).
  bool qkv_bias = true;         ///< The qkv projection has a bias.
  bool layer_scale = false;     ///< LayerScale `blocks.{i}.ls1.gamma`, `ls2.gamma` (D): x + g1 attn(LN(x)), x + g2 mlp(LN(x)).
  bool final_norm = true;       ///< A LayerNorm `norm` on every token after the last block.
  bool fc_norm = false;         ///< A LayerNorm `fc_norm` on the pooled features (timm: instead of `norm`).
  double norm_eps = 1e-6;       ///< Epsilon of every LayerNorm (timm 1e-6, CLIP 1e-5).
  activation act = activation::gelu;  ///< The MLP's activation.
  pooling pool = pooling::token;      ///< How features are pooled (token needs a class token).

  /// Number of patches N.
  index patches() const { return (image / patch) * (image / patch); }
  /// Number of prefix tokens: the class token and the registers.
  index prefix_tokens() const { return (class_token ? 1 : 0) + reg_tokens; }
  /// Number of tokens T = prefix + N.
  index tokens() const { return patches() + prefix_tokens(); }
  /// Rows of pos_embed: N with no_embed_class, else T.
  index pos_tokens() const { return no_embed_class ? patches() : tokens(); }
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
    if (reg_tokens < 0) throw config_error(detail::cat("vit_config: reg_tokens is ", reg_tokens, ", must be >= 0"));
    if (!(norm_eps > 0) || norm_eps > 1)
      throw config_error(detail::cat("vit_config: norm_eps is ", norm_eps, ", must be in (0, 1]"));
    if (pool == pooling::token && !class_token)
      throw config_error("vit_config: token pooling needs a class token (use avg pooling)");
    if (final_norm && fc_norm)
      throw config_error("vit_config: a model has a final norm or an fc_norm, not both (timm's VisionTransformer)");
  }

  /// "image 32x32x3, patch 4 (T = 65), D 192, depth 6, heads 3, MLP 768, 10 classes", then the
  /// variant settings that differ from the classic ViT ("; 4 registers, LayerScale, ...").
  std::string describe() const {
    std::string s = detail::cat("image ", image, "x", image, "x", channels, ", patch ", patch, " (T = ", tokens(), "), D ",
                                dim, ", depth ", depth, ", heads ", heads, ", MLP ", mlp, ", ", classes, " classes");
    std::string v;
    auto note = [&](bool on, const std::string& what) {
      if (on) v += (v.empty() ? "; " : ", ") + what;
    };
    note(!class_token, "no class token");
    note(reg_tokens > 0, detail::cat(reg_tokens, " registers"));
    note(no_embed_class, "pos_embed without prefix");
    note(pre_norm, "norm_pre");
    note(!patch_bias, "patch conv without bias");
    note(!qkv_bias, "qkv without bias");
    note(layer_scale, "LayerScale");
    note(!final_norm && !fc_norm, "no final norm");
    note(fc_norm, "fc_norm");
    note(norm_eps != 1e-6, detail::cat("LN eps ", norm_eps));
    note(act == activation::quick_gelu, "QuickGELU");
    note(pool == pooling::avg, "avg pooling");
    return s + v;
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
