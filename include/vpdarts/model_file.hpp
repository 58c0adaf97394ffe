#pragma once
/// @file model_file.hpp
/// The model file: a trained model in one self-contained safetensors file,
/// as `vpdarts retrain` writes it and `vpdarts eval` / `predict` read it.
/// It holds the backbone (timm names), the fusion operators' parameters and
/// the head, and in its metadata (io/metadata_keys.hpp) everything needed to
/// rebuild the model without flags: the kind ("prompted" or "probe"), the
/// genotype (JSON), the prompt count, the heads, the class names and the
/// input normalisation. See docs/checkpoints.md.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/transforms.hpp"
#include "io/checkpoint.hpp"
#include "io/json.hpp"
#include "io/metadata_keys.hpp"
#include "io/safetensors.hpp"
#include "search/prompted_vit.hpp"
#include "vit/checkpoint.hpp"

namespace vpdarts {

/// A model read from a model file: a prompted model (the derived model of a
/// genotype) or a linear probe (the backbone and its head), with its class
/// names and the input normalisation its images need.
template <Scalar S = float, OpList Ops = default_ops>
struct trained_model {
  std::optional<prompted_vit<S, Ops>> prompted;  ///< set for kind "prompted"
  std::optional<vit<S>> probe;                   ///< set for kind "probe"
  std::vector<std::string> class_names;          ///< one per head output
  data::normalization norm;                      ///< what data::normalization images need before the model

  /// True for a linear probe.
  bool is_probe() const noexcept { return probe.has_value(); }
  /// The backbone's shape (classes is the head's).
  const vit_config& config() const { return prompted ? prompted->config() : probe->config(); }
  /// Logits (B x classes), no gradient recorded for any parameter.
  var<S> logits(tape<S>& t, const image_batch<S>& x) {
    return prompted ? prompted->logits(t, x, grad_target::none) : probe->logits(t, x);
  }
  /// Trainable values: fusion parameters and head, or the probe's head.
  index trainable_params() {
    return prompted ? prompted->trainable_params() : probe->head.weight.size() + probe->head.bias.size();
  }
  /// trainable_params() as a percentage of the backbone's size.
  double trainable_percent() {
    vit<S>& b = prompted ? prompted->backbone() : *probe;
    return 100.0 * static_cast<double>(trainable_params()) / static_cast<double>(b.backbone_size());
  }
};

namespace detail {

template <Scalar S>
std::map<std::string, std::string> model_file_metadata(vit<S>& backbone, const std::vector<std::string>& class_names,
                                                       const data::normalization& norm, const char* kind) {
  if (static_cast<index>(class_names.size()) != backbone.config().classes)
    throw config_error(cat("save_model: ", class_names.size(), " class names for a head of ", backbone.config().classes));
  return {{io::keys::heads, std::to_string(backbone.config().heads)},
          {io::keys::classes, std::to_string(backbone.config().classes)},
          {io::keys::class_names, nlohmann::json(class_names).dump()},
          {io::keys::normalize, norm.str()},
          {io::keys::kind, kind}};
}

}  // namespace detail

/// Writes a prompted model (backbone, fusion parameters, head) with its
/// genotype, prompt count, class names and normalisation, atomically.
/// @throws config_error when the class names do not fit the head; value_error
/// for a NaN or Inf value (nothing is written then); io_error when the file cannot be written.
template <Scalar S, OpList Ops>
void save_model(const std::filesystem::path& path, prompted_vit<S, Ops>& model,
                const std::vector<std::string>& class_names, const data::normalization& norm) {
  auto meta = detail::model_file_metadata(model.backbone(), class_names, norm, "prompted");
  meta[io::keys::genotype] = model.derive().to_json().dump();
  meta[io::keys::prompts] = std::to_string(model.options().prompts);
  std::vector<parameter<S>*> ps = model.backbone().parameters();
  for (parameter<S>* p : model.fusion_parameters()) ps.push_back(p);
  io::save_parameters<S>(path, ps, meta);
}

/// Writes a linear probe (the backbone and its head) with its class names and normalisation, atomically.
/// @throws as the prompted overload.
template <Scalar S>
void save_model(const std::filesystem::path& path, vit<S>& probe, const std::vector<std::string>& class_names,
                const data::normalization& norm) {
  auto meta = detail::model_file_metadata(probe, class_names, norm, "probe");
  std::vector<parameter<S>*> ps = probe.parameters();
  io::save_parameters<S>(path, ps, meta);
}

/// Reads a model file written by save_model (or by vpdarts 0.1.0, whose
/// genotype sat under another key) from an already parsed file. The model's
/// operators must be in `Ops`.
/// @throws io_error naming the file for a file that is not a model file, bad
/// metadata, non-finite values, or tensors that do not fit (all listed).
template <Scalar S = float, OpList Ops = default_ops>
trained_model<S, Ops> load_model(const io::safetensors& f) {
  const std::filesystem::path path = f.origin();
  const auto& meta = f.metadata();
  auto need = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end())
      throw io_error(detail::cat("load_model: '", path.string(), "' is not a vpdarts model file (no ", key, " metadata)"));
    return it->second;
  };
  trained_model<S, Ops> out;
  const std::string kind = need(io::keys::kind);
  if (kind != "probe" && kind != "prompted")
    throw io_error(detail::cat("load_model: '", path.string(), "': unknown model kind '", kind, "'"));
  try {
    out.class_names = io::parse_json(need(io::keys::class_names), detail::cat("load_model: '", path.string(), "' ", io::keys::class_names))
                          .template get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw io_error(detail::cat("load_model: '", path.string(), "': bad ", io::keys::class_names, ": ", e.what()));
  }
  try {
    out.norm = data::normalization::parse(need(io::keys::normalize));
  } catch (const error& e) {
    throw io_error(detail::cat("load_model: '", path.string(), "': bad ", io::keys::normalize, ": ", e.message()));
  }
  if (!f.find("head.weight") || !f.find("head.bias"))
    throw io_error(detail::cat("load_model: '", path.string(), "' has no head (head.weight, head.bias): not a trained model"));
  bool has_fusion = false;
  for (const auto& t : f.tensors()) has_fusion = has_fusion || t.name.rfind("fusion.", 0) == 0;
  if (kind == "probe" && has_fusion)
    throw io_error(detail::cat("load_model: '", path.string(), "' is marked as a linear probe but holds fusion parameters"));
  // the backbone loader skips a head of another shape (a classifier of other classes); a model file's head is
  // the model's own, so one that does not fit its class names and the backbone's width is a broken file
  const auto classes = static_cast<std::int64_t>(out.class_names.size()), dim = inspect_vit(f).config.dim;
  for (const auto& [name, want] : {std::pair<const char*, std::vector<std::int64_t>>{"head.weight", {classes, dim}},
                                   {"head.bias", {classes}}})
    if (const io::tensor_entry* t = f.find(name); t->shape != want) {
      io::tensor_entry needed = *t;
      needed.shape = want;
      throw io_error(detail::cat("load_model: '", path.string(), "': tensor '", name, "' is ", t->shape_str(), ", but ",
                                 classes, " class names and a backbone of width ", dim, " need ", needed.shape_str()));
    }
  // the file is read once; a prompted model's fusion tensors are the only names the ViT does not take
  vit<S> backbone = load_vit<S>(f, vit_load_options{.allow_unexpected = has_fusion});
  if (kind == "probe") {
    out.probe.emplace(std::move(backbone));
  } else {
    const char* gkey = meta.count(io::keys::legacy_genotype_json) ? io::keys::legacy_genotype_json : io::keys::genotype;
    const genotype g = genotype::from_json(need(gkey), path.string());
    const auto prompts = detail::parse_number<index>(need(io::keys::prompts));
    if (!prompts || *prompts < 1)
      throw io_error(detail::cat("load_model: '", path.string(), "': bad ", io::keys::prompts, " metadata '",
                                 need(io::keys::prompts), "'"));
    out.prompted.emplace(std::move(backbone), g, prompt_options{.prompts = *prompts});
    std::vector<parameter<S>*> ps = out.prompted->fusion_parameters();
    io::load_parameters<S>(f, ps, {.allow_unexpected = true});
    for (parameter<S>* p : ps)
      if (!p->value().allFinite())
        throw io_error(detail::cat("load_model: '", path.string(), "': tensor '", p->name(), "' holds NaN or Inf"));
    for (const auto& t : f.tensors())
      if (t.name.rfind("fusion.", 0) == 0 &&
          std::none_of(ps.begin(), ps.end(), [&](parameter<S>* p) { return p->name() == t.name; }))
        throw io_error(detail::cat("load_model: '", path.string(), "': tensor '", t.name, "' is not a parameter of the genotype ",
                                   out.prompted->derive().str()));
  }
  if (static_cast<index>(out.class_names.size()) != out.config().classes)
    throw io_error(detail::cat("load_model: '", path.string(), "': ", out.class_names.size(), " class names for a head of ",
                               out.config().classes));
  return out;
}

/// load_model of the file at `path`.
/// @throws io_error as the overload, and for a missing file or a folder.
template <Scalar S = float, OpList Ops = default_ops>
trained_model<S, Ops> load_model(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path))
    throw io_error(detail::cat("load_model: the model file '", path.string(), "' does not exist"));
  if (std::filesystem::is_directory(path))
    throw io_error(detail::cat("load_model: '", path.string(), "' is a folder, not a model file"));
  return load_model<S, Ops>(io::safetensors::read(path));
}

}  // namespace vpdarts
