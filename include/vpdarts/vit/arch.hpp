#pragma once
/// @file arch.hpp
/// timm model names as presets of what a checkpoint's weights cannot show
/// (LayerNorm eps, activation, pooling, head width), and the text forms of
/// those settings (metadata values and flags). load_vit() takes a name as
/// `vit_load_options::arch`; docs/foundation_models.md lists them.

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../detail/format.hpp"
#include "../error.hpp"
#include "config.hpp"

namespace vpdarts {

/// What a timm model name says that the weights cannot: a preset of load_vit().
struct vit_arch {
  std::string_view name;           ///< timm's model name (with a pretrained tag where it matters)
  index patch = 0;                 ///< the patch side the weights must have
  index head_dim = 64;             ///< channels per head (heads = D / head_dim)
  double norm_eps = 1e-6;          ///< LayerNorm eps
  activation act = activation::gelu;  ///< the MLP's activation
  pooling pool = pooling::token;   ///< the pooling
  index reg_tokens = 0;            ///< the register tokens the weights must have
  bool layer_scale = false;        ///< whether the weights must have LayerScale
  bool pre_norm = false;           ///< whether the weights must have norm_pre
};

/// The timm model names load_vit() accepts as `arch`.
inline const std::vector<vit_arch>& vit_archs() {
  static const std::vector<vit_arch> all = [] {
    std::vector<vit_arch> v;
    for (std::string_view n : {"vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
                               "vit_large_patch16_224", "vit_base_patch16_224.mae", "vit_large_patch16_224.mae",
                               "vit_tiny_patch16_384", "vit_small_patch16_384", "vit_base_patch16_384",
                               "deit3_small_patch16_224", "deit3_base_patch16_224"})
      v.push_back({.name = n, .patch = 16, .layer_scale = n.starts_with("deit3")});
    v.push_back({.name = "vit_base_patch32_224", .patch = 32});
    for (std::string_view n : {"vit_small_patch14_dinov2", "vit_base_patch14_dinov2", "vit_large_patch14_dinov2"})
      v.push_back({.name = n, .patch = 14, .layer_scale = true});
    for (std::string_view n : {"vit_small_patch14_reg4_dinov2", "vit_base_patch14_reg4_dinov2", "vit_large_patch14_reg4_dinov2"})
      v.push_back({.name = n, .patch = 14, .reg_tokens = 4, .layer_scale = true});
    v.push_back({.name = "vit_base_patch16_clip_224", .patch = 16, .norm_eps = 1e-5, .pre_norm = true});
    v.push_back({.name = "vit_base_patch32_clip_224", .patch = 32, .norm_eps = 1e-5, .pre_norm = true});
    v.push_back({.name = "vit_large_patch14_clip_224", .patch = 14, .norm_eps = 1e-5, .pre_norm = true});
    for (std::string_view n : {"vit_base_patch16_clip_quickgelu_224", "vit_base_patch32_clip_quickgelu_224",
                               "vit_large_patch14_clip_quickgelu_224"})
      v.push_back({.name = n, .patch = n.find("patch32") != n.npos ? 32 : n.find("patch14") != n.npos ? 14 : 16,
                   .norm_eps = 1e-5, .act = activation::quick_gelu, .pre_norm = true});
    return v;
  }();
  return all;
}

namespace detail {

inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace detail

/// The preset of a timm model name. @throws config_error for an unknown name, suggesting the nearest ones.
inline const vit_arch& find_vit_arch(std::string_view name) {
  for (const auto& a : vit_archs())
    if (a.name == name) return a;
  std::vector<std::pair<std::size_t, std::string_view>> near;
  for (const auto& a : vit_archs()) near.emplace_back(detail::edit_distance(name, a.name), a.name);
  std::sort(near.begin(), near.end());
  std::string list;
  for (std::size_t i = 0; i < std::min<std::size_t>(3, near.size()); ++i) list += (i ? ", " : "") + std::string(near[i].second);
  throw config_error(detail::cat("unknown arch '", name, "'; the nearest known: ", list));
}

/// Text forms of the settings the weights cannot show (metadata values and flags).
inline std::string to_string(activation a) { return a == activation::gelu ? "gelu" : "quick_gelu"; }
/// "token" or "avg".
inline std::string to_string(pooling p) { return p == pooling::token ? "token" : "avg"; }
/// Parses "gelu" or "quick_gelu". @throws config_error otherwise.
inline activation parse_activation(const std::string& s) {
  if (s == "gelu") return activation::gelu;
  if (s == "quick_gelu" || s == "quickgelu") return activation::quick_gelu;
  throw config_error(detail::cat("unknown activation '", s, "' (gelu or quick_gelu)"));
}
/// Parses "token" or "avg". @throws config_error otherwise.
inline pooling parse_pooling(const std::string& s) {
  if (s == "token") return pooling::token;
  if (s == "avg") return pooling::avg;
  throw config_error(detail::cat("unknown pooling '", s, "' (token or avg)"));
}

}  // namespace vpdarts
