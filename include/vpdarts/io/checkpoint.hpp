#pragma once
/// @file checkpoint.hpp
/// Named parameters to and from safetensors files, and ViT checkpoints
/// (timm names; the configuration is read from the shapes and metadata).

#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "../autodiff/parameter.hpp"
#include "../vit/vit.hpp"
#include "safetensors.hpp"

namespace vpdarts::io {

/// How strictly a checkpoint must match the parameters it is loaded into.
struct load_options {
  /// Accept tensors in the file that no parameter takes (for example a head of another size).
  bool allow_unexpected = false;
  /// Names that may be missing from the file (the parameter keeps its value).
  std::set<std::string> optional = {};
};

/// Loads every parameter from the file by name. Missing names (not optional),
/// unexpected names (unless allowed) and shape mismatches are all collected and
/// reported together in one io_error; no parameter changes unless all match.
template <Scalar S>
void load_parameters(const safetensors& file, std::span<parameter<S>* const> params, const load_options& opt = {}) {
  std::vector<std::string> problems;
  std::set<std::string> taken;
  for (parameter<S>* p : params) {
    taken.insert(p->name());
    const tensor_entry* t = file.find(p->name());
    if (!t) {
      if (!opt.optional.count(p->name()))
        problems.push_back(vpdarts::detail::cat("missing '", p->name(), "'"));
      continue;
    }
    std::vector<std::int64_t> want;
    for (index d : p->shape()) want.push_back(d);
    if (t->shape != want) {
      tensor_entry w;
      w.shape = want;
      problems.push_back(vpdarts::detail::cat("'", p->name(), "' is ", t->shape_str(), " in the file but ",
                                              w.shape_str(), " in the model"));
    } else if (t->dtype != "F32" && t->dtype != "F64" && t->dtype != "F16" && t->dtype != "BF16") {
      problems.push_back(vpdarts::detail::cat("'", p->name(), "' has dtype ", t->dtype, ", not a float type"));
    }
  }
  if (!opt.allow_unexpected)
    for (const auto& t : file.tensors())
      if (!taken.count(t.name)) problems.push_back(vpdarts::detail::cat("unexpected '", t.name, "' ", t.shape_str()));
  if (!problems.empty()) {
    std::string msg = vpdarts::detail::cat("load_parameters: '", file.origin(), "' does not match the model (",
                                           problems.size(), " problems):");
    for (const auto& s : problems) msg += "\n  " + s;
    throw io_error(msg);
  }
  for (parameter<S>* p : params)
    if (const tensor_entry* t = file.find(p->name()))
      file.copy_to<S>(*t, std::span<S>(p->value().data(), static_cast<std::size_t>(p->size())));
}

/// Reads a file and loads the parameters (see the overload on a parsed file).
template <Scalar S>
void load_parameters(const std::filesystem::path& path, std::span<parameter<S>* const> params,
                     const load_options& opt = {}) {
  load_parameters(safetensors::read(path), params, opt);
}

/// Writes the parameters (F32, or F64 for double; their logical shapes) atomically.
template <Scalar S>
void save_parameters(const std::filesystem::path& path, std::span<parameter<S>* const> params,
                     const std::map<std::string, std::string>& metadata = {}) {
  std::vector<tensor_view<S>> views;
  for (parameter<S>* p : params) {
    std::vector<std::int64_t> shape;
    for (index d : p->shape()) shape.push_back(d);
    views.push_back({p->name(), shape, std::span<const S>(p->value().data(), static_cast<std::size_t>(p->size()))});
  }
  write_safetensors<S>(path, std::move(views), metadata);
}

/// The ViT configuration a checkpoint describes: D, C, patch and T from
/// `patch_embed.proj.weight` and `pos_embed`, depth from the blocks, MLP from fc1,
/// classes from the head (or `vpdarts.classes` metadata, else `classes`), heads
/// from `heads` when positive, else `vpdarts.heads` metadata, else D/64 (timm's head width).
/// @throws io_error when the shapes are missing or inconsistent.
inline vit_config infer_vit_config(const safetensors& f, index heads = 0, index classes = 10) {
  auto fail = [&](const std::string& why) -> void {
    throw io_error(vpdarts::detail::cat("infer_vit_config: '", f.origin(), "': ", why));
  };
  const tensor_entry* pw = f.find("patch_embed.proj.weight");
  const tensor_entry* pos = f.find("pos_embed");
  if (!pw || pw->shape.size() != 4 || pw->shape[2] != pw->shape[3])
    fail("no patch_embed.proj.weight of shape (D, C, p, p)");
  if (!pos || pos->shape.size() != 3 || pos->shape[2] != pw->shape[0]) fail("no pos_embed of shape (1, T, D)");
  vit_config c;
  c.dim = pw->shape[0];
  c.channels = pw->shape[1];
  c.patch = pw->shape[2];
  const index n = pos->shape[1] - 1;
  const auto side = static_cast<index>(std::llround(std::sqrt(static_cast<double>(n))));
  if (n <= 0 || side * side != n) fail(vpdarts::detail::cat("pos_embed has ", n + 1, " tokens, not 1 + a square"));
  c.image = side * c.patch;
  c.depth = 0;
  while (f.find(vpdarts::detail::cat("blocks.", c.depth, ".norm1.weight"))) ++c.depth;
  if (c.depth == 0) fail("no blocks.0.norm1.weight");
  const tensor_entry* fc1 = f.find("blocks.0.mlp.fc1.weight");
  if (!fc1 || fc1->shape.size() != 2) fail("no blocks.0.mlp.fc1.weight of shape (MLP, D)");
  c.mlp = fc1->shape[0];
  const auto& meta = f.metadata();
  auto meta_index = [&](const auto& m, const std::string& key) -> index {
    const auto v = vpdarts::detail::parse_number<index>(m.at(key));
    if (!v || *v < 1) fail(vpdarts::detail::cat("metadata ", key, " = '", m.at(key), "' is not a positive integer"));
    return *v;
  };
  if (const tensor_entry* hw = f.find("head.weight"); hw && hw->shape.size() == 2) c.classes = hw->shape[0];
  else if (meta.count("vpdarts.classes")) c.classes = meta_index(meta, "vpdarts.classes");
  else c.classes = classes;
  if (heads > 0) c.heads = heads;
  else if (meta.count("vpdarts.heads")) c.heads = meta_index(meta, "vpdarts.heads");
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
  metadata["vpdarts.heads"] = std::to_string(model.config().heads);
  metadata["vpdarts.classes"] = std::to_string(model.config().classes);
  metadata["format"] = "pt";
  auto params = model.parameters();
  save_parameters<S>(path, params, metadata);
}

/// Loads a ViT checkpoint (timm names). `heads` as infer_vit_config; `classes`
/// (when positive) sets the head size, else the file's head decides. The head
/// is optional: a backbone-only file leaves a zero head. A head of another
/// size than `classes` is a mismatch, unless `allow_unexpected`, which ignores it
/// (and any other tensor the model does not take).
/// @throws io_error for a malformed file or any mismatch (all listed).
template <Scalar S>
vit<S> load_vit(const safetensors& f, index heads = 0, index classes = 0, bool allow_unexpected = false) {
  vit_config c = infer_vit_config(f, heads, classes > 0 ? classes : 10);
  if (classes > 0) c.classes = classes;
  vit<S> model(c);
  load_options opt;
  opt.allow_unexpected = allow_unexpected;
  opt.optional = {"head.weight", "head.bias"};
  const tensor_entry* hw = f.find("head.weight");
  const bool skip_head = allow_unexpected && hw && (hw->shape.size() != 2 || hw->shape[0] != c.classes);
  auto params = skip_head ? model.backbone_parameters() : model.parameters();
  load_parameters<S>(f, params, opt);
  return model;
}

/// load_vit of the file at `path`.
template <Scalar S>
vit<S> load_vit(const std::filesystem::path& path, index heads = 0, index classes = 0, bool allow_unexpected = false) {
  return load_vit<S>(safetensors::read(path), heads, classes, allow_unexpected);
}

}  // namespace vpdarts::io
