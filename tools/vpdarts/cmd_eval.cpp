// vpdarts eval: a model file from vpdarts retrain, tested on images.
#include "settings.hpp"

#include <chrono>

namespace vpdarts_cli {

int cmd_eval(int argc, char** argv) {
  flags f("eval", "Evaluates a model file from vpdarts retrain on the test images and writes metrics.json.");
  common_settings common;
  data_settings data("5-9", 0, 1000);
  std::string model_file, out;
  f.add("model", model_file, "model file written by vpdarts retrain", "FILE");
  f.add("out", out, "where metrics.json goes (default: the model's folder/eval)", "DIR");
  data.add_to(f, false, true);
  common.add_to(f);
  if (!parse_flags(f, argc, argv)) return 0;
  common.validate("eval");
  data.validate("eval", false, true);
  require(!model_file.empty(), "eval", "--model FILE is required (see vpdarts eval --help)");
  check_outputs("eval", "--out", {(out.empty() ? fs::path(model_file).parent_path() / "eval" : fs::path(out)) / "metrics.json"});
  common.apply();
  const auto start = std::chrono::steady_clock::now();
  vp::trained_model<float> lm = vp::load_model<float>(model_file);
  auto test = data.load(lm.config(), true, &lm.norm);  // the normalisation the model was trained with
  test.relabel_to(lm.class_names, "eval");                 // folders map to the model's classes by name
  auto forward = [&](vp::tape<float>& t, const vp::image_batch<float>& x) { return lm.logits(t, x); };
  const double acc = vp::top1_accuracy(test, 64, forward, parallel(), execution());
  nlohmann::json m = cost_metrics(lm.trainable_params(), lm.trainable_percent(), lm.config(), forward);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  m.update({{"command", "eval"},
            {"model", model_file},
            {"test_accuracy", acc},
            {"test_images", test.size()},
            {"peak_rss_mb", vp::report::peak_rss_mb()},
            {"seconds", seconds}});
  const fs::path dir = out.empty() ? fs::path(model_file).parent_path() / "eval" : fs::path(out);
  const fs::path path = dir / "metrics.json";
  on_root([&] {
    ensure_dir(dir);
    vp::report::write_json(path, m);
  });
  if (parallel().root())
    std::printf("eval: test accuracy %.4f on %ld images, latency %.2f ms at batch 1, %.1f images/s at batch 64; wrote %s\n",
              acc, static_cast<long>(test.size()), m["latency_ms_batch1"].get<double>(), m["throughput_batch64"].get<double>(),
              path.string().c_str());
  return 0;
}

}  // namespace vpdarts_cli
