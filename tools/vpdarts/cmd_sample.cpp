// vpdarts sample: synthetic images written as PNG files in an image-folder layout.
#include "settings.hpp"

#include <algorithm>
#include <cmath>

namespace vpdarts_cli {

int cmd_sample(int argc, char** argv) {
  flags f("sample", "Writes synthetic images as PNG files in an image-folder layout, OUT/<class>/<n>.png,\n"
                    "to look at the built-in task or to try vpdarts predict on files.");
  common_settings common;
  data_settings data("5-9", 0, 0);
  std::string out = "samples";
  long count = 10, image = 32, channels = 3;
  f.add("out", out, "output folder", "DIR");
  f.add("count", count, "images in all (classes balanced)");
  f.add("image", image, "image side in pixels");
  f.add("channels", channels, "1 (grey) or 3 (RGB)");
  data.add_to(f, false, false);
  common.add_to(f);
  if (!parse_flags(f, argc, argv)) return 0;
  common.validate("sample");
  data.validate("sample", false, false);
  require(data.data == "synthetic", "sample", "only --data synthetic can be sampled");
  require(count >= 1 && count <= 1'000'000, "sample", cat("--count must be in 1..1000000, got ", count));
  require(image >= 1 && image <= 4096, "sample", cat("--image must be in 1..4096, got ", image));
  require(channels == 1 || channels == 3, "sample", cat("--channels must be 1 or 3, got ", channels));
  data.validate_image("sample", image);
  common.apply();
  data.train_images = count;
  vp::vit_config c;
  c.image = image;
  c.channels = channels;
  const auto set = data.load(c, false);
  const vp::data::normalization norm = vp::data::normalization::synthetic();
  std::vector<unsigned char> px(static_cast<std::size_t>(image * image * channels));
  if (!parallel().root()) return 0;  // process 0 writes the files (nothing collective follows)
  for (vp::index i = 0; i < set.size(); ++i) {
    const std::string& name = set.class_names[static_cast<std::size_t>(set.labels[static_cast<std::size_t>(i)])];
    const fs::path dir = fs::path(out) / name;
    ensure_dir(dir);
    const float* row = set.images.pixels.row(i).data();
    for (long ch = 0; ch < channels; ++ch)
      for (long p = 0; p < image * image; ++p) {
        const double v = static_cast<double>(row[ch * image * image + p]) * norm.std[0] + norm.mean[0];
        px[static_cast<std::size_t>(p * channels + ch)] = static_cast<unsigned char>(std::lround(255.0 * std::clamp(v, 0.0, 1.0)));
      }
    const fs::path file = dir / cat(i, ".png");
    vp::report::canvas::write_png_bytes(file, static_cast<int>(image), static_cast<int>(image), static_cast<int>(channels), px.data());
    std::printf("%s\t%s\n", file.string().c_str(), name.c_str());
  }
  return 0;
}

}  // namespace vpdarts_cli
