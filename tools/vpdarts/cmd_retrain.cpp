// vpdarts retrain: the derived model of a genotype (or one operator at every
// layer, or a linear probe), trained and tested, written as a model file.
#include "settings.hpp"

#include <chrono>

namespace vpdarts_cli {

namespace {

/// The retrain command's own flags.
struct retrain_settings {
  std::string run = "vpdarts-run", out, genotype_file, op, lr_grid;
  long prompts = 8, epochs = 20, batch = 32, crop_padding = 0, grid_epochs = 0;
  double val_fraction = 0.2;
  std::uint64_t seed = 0;
  bool probe = false, flip = false;
  w_settings w;

  void add_to(flags& f) {
    f.add("run", run, "the search's output folder (its genotype.json is the default genotype)", "DIR");
    f.add("out", out, "output folder (default: RUN/retrain, RUN/probe or RUN/op-NAME)", "DIR");
    f.add("genotype", genotype_file, "genotype file (default: RUN/genotype.json)", "FILE");
    f.add("op", op, "instead of a genotype, this operator at every layer (concat is VPT-deep)", "NAME");
    f.add_switch("linear-probe", probe, "instead of prompts, train only a linear head on the frozen backbone");
    f.add("prompts", prompts, "prompt tokens p");
    f.add("epochs", epochs, "epochs");
    f.add("batch", batch, "batch size");
    w.add_to(f, "lr");
    f.add("lr-grid", lr_grid,
          "choose --lr on search-val first: train on search-train at each value, keep the best, then train on all", "LIST");
    f.add("grid-epochs", grid_epochs, "epochs per grid value (default: --epochs)");
    f.add("val-fraction", val_fraction, "share of the training images held out as search-val for --lr-grid");
    f.add("seed", seed, "seed of the fresh operator parameters and the shuffling");
    f.add("crop-padding", crop_padding, "augmentation: pad by N pixels, then crop back at a random offset");
    f.add_switch("flip", flip, "augmentation: random left-right flips");
  }

  void validate() {
    const std::string cmd = "retrain";
    require(prompts >= 1 && prompts <= 100000, cmd, cat("--prompts must be in 1..100000, got ", prompts));
    require(epochs >= 1, cmd, cat("--epochs must be >= 1, got ", epochs));
    require(batch >= 1, cmd, cat("--batch must be >= 1, got ", batch));
    require(batch >= parallel().size(), cmd,
            cat("--batch ", batch, " is smaller than the ", parallel().size(), " processes (each needs a row of every batch)"));
    require(crop_padding >= 0 && crop_padding <= 4096, cmd, cat("--crop-padding must be in 0..4096 (and at most half the image side), got ", crop_padding));
    require(!(probe && (crop_padding > 0 || flip)), cmd,
            "the linear probe trains on fixed features; --crop-padding and --flip do not apply");
    require(!(probe && !op.empty()), cmd, "--linear-probe and --op exclude each other");
    if (!op.empty()) {
      try {
        vp::default_ops::index_of(op);
      } catch (const vp::config_error& e) {
        throw usage_error("vpdarts retrain: --op: " + e.message());
      }
    }
    w.options(cmd);
    require(grid_epochs >= 0, cmd, cat("--grid-epochs must be >= 0 (0: as --epochs), got ", grid_epochs));
    if (grid_epochs == 0) grid_epochs = epochs;
    require(val_fraction > 0 && val_fraction < 1, cmd, cat("--val-fraction must be in (0, 1), got ", val_fraction));
    if (out.empty()) out = (fs::path(run) / (probe ? "probe" : op.empty() ? "retrain" : "op-" + op)).string();
  }

  /// The genotype to retrain (--op, --genotype or RUN/genotype.json).
  vp::genotype genotype(vp::index depth) const {
    if (!op.empty()) return vp::genotype::uniform(op, static_cast<std::size_t>(depth));
    const fs::path gf = genotype_file.empty() ? fs::path(run) / "genotype.json" : fs::path(genotype_file);
    if (!fs::exists(gf))
      throw vp::io_error("no genotype at '" + gf.string() + "' (run vpdarts search --out " + run +
                         " first, or give --genotype FILE, --op NAME or --linear-probe)");
    return vp::genotype::load(gf);
  }
};

}  // namespace

int cmd_retrain(int argc, char** argv) {
  flags f("retrain",
          "Builds the derived model of a genotype with fresh operator parameters (or a linear probe), trains it on\n"
          "the training images, evaluates it on the test images, and writes model.safetensors and metrics.json to --out.");
  common_settings common;
  data_settings data("5-9", 1000, 1000);
  backbone_settings backbone;
  retrain_settings s;
  s.add_to(f);
  backbone.add_to(f);
  data.add_to(f);
  common.add_to(f);
  if (!parse_flags(f, argc, argv)) return 0;
  common.validate("retrain");
  backbone.validate("retrain");
  data.validate("retrain", true, true);
  s.validate();
  data.validate_image("retrain", backbone.image);
  check_outputs("retrain", "--out", {fs::path(s.out) / "model.safetensors", fs::path(s.out) / "metrics.json"});
  common.apply();
  vp::w_optimizer_options w = s.w.options("retrain");
  const std::vector<double> grid = parse_positive_list(s.lr_grid, "retrain", "lr-grid");
  // the lr grid (VTAB-1k practice): search-train / search-val as the search splits them, never the test images
  nlohmann::json grid_json;
  auto choose_lr = [&](auto&& choose) {
    if (grid.empty()) return;
    std::printf("retrain: choosing the lr on search-val (%ld epochs per value)\n", s.grid_epochs);
    const vp::lr_grid_options o{.grid = grid, .epochs = s.grid_epochs, .batch = s.batch, .val_fraction = s.val_fraction,
                                .w = w, .seed = s.seed, .progress = !common.quiet,
                                .augment = {.crop_padding = s.crop_padding, .flip = s.flip}, .parallel = parallel()};
    const vp::lr_grid_result g = choose(o);
    w.lr = g.best;
    std::printf("retrain: lr %g\n", g.best);
    grid_json = {{"lrs", g.lrs}, {"val_accuracy", g.val_accuracy}, {"train_loss", vp::io::numbers_to_json(g.train_loss)},
                 {"best", g.best}, {"epochs", s.grid_epochs}, {"val_fraction", s.val_fraction}};
  };

  const fs::path dir = s.out;
  fs::path bb;
  vp::vit<float> vit = backbone.load(common.quiet, &bb);
  const vp::genotype g = s.probe ? vp::genotype{} : s.genotype(vit.config().depth);
  auto train = data.load(vit.config(), false), test = data.load(vit.config(), true);
  test.relabel_to(train.class_names, "retrain (test data)");  // by class name, never by folder order
  on_root([&] { ensure_dir(dir); });
  // model.safetensors and metrics.json are a pair: both are written (as temporaries) before either replaces
  // the old one, so a failed write (a full disk, say) leaves the old pair whole
  std::function<void()> save;
  std::optional<model_t> prompted;  // lives until the pair is written
  nlohmann::json m;
  double accuracy = 0, seconds = 0;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  if (s.probe) {
    std::printf("retrain: linear probe on %s\n", vit.config().describe().c_str());
    choose_lr([&](const vp::lr_grid_options& o) { return vp::choose_probe_lr(vit, train, o); });
    const auto r = vp::linear_probe(vit, train, test,
                                    {.epochs = s.epochs, .batch = s.batch, .w = w, .seed = s.seed, .progress = !common.quiet,
                                     .parallel = parallel()});
    accuracy = r.test_accuracy;
    save = [&] { vp::save_model(dir / "model.safetensors", vit, train.class_names, data.norm(vit.config())); };
    seconds = elapsed();
    m = cost_metrics(r.trainable_params, 100.0 * static_cast<double>(r.trainable_params) / static_cast<double>(vit.backbone_size()),
                     vit.config(), [&](vp::tape<float>& t, const vp::image_batch<float>& x) { return vit.logits(t, x); });
    m.update({{"method", "linear_probe"}, {"train_loss", r.train_loss}, {"train_accuracy", r.train_accuracy}});
  } else {
    model_t& model = prompted.emplace(std::move(vit), g,
                                      vp::prompt_options{.prompts = s.prompts, .classes = train.classes(), .seed = s.seed});
    std::printf("retrain: %s with %s\n", model.config().describe().c_str(), g.str().c_str());
    choose_lr([&](const vp::lr_grid_options& o) { return vp::choose_w_lr(model, train, o); });
    const double loss = vp::train(model, train,
                                  {.epochs = s.epochs, .batch = s.batch, .w = w, .seed = s.seed, .progress = !common.quiet,
                                   .augment = {.crop_padding = s.crop_padding, .flip = s.flip}, .parallel = parallel()});
    accuracy = vp::evaluate(model, test, 64, parallel());
    save = [&] {
      vp::save_model(dir / "model.safetensors", model, train.class_names, data.norm(model.config()));
    };
    seconds = elapsed();
    m = cost_metrics(model.trainable_params(), model.trainable_percent(), model.config(),
                     [&](vp::tape<float>& t, const vp::image_batch<float>& x) {
                       return model.logits(t, x, vp::grad_target::none);
                     });
    m.update({{"method", s.op.empty() ? "genotype" : s.op}, {"genotype", g.names()}, {"train_loss", loss}});
  }
  m.update({{"command", "retrain"},
            {"test_accuracy", accuracy},
            {"test_images", test.size()},
            {"lr", w.lr},
            {"lr_grid", grid_json},
            {"train_images", train.size()},
            {"backbone", bb.string()},
            {"peak_rss_mb", vp::report::peak_rss_mb()},
            {"seconds", seconds}});
  on_root([&] {
    vp::io::atomic_group pair;
    save();
    vp::report::write_json(dir / "metrics.json", m);
    // a crash between the two renames leaves the new model without metrics, never with the old ones
    std::error_code gone;
    fs::remove(dir / "metrics.json", gone);
    pair.commit();
  });
  if (parallel().root())
    std::printf("retrain: test accuracy %.4f, %ld trainable parameters (%.3f%% of the backbone), latency %.2f ms at batch 1, "
              "%.1f images/s at batch 64, %.1f s; wrote %s/{model.safetensors, metrics.json}\n",
              accuracy, m["trainable_params"].get<long>(), m["trainable_percent"].get<double>(),
              m["latency_ms_batch1"].get<double>(), m["throughput_batch64"].get<double>(), seconds, s.out.c_str());
  return 0;
}

}  // namespace vpdarts_cli
