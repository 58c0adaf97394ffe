#pragma once
/// @file checkpoint.hpp
/// ViT checkpoints: timm's parameter names in a safetensors file, for the
/// variants of timm's VisionTransformer that foundation models use (DINOv2,
/// DINOv2 with registers, CLIP, MAE-style pooling, DeiT-III). What the weights
/// show is inferred from the names and shapes (LayerScale, registers,
/// norm_pre, fc_norm, biases, whether pos_embed covers the prefix tokens);
/// what they cannot show (heads, LayerNorm eps, activation, pooling) comes
/// from the options, else the file's metadata, else a timm model name
/// (`arch`), else timm's defaults. A checkpoint is used at any image size its
/// patch divides: pos_embed is resampled as timm does (vit/pos_embed.hpp).

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "../io/checkpoint.hpp"
#include "../io/metadata_keys.hpp"
#include "../io/safetensors.hpp"
#include "arch.hpp"
#include "pos_embed.hpp"
#include "vit.hpp"

namespace vpdarts {

/// How load_vit() reads a checkpoint. Every field left at its default is
/// inferred: from the weights, the file's metadata, `arch`, or timm's defaults.
struct vit_load_options {
  index image = 0;                      ///< image side to run at (0: the checkpoint's own); pos_embed is resampled
  index heads = 0;                      ///< attention heads (0: metadata, else arch, else D/64)
  index classes = 0;                    ///< head outputs (0: the file's head, else 10); a file head of another size is skipped
  std::string arch = {};                ///< a timm model name (vit_archs()) for what the weights cannot show
  std::optional<double> norm_eps = {};  ///< LayerNorm eps
  std::optional<activation> act = {};   ///< the MLP's activation
  std::optional<pooling> pool = {};     ///< the pooling
  bool allow_unexpected = false;        ///< ignore tensors the loader does not understand (else they are an error)
};

/// What a checkpoint describes: the configuration at the requested image size,
/// and the grid its pos_embed was made for.
struct vit_checkpoint_info {
  vit_config config;      ///< the model to build (at options.image when given)
  index native_grid = 0;  ///< the side of pos_embed's patch grid in the file
};

/// Reads the configuration of a checkpoint (see the file comment for what comes from where).
/// @throws io_error naming the file and tensor for missing, mis-shaped or non-contiguous tensors;
/// config_error for an unknown arch, an image size the patch does not divide, or an option that
/// contradicts the file's metadata or the arch.
inline vit_checkpoint_info inspect_vit(const io::safetensors& f, const vit_load_options& o = {}) {
  auto fail = [&](const std::string& why) -> void { throw io_error(detail::cat("load_vit: '", f.origin(), "': ", why)); };
  auto contradict = [&](const std::string& why) -> void {
    throw config_error(detail::cat("load_vit: '", f.origin(), "': ", why));
  };
  const vit_arch* arch = o.arch.empty() ? nullptr : &find_vit_arch(o.arch);
  const io::tensor_entry* pw = f.find("patch_embed.proj.weight");
  const io::tensor_entry* pos = f.find("pos_embed");
  if (!pw || pw->shape.size() != 4 || pw->shape[2] != pw->shape[3] || pw->shape[0] <= 0 || pw->shape[1] <= 0 || pw->shape[2] <= 0)
    fail("no patch_embed.proj.weight of shape (D, C, p, p)");
  vit_config c;
  c.dim = pw->shape[0];
  c.channels = pw->shape[1];
  c.patch = pw->shape[2];
  auto vec = [&](const char* name, index n) {  // a (n) or (1, n) or (1, 1, n) tensor
    const io::tensor_entry* t = f.find(name);
    if (!t) return false;
    if (t->numel() != n || t->shape.empty() || t->shape.back() != n)
      fail(detail::cat(name, " is ", t->shape_str(), ", expected (", n, ") for width D = ", n));
    return true;
  };
  c.patch_bias = vec("patch_embed.proj.bias", c.dim);
  c.class_token = vec("cls_token", c.dim);
  if (const io::tensor_entry* reg = f.find("reg_token")) {
    if (reg->shape.size() != 3 || reg->shape[0] != 1 || reg->shape[2] != c.dim || reg->shape[1] < 1)
      fail(detail::cat("reg_token is ", reg->shape_str(), ", expected (1, R, ", c.dim, ")"));
    c.reg_tokens = reg->shape[1];
  }
  if (!pos || pos->shape.size() != 3 || pos->shape[0] != 1 || pos->shape[2] != c.dim)
    fail(detail::cat("no pos_embed of shape (1, T, ", c.dim, ")", pos ? detail::cat(" (it is ", pos->shape_str(), ")") : ""));
  const index rows = pos->shape[1], prefix = c.prefix_tokens();
  auto square = [](index n) {
    const auto s = static_cast<index>(std::llround(std::sqrt(static_cast<double>(std::max<index>(n, 0)))));
    return n > 0 && s * s == n ? s : index{0};
  };
  const auto& meta = f.metadata();
  index grid = 0;
  if (meta.count(io::keys::no_embed_class)) {
    c.no_embed_class = meta.at(io::keys::no_embed_class) == "true";
    grid = square(c.no_embed_class ? rows : rows - prefix);
  } else if (prefix > 0 && square(rows)) {
    c.no_embed_class = true;  // pos_embed over the patches only (DINOv2-reg, DeiT-III)
    grid = square(rows);
  } else {
    grid = square(rows - prefix);
  }
  if (grid == 0)
    fail(detail::cat("pos_embed has ", rows, " rows: neither a square grid nor a square grid plus the ", prefix,
                     " prefix token(s) (class token and registers)"));
  const index native_image = grid * c.patch;
  c.image = o.image > 0 ? o.image : native_image;
  if (c.image % c.patch != 0)
    contradict(detail::cat("the image size ", c.image, " is not a multiple of the patch ", c.patch));
  // blocks: contiguous from 0, each complete
  std::set<index> seen;
  for (const auto& t : f.tensors())
    if (t.name.rfind("blocks.", 0) == 0) {
      const auto dot = t.name.find('.', 7);
      const auto i = detail::parse_number<index>(t.name.substr(7, dot == std::string::npos ? std::string::npos : dot - 7));
      if (!i || *i < 0) fail(detail::cat("tensor '", t.name, "' has no block number"));
      seen.insert(*i);
    }
  c.depth = static_cast<index>(seen.size());
  if (c.depth == 0) fail("no blocks.{i}.* tensors");
  if (*seen.rbegin() != c.depth - 1) {
    index missing = 0;
    while (seen.count(missing)) ++missing;
    fail(detail::cat("the blocks are not contiguous: block ", missing, " is missing but block ", *seen.rbegin(), " is there"));
  }
  const io::tensor_entry* fc1 = f.find("blocks.0.mlp.fc1.weight");
  if (!fc1 || fc1->shape.size() != 2 || fc1->shape[1] != c.dim) fail("no blocks.0.mlp.fc1.weight of shape (MLP, D)");
  c.mlp = fc1->shape[0];
  c.qkv_bias = f.find("blocks.0.attn.qkv.bias") != nullptr;
  c.layer_scale = f.find("blocks.0.ls1.gamma") != nullptr;
  c.pre_norm = f.find("norm_pre.weight") != nullptr;
  c.final_norm = f.find("norm.weight") != nullptr;
  c.fc_norm = f.find("fc_norm.weight") != nullptr;
  // what the weights cannot show: options, else metadata, else arch, else timm's defaults
  auto meta_text = [&](const char* key) -> std::optional<std::string> {
    if (auto it = meta.find(key); it != meta.end()) return it->second;
    return std::nullopt;
  };
  auto meta_index = [&](const char* key) -> std::optional<index> {
    const auto v = meta_text(key);
    if (!v) return std::nullopt;
    const auto n = detail::parse_number<index>(*v);
    if (!n || *n < 1) fail(detail::cat("metadata ", key, " = '", *v, "' is not a positive integer"));
    return n;
  };
  if (arch) {
    if (arch->patch != c.patch) contradict(detail::cat("arch ", arch->name, " has patch ", arch->patch, ", the weights ", c.patch));
    if (arch->reg_tokens != c.reg_tokens)
      contradict(detail::cat("arch ", arch->name, " has ", arch->reg_tokens, " register tokens, the weights ", c.reg_tokens));
    if (arch->layer_scale != c.layer_scale)
      contradict(detail::cat("arch ", arch->name, (arch->layer_scale ? " has" : " has no"), " LayerScale, the weights",
                             (c.layer_scale ? " have it" : " do not")));
    if (arch->pre_norm != c.pre_norm)
      contradict(detail::cat("arch ", arch->name, (arch->pre_norm ? " has" : " has no"), " norm_pre, the weights",
                             (c.pre_norm ? " have it" : " do not")));
  }
  const std::optional<index> m_heads = meta_index(io::keys::heads);
  if (o.heads > 0 && m_heads && *m_heads != o.heads)
    contradict(detail::cat("heads ", o.heads, " contradicts the file's metadata (", io::keys::heads, " = ", *m_heads, ")"));
  c.heads = o.heads > 0 ? o.heads : m_heads ? *m_heads : std::max<index>(1, c.dim / (arch ? arch->head_dim : 64));
  std::optional<double> m_eps;
  if (const auto v = meta_text(io::keys::norm_eps)) {
    m_eps = detail::parse_number<double>(*v);
    if (!m_eps || !(*m_eps > 0)) fail(detail::cat("metadata ", io::keys::norm_eps, " = '", *v, "' is not a positive number"));
  }
  if (o.norm_eps && m_eps && *o.norm_eps != *m_eps)
    contradict(detail::cat("norm_eps ", *o.norm_eps, " contradicts the file's metadata (", *m_eps, ")"));
  c.norm_eps = o.norm_eps ? *o.norm_eps : m_eps ? *m_eps : arch ? arch->norm_eps : 1e-6;
  std::optional<activation> m_act;
  std::optional<pooling> m_pool;
  try {
    if (const auto v = meta_text(io::keys::act)) m_act = parse_activation(*v);
    if (const auto v = meta_text(io::keys::pool)) m_pool = parse_pooling(*v);
  } catch (const config_error& e) {
    fail(detail::cat("bad metadata: ", e.message()));
  }
  if (o.act && m_act && *o.act != *m_act)
    contradict(detail::cat("activation ", to_string(*o.act), " contradicts the file's metadata (", to_string(*m_act), ")"));
  if (o.pool && m_pool && *o.pool != *m_pool)
    contradict(detail::cat("pooling ", to_string(*o.pool), " contradicts the file's metadata (", to_string(*m_pool), ")"));
  c.act = o.act ? *o.act : m_act ? *m_act : arch ? arch->act : activation::gelu;
  const pooling inferred = (c.fc_norm || !c.class_token) ? pooling::avg : arch ? arch->pool : pooling::token;
  c.pool = o.pool ? *o.pool : m_pool ? *m_pool : inferred;
  if (const io::tensor_entry* hw = f.find("head.weight"); hw && hw->shape.size() == 2 && o.classes <= 0) c.classes = hw->shape[0];
  else if (o.classes > 0) c.classes = o.classes;
  else if (const auto mc = meta_index(io::keys::classes)) c.classes = *mc;
  else c.classes = 10;
  try {
    c.validate();
  } catch (const config_error& e) {
    contradict(e.message());
  }
  return {c, grid};
}

/// Saves a ViT (every parameter, head included) with what its weights cannot show in the metadata
/// (heads, classes, LayerNorm eps, activation, pooling, whether pos_embed covers the prefix tokens).
template <Scalar S>
void save_vit(const std::filesystem::path& path, vit<S>& model, std::map<std::string, std::string> metadata = {}) {
  const vit_config& c = model.config();
  metadata[io::keys::heads] = std::to_string(c.heads);
  metadata[io::keys::classes] = std::to_string(c.classes);
  metadata[io::keys::norm_eps] = detail::cat(c.norm_eps);
  metadata[io::keys::act] = to_string(c.act);
  metadata[io::keys::pool] = to_string(c.pool);
  metadata[io::keys::no_embed_class] = c.no_embed_class ? "true" : "false";
  metadata["format"] = "pt";
  auto params = model.parameters();
  io::save_parameters<S>(path, params, metadata);
}

/// Loads a ViT checkpoint with timm's names (see the file comment and vit_load_options).
/// Every tensor must be one the model takes, with its shape, unless
/// allow_unexpected; a head of another size than options.classes is skipped
/// (the model gets a zero head); a missing head leaves a zero head.
/// @throws io_error listing every missing, unexpected or mis-shaped tensor
/// (nothing is half-loaded), or for non-finite values; config_error as inspect_vit.
template <Scalar S>
vit<S> load_vit(const io::safetensors& f, const vit_load_options& o) {
  const vit_checkpoint_info info = inspect_vit(f, o);
  const vit_config& c = info.config;
  vit<S> model(c);
  io::load_options lo;
  lo.allow_unexpected = o.allow_unexpected;
  lo.optional = {"head.weight", "head.bias"};
  const io::tensor_entry* hw = f.find("head.weight");
  const bool head_fits = hw && hw->shape == std::vector<std::int64_t>{c.classes, c.dim};
  std::vector<parameter<S>*> params = model.backbone_parameters();
  std::erase(params, &model.pos_embed);
  std::set<std::string> skipped{"pos_embed"};
  if (head_fits) model.head.collect(params);
  else skipped.insert({"head.weight", "head.bias"});
  if (!o.allow_unexpected) {  // names the loader does not understand
    std::set<std::string> taken{"pos_embed", "head.weight", "head.bias"};
    for (parameter<S>* p : model.parameters()) taken.insert(p->name());
    std::vector<std::string> unknown;
    for (const auto& t : f.tensors())
      if (!taken.count(t.name)) unknown.push_back(t.name + " " + t.shape_str());
    if (!unknown.empty())
      throw io_error(detail::cat("load_vit: '", f.origin(), "' holds ", unknown.size(),
                                 " tensor(s) that a timm VisionTransformer of this kind does not have (",
                                 c.describe(), "): ", detail::join(unknown, ", "),
                                 "; a model family vpdarts does not support? (allow_unexpected ignores them)"));
    lo.allow_unexpected = true;  // checked above; pos_embed and a skipped head are read separately
  }
  // pos_embed: from the file's grid to the model's
  const io::tensor_entry* pos = f.find("pos_embed");
  const index prefix = c.no_embed_class ? 0 : c.prefix_tokens();
  matrix<S> file_pos(pos->shape[1], c.dim);
  f.copy_to<S>(*pos, std::span<S>(file_pos.data(), static_cast<std::size_t>(file_pos.size())));
  io::load_parameters<S>(f, params, lo);
  if (!file_pos.allFinite()) throw io_error(detail::cat("load_vit: '", f.origin(), "': tensor 'pos_embed' holds NaN or Inf"));
  for (parameter<S>* p : params)
    if (!p->value().allFinite())
      throw io_error(detail::cat("load_vit: '", f.origin(), "': tensor '", p->name(), "' holds NaN or Inf"));
  model.pos_embed.value() = resample_pos_embed(file_pos, prefix, info.native_grid, c.image / c.patch);
  return model;
}

/// load_vit of the file at `path`.
template <Scalar S>
vit<S> load_vit(const std::filesystem::path& path, const vit_load_options& o) {
  return load_vit<S>(io::safetensors::read(path), o);
}

/// load_vit with only the heads, the head size and allow_unexpected set (the 0.1 signature).
template <Scalar S>
vit<S> load_vit(const io::safetensors& f, index heads = 0, index classes = 0, bool allow_unexpected = false) {
  return load_vit<S>(f, vit_load_options{.heads = heads, .classes = classes, .allow_unexpected = allow_unexpected});
}

/// load_vit of the file at `path` (the 0.1 signature).
template <Scalar S>
vit<S> load_vit(const std::filesystem::path& path, index heads = 0, index classes = 0, bool allow_unexpected = false) {
  return load_vit<S>(io::safetensors::read(path), heads, classes, allow_unexpected);
}

/// The configuration a checkpoint describes at its own image size (inspect_vit's, with `heads` and
/// `classes` as options; classes is used only when the file has no head and no metadata).
inline vit_config infer_vit_config(const io::safetensors& f, index heads = 0, index classes = 10) {
  vit_config c = inspect_vit(f, {.heads = heads}).config;
  if (!f.find("head.weight") && !f.metadata().count(io::keys::classes)) c.classes = classes;
  return c;
}

/// The names vpdarts 0.1.0 had in vpdarts::io, deprecated: they call the ones above (vpdarts::load_vit,
/// vpdarts::save_vit, vpdarts::infer_vit_config) and go in the release after next (CHANGELOG.md).
/// They take their file argument as a constrained template so that an unqualified call inside
/// vpdarts, which finds them too by argument-dependent lookup, still resolves to the names above.
namespace io {

/// Deprecated: vpdarts::load_vit.
template <Scalar S, class File>
  requires std::same_as<File, safetensors> || std::convertible_to<const File&, std::filesystem::path>
[[deprecated("vpdarts::io::load_vit is now vpdarts::load_vit")]] vit<S> load_vit(const File& file, index heads = 0,
                                                                                 index classes = 0,
                                                                                 bool allow_unexpected = false) {
  if constexpr (std::is_same_v<File, safetensors>)
    return vpdarts::load_vit<S>(file, heads, classes, allow_unexpected);
  else
    return vpdarts::load_vit<S>(std::filesystem::path(file), heads, classes, allow_unexpected);
}

/// Deprecated: vpdarts::save_vit.
template <Scalar S, class Path>
  requires std::convertible_to<const Path&, std::filesystem::path>
[[deprecated("vpdarts::io::save_vit is now vpdarts::save_vit")]] void save_vit(
    const Path& path, vit<S>& model, std::map<std::string, std::string> metadata = {}) {
  vpdarts::save_vit<S>(std::filesystem::path(path), model, std::move(metadata));
}

/// Deprecated: vpdarts::infer_vit_config.
template <class File>
  requires std::same_as<File, safetensors>
[[deprecated("vpdarts::io::infer_vit_config is now vpdarts::infer_vit_config")]] vit_config infer_vit_config(
    const File& f, index heads = 0, index classes = 10) {
  return vpdarts::infer_vit_config(f, heads, classes);
}

}  // namespace io

}  // namespace vpdarts
