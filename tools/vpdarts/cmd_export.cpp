// vpdarts export: a model file from vpdarts retrain as a PyTorch module (vpdarts/torch_export.hpp).
#include "settings.hpp"

namespace vpdarts_cli {

int cmd_export(int argc, char** argv) {
  flags f("export",
          "Writes a model file from vpdarts retrain as a PyTorch module: DIR/vpdarts_model.py (needs only torch),\n"
          "DIR/config.json and DIR/model.safetensors. In Python: sys.path.insert(0, DIR); from vpdarts_model import load;\n"
          "model = load(DIR), an nn.Module taking (N, C, H, W) float32 images (normalised as model.normalization says)\n"
          "and returning logits. The backbone's weights keep timm's names.");
  std::string model_file, to;
  bool quiet = false;
  f.add("model", model_file, "model file written by vpdarts retrain", "FILE");
  f.add("to", to, "the folder to write (created when missing; its three files are replaced)", "DIR");
  f.add_switch("quiet", quiet, "print nothing when done");
  if (!parse_flags(f, argc, argv)) return 0;
  require(!model_file.empty(), "export", "--model FILE is required (see vpdarts export --help)");
  require(!to.empty(), "export", "--to DIR is required (see vpdarts export --help)");
  check_outputs("export", "--to", {fs::path(to) / "model.safetensors", fs::path(to) / "vpdarts_model.py"});
  vp::trained_model<float> m = vp::load_model<float>(model_file);
  on_root([&] { vp::export_torch(m, to); });
  if (!quiet && parallel().root())
    std::printf("export: %s as a PyTorch module in %s/{vpdarts_model.py, config.json, model.safetensors}\n",
                m.is_probe() ? "a linear probe" : m.prompted->derive().str().c_str(), to.c_str());
  return 0;
}

}  // namespace vpdarts_cli
