#pragma once
/// @file torch_export.hpp
/// A trained model as a PyTorch module: export_torch writes into a folder
///
///     vpdarts_model.py   the model in PyTorch (needs only torch): a ViT with timm's names, the fusion
///                        operators the genotype uses, a safetensors reader and load(DIR)
///     config.json        the backbone's shape, the genotype, the class names, the normalisation
///     model.safetensors  the weights: the model file itself (save_model)
///
/// so that `sys.path.insert(0, DIR); from vpdarts_model import load; model = load(DIR)` gives an
/// nn.Module whose logits are this model's (float32). A fusion operator exports when its trait has
///
/// ```cpp
/// static constexpr std::string_view torch_source = R"py(
/// class MyOp(FusionOp):            # parameters: attributes named by their symbols
///     name = "my_op"
///     def pre(self, x): ...         # x: (N, T, D)
///     def post(self, y): ...        # back to (N, T, D); both default to the identity
/// )py";
/// ```
///
/// (the built-in ones do, fusion/builtin.hpp); otherwise export_torch refuses, naming the operator.

#include <filesystem>
#include <set>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "detail/torch_module.hpp"
#include "io/atomic_file.hpp"
#include "model_file.hpp"
#include "version.hpp"
#include "vit/arch.hpp"

namespace vpdarts {

/// True when fusion_traits<Op> gives the operator's PyTorch form (`torch_source`).
template <class Op>
concept HasTorchForm = requires { std::string_view(fusion_traits<Op>::torch_source); };

/// The folder's config.json for model `m` (what vpdarts_model.load reads).
template <Scalar S, OpList Ops>
nlohmann::json torch_export_config(trained_model<S, Ops>& m) {
  const vit_config& c = m.config();
  nlohmann::json out = {
      {"format", "vpdarts.torch_export"},
      {"format_version", 1},
      {"vpdarts", version_string},
      {"kind", m.is_probe() ? "probe" : "prompted"},
      {"vit",
       {{"image", c.image},           {"channels", c.channels},     {"patch", c.patch},
        {"dim", c.dim},               {"depth", c.depth},           {"heads", c.heads},
        {"mlp", c.mlp},               {"classes", c.classes},       {"class_token", c.class_token},
        {"reg_tokens", c.reg_tokens}, {"no_embed_class", c.no_embed_class}, {"pre_norm", c.pre_norm},
        {"patch_bias", c.patch_bias}, {"qkv_bias", c.qkv_bias},     {"layer_scale", c.layer_scale},
        {"final_norm", c.final_norm}, {"fc_norm", c.fc_norm},       {"norm_eps", c.norm_eps},
        {"act", to_string(c.act)},    {"pool", to_string(c.pool)}}},
      {"class_names", m.class_names},
      {"normalization", {{"mean", m.norm.mean}, {"std", m.norm.std}}}};
  if (m.prompted) {
    out["genotype"] = m.prompted->derive().names();
    out["prompts"] = m.prompted->options().prompts;
  }
  return out;
}

/// vpdarts_model.py for model `m`: the module's source and the PyTorch form of every operator
/// its genotype uses.
/// @throws config_error naming an operator whose trait has no `torch_source`.
template <Scalar S, OpList Ops>
std::string torch_export_module(trained_model<S, Ops>& m) {
  std::string out(detail::torch_module_source);
  if (!m.prompted) return out;
  std::set<std::string> used;
  for (const auto& l : m.prompted->derive().layers) used.insert(l.op);
  for (const std::string& name : used) {
    Ops::visit(Ops::index_of(name), [&](auto type) {
      using Op = typename decltype(type)::type;
      if constexpr (HasTorchForm<Op>) {
        out += "\n\n";
        out += std::string_view(fusion_traits<Op>::torch_source);
      } else {
        throw config_error(detail::cat("export_torch: the fusion operator '", name,
                                       "' has no PyTorch form; give fusion_traits<", name,
                                       "> a `static constexpr std::string_view torch_source` (vpdarts/torch_export.hpp)"));
      }
    });
  }
  return out;
}

/// Writes model `m` as a PyTorch module into `dir` (created when missing): vpdarts_model.py,
/// config.json and model.safetensors, each atomically; see the file's comment.
/// @throws config_error for an operator without a PyTorch form (nothing is written then);
/// io_error when the folder or a file cannot be written; value_error for a non-finite weight.
template <Scalar S, OpList Ops>
void export_torch(trained_model<S, Ops>& m, const std::filesystem::path& dir) {
  const std::string module = torch_export_module(m);  // refuses before anything is written
  const std::string config = torch_export_config(m).dump(2) + "\n";
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_directory(dir, ec))
    throw io_error(detail::cat("export_torch: '", dir.string(), "' exists and is not a folder"));
  std::filesystem::create_directories(dir, ec);
  if (ec) throw io_error(detail::cat("export_torch: cannot create the folder '", dir.string(), "': ", ec.message()));
  io::atomic_group files;  // the three are replaced together, or none is
  if (m.prompted) save_model(dir / "model.safetensors", *m.prompted, m.class_names, m.norm);
  else save_model(dir / "model.safetensors", *m.probe, m.class_names, m.norm);
  io::atomic_write(dir / "config.json", [&](std::ostream& o) { o << config; });
  io::atomic_write(dir / "vpdarts_model.py", [&](std::ostream& o) { o << module; });
  files.commit();
}

}  // namespace vpdarts
