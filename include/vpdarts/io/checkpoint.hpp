#pragma once
/// @file checkpoint.hpp
/// Named parameters to and from safetensors files: every name present with its
/// shape, or one error listing every mismatch. (ViT checkpoints are read by
/// vit/checkpoint.hpp on top of this.)

#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "../autodiff/parameter.hpp"
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

}  // namespace vpdarts::io
