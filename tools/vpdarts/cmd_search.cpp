// vpdarts search: the DARTS search of one fusion operator per layer, with the
// genotype, the alpha trajectory (CSV and heatmap), the checkpoint and metrics.
#include "settings.hpp"

namespace vpdarts_cli {

namespace {

/// The search command's own flags and what they become.
struct search_settings {
  std::string out = "vpdarts-run", order = "first", alpha_lr = "auto", lr_grid, select = "perturbation";
  long prompts = 8, grid_epochs = 2, finetune_epochs = 1;
  std::uint64_t seed = 0;
  bool resume = false;
  vp::search_options o;
  w_settings w;

  void add_to(flags& f) {
    f.add("out", out, "output folder", "DIR");
    f.add("prompts", prompts, "prompt tokens p (concat and cross_attention)");
    f.add("epochs", o.epochs, "search epochs");
    f.add("warmup-epochs", o.warmup_epochs, "epochs that train w only, before alpha moves");
    f.add("batch", o.batch, "batch size of search-train and search-val");
    f.add("val-fraction", o.val_fraction, "share of the training images held out as search-val");
    f.add("order", order, "DARTS order: first or second", "ORDER");
    w.add_to(f, "w-lr");
    f.add("alpha-lr", alpha_lr, "Adam lr of alpha; auto: 6 / planned alpha steps (docs/method.md)", "X|auto");
    f.add("alpha-weight-decay", o.bilevel.alpha_weight_decay, "L2 weight decay of alpha");
    f.add("alpha-beta1", o.bilevel.alpha_beta1, "Adam beta1 of alpha");
    f.add("alpha-beta2", o.bilevel.alpha_beta2, "Adam beta2 of alpha");
    f.add("w-lr-grid", lr_grid, "choose --w-lr on search-val from these values first, e.g. 0.005,0.01,0.05,0.1,0.25,0.5", "LIST");
    f.add("grid-epochs", grid_epochs, "epochs of w-only training per grid value");
    f.add("select", select,
          "how the genotype is chosen: perturbation (the operator whose removal costs most search-val accuracy, layer by "
          "layer; the default, docs/method.md) or argmax (of softmax(alpha) per layer, DARTS's rule)", "RULE");
    f.add("finetune-epochs", finetune_epochs, "--select perturbation: epochs of w-only training after each layer is fixed");
    f.add("seed", seed, "seed of alpha, the operator parameters, the split and the shuffling");
    f.add_switch("resume", resume, "continue from DIR/search.safetensors when it exists");
  }

  /// Checks every value; returns the lr grid (empty: none).
  std::vector<double> validate() {
    const std::string cmd = "search";
    require(prompts >= 1 && prompts <= 100000, cmd, cat("--prompts must be in 1..100000, got ", prompts));
    require(o.epochs >= 1, cmd, cat("--epochs must be >= 1, got ", o.epochs));
    require(o.warmup_epochs >= 0, cmd, cat("--warmup-epochs must be >= 0, got ", o.warmup_epochs));
    require(o.epochs > o.warmup_epochs, cmd,
            cat(o.epochs, " --epochs leave no alpha step after ", o.warmup_epochs, " --warmup-epochs"));
    require(o.batch >= 1, cmd, cat("--batch must be >= 1, got ", o.batch));
    require(o.batch >= parallel().size(), cmd,
            cat("--batch ", o.batch, " is smaller than the ", parallel().size(), " processes (each needs a row of every batch)"));
    require(o.val_fraction > 0 && o.val_fraction < 1, cmd, cat("--val-fraction must be in (0, 1), got ", o.val_fraction));
    require(order == "first" || order == "second", cmd, "--order is 'first' or 'second', got '" + order + "'");
    o.bilevel.order = order == "first" ? vp::darts_order::first : vp::darts_order::second;
    o.bilevel.w = w.options(cmd);
    const auto& b = o.bilevel;
    require(b.alpha_beta1 >= 0 && b.alpha_beta1 < 1 && b.alpha_beta2 >= 0 && b.alpha_beta2 < 1, cmd,
            "--alpha-beta1 and --alpha-beta2 must be in [0, 1)");
    require(b.alpha_weight_decay >= 0, cmd, cat("--alpha-weight-decay must be >= 0, got ", b.alpha_weight_decay));
    if (alpha_lr != "auto") {
      const double v = vp::text::parse_number<double>(alpha_lr).value_or(0);
      require(v > 0, cmd, "--alpha-lr wants a number > 0 or 'auto', got '" + alpha_lr + "'");
      o.auto_alpha_lr = false;
      o.bilevel.alpha_lr = v;
    }
    require(grid_epochs >= 1, cmd, "--grid-epochs must be >= 1");
    require(select == "argmax" || select == "perturbation", cmd,
            "--select is 'argmax' or 'perturbation', got '" + select + "'");
    require(finetune_epochs >= 0, cmd, cat("--finetune-epochs must be >= 0, got ", finetune_epochs));
    o.seed = seed;
    o.resume = resume;
    return parse_positive_list(lr_grid, cmd, "w-lr-grid");
  }
};

}  // namespace

int cmd_search(int argc, char** argv) {
  flags f("search",
          "Runs the DARTS search of one fusion operator per layer on a frozen backbone, then writes\n"
          "genotype.json, alpha.csv, alpha.png (the final weights), alpha_trajectory.png (over the epochs),\n"
          "search.safetensors (the checkpoint) and metrics.json to --out.");
  common_settings common;
  data_settings data("5-9", 1000, 0);
  backbone_settings backbone;
  search_settings s;
  backbone.add_to(f);
  s.add_to(f);
  data.add_to(f, true, false);
  common.add_to(f);
  f.note("Example: vpdarts search --out run --epochs 10   (built-in backbone and data)");
  if (!f.parse(argc, argv, 2)) return 0;
  common.validate("search");
  backbone.validate("search");
  data.validate("search", true, false);
  const std::vector<double> grid = s.validate();
  common.apply();
  s.o.progress = !common.quiet;

  s.o.parallel = parallel();
  const fs::path dir = s.out;
  on_root([&] { ensure_dir(dir); });
  s.o.checkpoint = dir / "search.safetensors";  // a fresh run replaces it after its first epoch
  fs::path bb;
  vp::vit<float> vit = backbone.load(common.quiet, &bb);
  auto train = data.load(vit.config(), false);
  model_t model(std::move(vit), {.prompts = s.prompts, .classes = train.classes(), .seed = s.seed});
  std::printf("search: %s, %ld prompts, operators %s; %ld images of %ld classes (%s), %s order\n",
              model.config().describe().c_str(), s.prompts, join(vp::default_ops::names).c_str(),
              static_cast<long>(train.size()), static_cast<long>(train.classes()), data.classes.c_str(), s.order.c_str());
  nlohmann::json grid_json;
  if (!grid.empty()) {
    std::printf("search: choosing the w learning rate on search-val (%ld epochs per value)\n", s.grid_epochs);
    const auto g = vp::choose_w_lr(model, train,
                                   {.grid = grid, .epochs = s.grid_epochs, .batch = s.o.batch, .val_fraction = s.o.val_fraction,
                                    .w = s.o.bilevel.w, .seed = s.seed, .progress = s.o.progress,
                                    .parallel = s.o.parallel});
    s.o.bilevel.w.lr = g.best;
    std::printf("search: w lr %g\n", g.best);
    grid_json = {{"lrs", g.lrs}, {"val_accuracy", g.val_accuracy}, {"train_loss", vp::io::numbers_to_json(g.train_loss)},
                 {"best", g.best}, {"epochs", s.grid_epochs}};
  }
  const std::vector<std::string> ops(vp::default_ops::names.begin(), vp::default_ops::names.end());
  s.o.on_epoch = [&](long, const vp::matrix<double>& a, double, double) {
    on_root([&] { vp::report::write_alpha_heatmap(dir / "alpha.png", a, ops); });  // the picture so far
  };
  if (s.o.parallel.active())
    std::printf("search: every batch shared over %d processes (MPI)\n", s.o.parallel.size());
  const auto r = vp::search(model, train, s.o);
  if (r.resumed_from > 0) std::printf("search: resumed after epoch %ld of %ld\n", r.resumed_from, s.o.epochs);
  vp::genotype found = r.found;
  nlohmann::json selection = {{"rule", s.select}, {"argmax_genotype", r.found.names()}};
  if (s.select == "perturbation") {
    std::printf("search: perturbation-based selection (%ld fine-tuning epochs per layer)\n", s.finetune_epochs);
    const auto p = vp::select_by_perturbation(model, train,
                                              {.finetune_epochs = s.finetune_epochs, .batch = s.o.batch,
                                               .val_fraction = s.o.val_fraction, .w = s.o.bilevel.w, .seed = s.seed,
                                               .progress = s.o.progress, .parallel = s.o.parallel});
    found = p.found;
    nlohmann::json layers = nlohmann::json::array();
    for (std::size_t l = 0; l < p.removed.size(); ++l) {
      nlohmann::json without = nlohmann::json::object();
      for (std::size_t k = 0; k < p.removed[l].size(); ++k)
        if (!std::isnan(p.removed[l][k].accuracy))
          without[std::string(vp::default_ops::names[k])] = {{"accuracy", p.removed[l][k].accuracy}, {"loss", p.removed[l][k].loss}};
      layers.push_back({{"accuracy", p.before[l].accuracy}, {"loss", p.before[l].loss}, {"without", without}});
    }
    selection.update({{"finetune_epochs", s.finetune_epochs}, {"layers", layers}, {"differs_from_argmax", p.argmax_differs}});
    for (const auto& d : p.argmax_differs) std::printf("search: perturbation chose %s\n", d.c_str());
  }
  on_root([&] {
    found.save(dir / "genotype.json");
    vp::report::write_alpha_csv(dir / "alpha.csv", r.alpha_history, ops);
    vp::report::write_alpha_heatmap(dir / "alpha.png", r.alpha_history.back(), ops);
    vp::report::write_alpha_trajectory(dir / "alpha_trajectory.png", r.alpha_history, ops);
  });
  std::printf("search: selection %s\n", s.select.c_str());
  print_genotype(found);
  for (const auto& warning : r.warnings) std::printf("warning: %s\n", warning.c_str());
  nlohmann::json margins = nlohmann::json::array();
  for (const auto& l : found.layers) margins.push_back(l.margin());
  nlohmann::json m = cost_metrics(model.trainable_params(true), model.trainable_percent(true), model.config(),
                                  [&](vp::tape<float>& t, const vp::image_batch<float>& x) {
                                    return model.logits(t, x, vp::grad_target::none);
                                  });
  m.update({{"command", "search"},
            {"genotype", found.names()},
            {"selection", selection},
            {"margins", margins},
            {"warnings", r.warnings},
            {"alpha_lr", r.alpha_lr},
            {"train_loss", vp::io::numbers_to_json(r.train_loss)},
            {"val_loss", vp::io::numbers_to_json(r.val_loss)},
            {"search_seconds", r.seconds},
            {"w_lr", s.o.bilevel.w.lr},
            {"w_lr_grid", grid_json},
            {"backbone", bb.string()},
            {"peak_rss_mb", vp::report::peak_rss_mb()},
            {"seconds", r.seconds}});
  on_root([&] { vp::report::write_json(dir / "metrics.json", m); });
  std::printf("search: %.1f s; wrote %s/{genotype.json, alpha.csv, alpha.png, alpha_trajectory.png, search.safetensors, metrics.json}\n",
              r.seconds, s.out.c_str());
  return 0;
}

}  // namespace vpdarts_cli
