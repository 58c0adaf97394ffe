// vpdarts predict: image files classified by a model file from vpdarts retrain.
#include "settings.hpp"

#include <algorithm>

namespace vpdarts_cli {

namespace {

/// A field of the tab-separated output: backslash, tab, newline and carriage return escaped C-style.
std::string field(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '\t') out += "\\t";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else out += c;
  }
  return out;
}

}  // namespace

int cmd_predict(int argc, char** argv) {
  flags f("predict", "Classifies image files (PNG, JPEG, BMP, ...) with a model file from vpdarts retrain;\n"
                     "prints one line per file: the file, the label and its probability, tab-separated\n"
                     "(a backslash, tab or newline inside a file or class name is written as \\\\, \\t, \\n).");
  common_settings common;
  std::string model_file;
  long top = 1;
  std::vector<std::string> files;
  f.add("model", model_file, "model file written by vpdarts retrain", "FILE");
  f.add("top", top, "labels to print per file");
  f.positional(files, "IMAGE");
  common.add_to(f);
  if (!parse_flags(f, argc, argv)) return 0;
  common.validate("predict");
  require(!model_file.empty(), "predict", "--model FILE is required (see vpdarts predict --help)");
  require(!files.empty(), "predict", "no image files given (see vpdarts predict --help)");
  require(top >= 1, "predict", "--top must be >= 1");
  common.apply();
  vp::trained_model<float> lm = vp::load_model<float>(model_file);
  const auto& c = lm.config();
  const std::vector<fs::path> paths(files.begin(), files.end());
  const auto batch = vp::data::load_images<float>(paths, c.channels, c.image, lm.norm);
  vp::tape<float> t(execution());
  vp::no_grad<float> guard(t);
  const vp::matrix<float> probs = vp::softmax_rows(lm.logits(t, batch)).value();
  for (std::size_t i = 0; i < files.size(); ++i) {
    std::vector<std::pair<float, vp::index>> ranked;
    for (vp::index k = 0; k < probs.cols(); ++k) ranked.emplace_back(probs(static_cast<vp::index>(i), k), k);
    std::sort(ranked.begin(), ranked.end(), std::greater<>());
    std::printf("%s", field(files[i]).c_str());
    for (long k = 0; k < std::min<long>(top, static_cast<long>(ranked.size())); ++k)
      std::printf("\t%s\t%.4f", field(lm.class_names[static_cast<std::size_t>(ranked[static_cast<std::size_t>(k)].second)]).c_str(),
                  static_cast<double>(ranked[static_cast<std::size_t>(k)].first));
    std::printf("\n");
  }
  return 0;
}

}  // namespace vpdarts_cli
