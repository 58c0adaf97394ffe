#pragma once
/// @file checkpoint.hpp
/// ViT checkpoints: timm's parameter names in a safetensors file; the
/// configuration is read from the shapes and the metadata.

#include <cmath>
#include <filesystem>
#include <map>
#include <string>

#include "../io/checkpoint.hpp"
#include "../io/metadata_keys.hpp"
#include "../io/safetensors.hpp"
#include "vit.hpp"

namespace vpdarts {

/// The ViT configuration a checkpoint describes: D, C, patch and T from
/// `patch_embed.proj.weight` and `pos_embed`, depth from the blocks, MLP from fc1,
/// classes from the head (or `vpdarts.classes` metadata, else `classes`), heads
/// from `heads` when positive, else `vpdarts.heads` metadata, else D/64 (timm's head width).
/// @throws io_error when the shapes are missing or inconsistent.
inline vit_config infer_vit_config(const io::safetensors& f, index heads = 0, index classes = 10) {
  auto fail = [&](const std::string& why) -> void {
    throw io_error(detail::cat("infer_vit_config: '", f.origin(), "': ", why));
  };
  const io::tensor_entry* pw = f.find("patch_embed.proj.weight");
  const io::tensor_entry* pos = f.find("pos_embed");
  if (!pw || pw->shape.size() != 4 || pw->shape[2] != pw->shape[3])
    fail("no patch_embed.proj.weight of shape (D, C, p, p)");
  if (!pos || pos->shape.size() != 3 || pos->shape[2] != pw->shape[0]) fail("no pos_embed of shape (1, T, D)");
  vit_config c;
  c.dim = pw->shape[0];
  c.channels = pw->shape[1];
  c.patch = pw->shape[2];
  const index n = pos->shape[1] - 1;
  const auto side = static_cast<index>(std::llround(std::sqrt(static_cast<double>(n))));
  if (n <= 0 || side * side != n) fail(detail::cat("pos_embed has ", n + 1, " tokens, not 1 + a square"));
  c.image = side * c.patch;
  c.depth = 0;
  while (f.find(detail::cat("blocks.", c.depth, ".norm1.weight"))) ++c.depth;
  if (c.depth == 0) fail("no blocks.0.norm1.weight");
  const io::tensor_entry* fc1 = f.find("blocks.0.mlp.fc1.weight");
  if (!fc1 || fc1->shape.size() != 2) fail("no blocks.0.mlp.fc1.weight of shape (MLP, D)");
  c.mlp = fc1->shape[0];
  const auto& meta = f.metadata();
  auto meta_index = [&](const auto& m, const std::string& key) -> index {
    const auto v = detail::parse_number<index>(m.at(key));
    if (!v || *v < 1) fail(detail::cat("metadata ", key, " = '", m.at(key), "' is not a positive integer"));
    return *v;
  };
  if (const io::tensor_entry* hw = f.find("head.weight"); hw && hw->shape.size() == 2) c.classes = hw->shape[0];
  else if (meta.count(io::keys::classes)) c.classes = meta_index(meta, io::keys::classes);
  else c.classes = classes;
  if (heads > 0) c.heads = heads;
  else if (meta.count(io::keys::heads)) c.heads = meta_index(meta, io::keys::heads);
  else c.heads = std::max<index>(1, c.dim / 64);
  try {
    c.validate();
  } catch (const config_error& e) {
    fail(e.message());
  }
  return c;
}

/// Saves a ViT (every parameter, head included) with its config in the metadata.
template <Scalar S>
void save_vit(const std::filesystem::path& path, vit<S>& model, std::map<std::string, std::string> metadata = {}) {
  metadata[io::keys::heads] = std::to_string(model.config().heads);
  metadata[io::keys::classes] = std::to_string(model.config().classes);
  metadata["format"] = "pt";
  auto params = model.parameters();
  io::save_parameters<S>(path, params, metadata);
}

/// Loads a ViT checkpoint (timm names). `heads` as infer_vit_config; `classes`
/// (when positive) sets the head size, else the file's head decides. The head
/// is optional: a backbone-only file leaves a zero head. A head of another
/// size than `classes` is a mismatch, unless `allow_unexpected`, which ignores it
/// (and any other tensor the model does not take).
/// @throws io_error for a malformed file or any mismatch (all listed).
template <Scalar S>
vit<S> load_vit(const io::safetensors& f, index heads = 0, index classes = 0, bool allow_unexpected = false) {
  vit_config c = infer_vit_config(f, heads, classes > 0 ? classes : 10);
  if (classes > 0) c.classes = classes;
  vit<S> model(c);
  io::load_options opt;
  opt.allow_unexpected = allow_unexpected;
  opt.optional = {"head.weight", "head.bias"};
  const io::tensor_entry* hw = f.find("head.weight");
  const bool skip_head = allow_unexpected && hw && (hw->shape.size() != 2 || hw->shape[0] != c.classes);
  auto params = skip_head ? model.backbone_parameters() : model.parameters();
  io::load_parameters<S>(f, params, opt);
  return model;
}

/// load_vit of the file at `path`.
template <Scalar S>
vit<S> load_vit(const std::filesystem::path& path, index heads = 0, index classes = 0, bool allow_unexpected = false) {
  return load_vit<S>(io::safetensors::read(path), heads, classes, allow_unexpected);
}

}  // namespace vpdarts
