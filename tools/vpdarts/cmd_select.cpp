// vpdarts select: DARTS's protocol over several searches (one per seed, say): each
// run's genotype trained briefly on search-train from fresh parameters and scored
// on search-val; the best is written as the genotype to retrain.
#include "settings.hpp"

#include <sstream>

namespace vpdarts_cli {

int cmd_select(int argc, char** argv) {
  flags f("select",
          "Chooses among the genotypes of several searches (--runs A,B,C: each folder's genotype.json): each is trained\n"
          "from fresh parameters on search-train for --epochs and scored on search-val (never the test images); the best\n"
          "is written to --out as genotype.json, with every score in metrics.json. Retrain it with\n"
          "vpdarts retrain --run OUT.");
  common_settings common;
  data_settings data("5-9", 1000, 0);
  backbone_settings backbone;
  w_settings w;
  std::string runs, out = "vpdarts-select";
  long prompts = 8, epochs = 3, batch = 32, folds = 1;
  double val_fraction = 0.2;
  std::uint64_t seed = 0;
  f.add("runs", runs, "comma-separated search folders, each with a genotype.json", "DIRS");
  f.add("out", out, "output folder (genotype.json and metrics.json)", "DIR");
  f.add("prompts", prompts, "prompt tokens p of every derived model");
  f.add("epochs", epochs, "epochs of training per genotype on search-train");
  f.add("batch", batch, "batch size");
  f.add("val-fraction", val_fraction, "share of the training images held out as search-val");
  f.add("folds", folds, "1: score on search-val; K > 1: K-fold cross-validation over all the training images (K trainings per genotype)");
  w.add_to(f, "lr");
  f.add("seed", seed, "seed of the split, the fresh parameters and the shuffling");
  backbone.add_to(f);
  data.add_to(f, true, false);
  common.add_to(f);
  f.note("Example: vpdarts select --runs run0,run1,run2 --out best && vpdarts retrain --run best");
  if (!parse_flags(f, argc, argv)) return 0;
  const std::string cmd = "select";
  common.validate(cmd);
  backbone.validate(cmd);
  data.validate(cmd, true, false);
  require(!runs.empty(), cmd, "--runs DIRS is required (comma-separated search folders)");
  require(prompts >= 1 && prompts <= 100000, cmd, cat("--prompts must be in 1..100000, got ", prompts));
  require(epochs >= 1, cmd, cat("--epochs must be >= 1, got ", epochs));
  require(batch >= 1, cmd, cat("--batch must be >= 1, got ", batch));
  require(batch >= parallel().size(), cmd,
          cat("--batch ", batch, " is smaller than the ", parallel().size(), " processes (each needs a row of every batch)"));
  require(val_fraction > 0 && val_fraction < 1, cmd, cat("--val-fraction must be in (0, 1), got ", val_fraction));
  require(folds >= 1 && folds <= 100, cmd, cat("--folds must be in 1..100, got ", folds));
  const vp::w_optimizer_options wo = w.options(cmd);
  check_outputs(cmd, "--out", {fs::path(out) / "genotype.json", fs::path(out) / "metrics.json"});
  std::vector<std::string> dirs;
  {
    std::stringstream in(runs);
    std::string d;
    while (std::getline(in, d, ',')) {
      require(!d.empty(), cmd, "--runs: an empty folder name in '" + runs + "'");
      dirs.push_back(d);
    }
  }
  common.apply();
  fs::path bb;
  vp::vit<float> vit = backbone.load(common.quiet, &bb);
  std::vector<vp::genotype> gs;
  for (const auto& d : dirs) {
    const fs::path gf = fs::path(d) / "genotype.json";
    if (!fs::exists(gf)) throw vp::io_error("no genotype at '" + gf.string() + "' (is '" + d + "' a finished search?)");
    gs.push_back(vp::genotype::load(gf));
    for (const auto& layer : gs.back().layers) try {
        vp::default_ops::index_of(layer.op);
      } catch (const vp::config_error& e) {
        throw vp::config_error(cat("the genotype of the run folder '", d, "' ('", gf.string(), "'): ", e.message()));
      }
    if (gs.back().layers.size() != static_cast<std::size_t>(vit.config().depth))
      throw vp::config_error(cat("'", gf.string(), "' has ", gs.back().layers.size(), " layers but the backbone has ",
                                 vit.config().depth, " blocks"));
  }
  auto train = data.load(vit.config(), false);
  std::printf("select: %zu genotypes, each trained %ld epochs on search-train and scored on search-val\n", gs.size(), epochs);
  const vp::genotype_scores r = vp::score_genotypes<float, vp::default_ops>(
      vit, gs, train,
      {.epochs = epochs, .batch = batch, .val_fraction = val_fraction, .w = wo, .prompts = prompts, .seed = seed,
       .folds = static_cast<int>(folds), .progress = !common.quiet, .parallel = parallel(), .execution = execution()});
  const nlohmann::json candidates = scored_candidates(dirs, gs, r);
  const fs::path dir = out;
  on_root([&] {
    ensure_dir(dir);
    gs[r.best].save(dir / "genotype.json");
    vp::report::write_json(dir / "metrics.json", {{"command", "select"},
                                                  {"rule", "best_of_runs"},
                                                  {"best", dirs[r.best]},
                                                  {"genotype", gs[r.best].names()},
                                                  {"epochs", epochs},
                                                  {"folds", folds},
                                                  {"lr", wo.lr},
                                                  {"candidates", candidates},
                                                  {"backbone", bb.string()}});
  });
  std::printf("select: best %s (search-val accuracy %.4f)\n", dirs[r.best].c_str(), r.val[r.best].accuracy);
  print_genotype(gs[r.best]);
  std::printf("select: wrote %s/{genotype.json, metrics.json}\n", out.c_str());
  return 0;
}

}  // namespace vpdarts_cli
