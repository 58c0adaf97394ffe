// vpdarts pretrain: a ViT from scratch on the synthetic task (or IDX, image
// folders), saved as a timm-named safetensors file.
#include "settings.hpp"

namespace vpdarts_cli {

int cmd_pretrain(int argc, char** argv) {
  flags f("pretrain", "Pretrains a ViT from scratch on the synthetic task and saves it as a timm-named safetensors file.");
  common_settings common;
  data_settings data("0-4", 3000, 500);
  std::string out = "backbone.safetensors", init = "xavier";
  const builtin_recipe r;
  long image = r.config.image, patch = r.config.patch, dim = r.config.dim, depth = r.config.depth,
       heads = r.config.heads, mlp = r.config.mlp, channels = r.config.channels;
  vp::pretrain_options o{.epochs = r.epochs, .batch = r.batch, .lr = r.lr, .weight_decay = 0.05};
  f.add("out", out, "the checkpoint to write", "FILE");
  f.add("image", image, "image side in pixels");
  f.add("channels", channels, "input channels (1 or 3)");
  f.add("patch", patch, "patch side");
  f.add("dim", dim, "width D");
  f.add("depth", depth, "blocks");
  f.add("heads", heads, "attention heads");
  f.add("mlp", mlp, "MLP hidden width");
  f.add("init", init, "initialisation: xavier (trains from scratch) or timm (0.02 normal)", "NAME");
  f.add("epochs", o.epochs, "epochs");
  f.add("batch", o.batch, "batch size");
  f.add("lr", o.lr, "AdamW peak learning rate (one warm-up epoch, then cosine)");
  f.add("weight-decay", o.weight_decay, "AdamW decoupled weight decay");
  f.add("seed", o.seed, "initialisation and shuffling seed");
  long crop_padding = 0;
  f.add("crop-padding", crop_padding, "augmentation: pad by N pixels, then crop back at a random offset");
  f.add_switch("flip", o.augment.flip, "augmentation: random left-right flips");
  data.add_to(f);
  common.add_to(f);
  if (!parse_flags(f, argc, argv)) return 0;
  const std::string cmd = "pretrain";
  common.validate(cmd);
  data.validate(cmd, true, true);
  require(channels == 1 || channels == 3, cmd, cat("--channels must be 1 (grey) or 3 (RGB), got ", channels));
  data.validate_image(cmd, image);
  check_outputs(cmd, "--out", {out});
  require(init == "xavier" || init == "timm", cmd, "--init is 'xavier' or 'timm', got '" + init + "'");
  require(o.epochs >= 1, cmd, cat("--epochs must be >= 1, got ", o.epochs));
  require(crop_padding >= 0 && crop_padding <= image / 2, cmd,
          cat("--crop-padding must be in 0..", image / 2, " (half the image side), got ", crop_padding));
  o.augment.crop_padding = crop_padding;
  require(o.batch >= 1, cmd, cat("--batch must be >= 1, got ", o.batch));
  require(o.batch >= parallel().size(), cmd,
          cat("--batch ", o.batch, " is smaller than the ", parallel().size(), " processes (each needs a row of every batch)"));
  require(o.lr > 0, cmd, cat("--lr must be > 0, got ", o.lr));
  require(o.weight_decay >= 0, cmd, cat("--weight-decay must be >= 0, got ", o.weight_decay));
  const vp::vit_config c{image, channels, patch, dim, depth, heads, mlp,
                         static_cast<vp::index>(parse_classes(data.classes).size())};
  try {
    c.validate();
  } catch (const vp::config_error& e) {
    throw usage_error("vpdarts pretrain: " + e.message());
  }
  common.apply();
  o.progress = !common.quiet;
  o.parallel = parallel();
  vp::vit<float> m(c, o.seed, init == "timm" ? vp::vit_init::timm : vp::vit_init::xavier);
  std::printf("pretrain: %s, %ld backbone parameters\n", c.describe().c_str(), static_cast<long>(m.backbone_size()));
  auto train = data.load(c, false), test = data.load(c, true);
  auto res = vp::pretrain(m, train, test, o);
  on_root([&] { vp::save_vit(out, m); });
  std::printf("pretrain: train accuracy %.3f, test accuracy %.3f, %.1f s; wrote %s\n", res.train_accuracy,
              res.test_accuracy, res.seconds, out.c_str());
  return 0;
}

}  // namespace vpdarts_cli
