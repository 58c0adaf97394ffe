#pragma once
// The search and retrain commands' settings and their work after the data is loaded, shared by the
// tool (cmd_search.cpp, cmd_retrain.cpp) and the Python module (python/vpdarts_module.cpp), so that
// both take the same options, say the same things and write the same files.

#include <optional>

#include "settings.hpp"

namespace vpdarts_cli {

/// The training-set size whose updates the default rule keeps at smaller sizes (docs/method.md, "The revised
/// default rule"): the search's --reference-images default, and what retrain's small-set warning measures against.
inline constexpr long reference_images_default = 1000;

/// ceil(reference / n) below `reference` training images (n > 0, reference > 0), else 1: how many times the epochs
/// at n images make the updates of `reference` images.
inline long epoch_scale_for(long n, long reference) {
  return reference > 0 && n > 0 && n < reference ? (reference + n - 1) / n : 1;
}

/// The search command's own flags and what they become.
struct search_settings {
  std::string out = "vpdarts-run", order = "first", alpha_lr = "auto", lr_grid, select = "perturbation", cost = "params";
  long prompts = 8, grid_epochs = 2, finetune_epochs = 1, runs = 3, select_epochs = 5, latency_runs = 20, pareto = 0,
       select_folds = 0, reference_images = reference_images_default;
  /// What fit_to() made of the epoch counts left at their defaults: ceil(reference_images / N) below
  /// reference_images training images, else 1 (0: fit_to() has not run yet).
  long epoch_scale = 0;
  /// The flags given by the caller (note_given); fit_to() leaves their values as given.
  std::map<std::string, std::string> given_flags;
  double cost_weight = 0, param_budget = 0, latency_budget = 0;
  /// Every candidate's cost (filled by run_search before the first search; the same for every run).
  std::optional<vp::op_costs> costs;
  std::uint64_t seed = 0;
  bool resume = false;
  vp::search_options o;
  w_settings w;
  /// Called after every epoch of every run (the Python module's progress callback): the run's seed, the
  /// epoch (1-based), softmax(alpha) and the epoch's mean losses.
  std::function<void(std::uint64_t seed, long epoch, const vp::matrix<double>& alpha, double train_loss, double val_loss)>
      on_epoch;

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
          "how each search's genotype is chosen: perturbation (the default: layer by layer, the operator whose removal "
          "costs most search-val accuracy; docs/method.md) or argmax (softmax(alpha)'s strongest operator per layer, "
          "DARTS's rule)", "RULE");
    f.add("runs", runs,
          "searches, with seeds SEED..SEED+N-1 (each in DIR/run-K); with more than one, each run's genotype is trained "
          "--select-epochs on search-train and the best on search-val is the result (DARTS's protocol, the default)");
    f.add("select-epochs", select_epochs, "--runs above 1: epochs of training per run's genotype on search-train");
    f.add("select-folds", select_folds,
          "--runs above 1 (and --pareto): 1 scores each genotype on search-val; K > 1 by K-fold cross-validation over "
          "all the training images (K trainings per genotype, every image scored once); 0 (the default): 5 below "
          "--reference-images training images, 1 from there on");
    f.add("reference-images", reference_images,
          "below this many training images N, every epoch count not given (--epochs with its two warm-ups, "
          "--grid-epochs, --select-epochs, --finetune-epochs) is multiplied by ceil(R / N), so that a small set gets "
          "the updates R images get (0: never)", "R");
    f.add("finetune-epochs", finetune_epochs, "--select perturbation: epochs of w-only training after each layer is fixed");
    f.add("seed", seed, "seed of alpha, the operator parameters, the split and the shuffling");
    f.add_switch("resume", resume, "continue from DIR/search.safetensors when it exists");
    f.add("param-budget", param_budget,
          "the most trainable values (operator parameters and head) the genotype may have: the search prices them in "
          "alpha's objective with a weight it sets itself, and every choice keeps within it (0: no budget)", "N");
    f.add("latency-budget", latency_budget,
          "the most batch-1 milliseconds the genotype may take, as measured on this machine at the start (each operator "
          "around its block, plus the embedding and head); as --param-budget (0: no budget)", "MS");
    f.add("cost", cost, "what --cost-weight and --pareto price: params (trainable values) or latency (batch-1 ms)", "KIND");
    f.add("cost-weight", cost_weight,
          "lambda: alpha's objective adds lambda x the expected --cost under softmax(alpha), as a share of the spread "
          "between the cheapest and the costliest genotype (0: none; a budget sets it itself)");
    f.add("pareto", pareto,
          "sweep K budgets of --cost from the cheapest genotype to the costliest, one search (--runs) each in "
          "DIR/budget-I, and write the front: DIR/front.csv and DIR/front.png (search-val accuracy against trainable "
          "values and latency)", "K");
    f.add("latency-runs", latency_runs, "timed runs of every operator around its block when measuring latency (their median)");
  }

  /// The cost kind a budget or --cost names.
  vp::cost_kind kind() const {
    if (param_budget > 0) return vp::cost_kind::params;
    if (latency_budget > 0) return vp::cost_kind::latency;
    return cost == "latency" ? vp::cost_kind::latency : vp::cost_kind::params;
  }
  /// The budget asked for (none when 0).
  std::optional<double> budget() const {
    if (param_budget > 0) return param_budget;
    if (latency_budget > 0) return latency_budget;
    return std::nullopt;
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
    require(runs >= 1 && runs <= 1000, cmd, cat("--runs must be in 1..1000, got ", runs));
    require(select_epochs >= 1, cmd, cat("--select-epochs must be >= 1, got ", select_epochs));
    require(select_folds >= 0 && select_folds <= 100, cmd, cat("--select-folds must be in 0..100 (0: auto), got ", select_folds));
    require(reference_images >= 0 && reference_images <= 10'000'000, cmd,
            cat("--reference-images must be in 0..10000000 (0: never scale), got ", reference_images));
    require(finetune_epochs >= 0, cmd, cat("--finetune-epochs must be >= 0, got ", finetune_epochs));
    require(cost == "params" || cost == "latency", cmd, "--cost is 'params' or 'latency', got '" + cost + "'");
    require(std::isfinite(cost_weight) && cost_weight >= 0 && cost_weight <= vp::cost_objective::max_lambda, cmd,
            cat("--cost-weight must be in 0..", vp::cost_objective::max_lambda, ", got ", cost_weight));
    require(std::isfinite(param_budget) && param_budget >= 0, cmd, cat("--param-budget must be >= 0, got ", param_budget));
    require(std::isfinite(latency_budget) && latency_budget >= 0, cmd, cat("--latency-budget must be >= 0, got ", latency_budget));
    require(!(param_budget > 0 && latency_budget > 0), cmd, "--param-budget and --latency-budget exclude each other (give one)");
    require(pareto == 0 || (pareto >= 2 && pareto <= 64), cmd, cat("--pareto must be 0 or in 2..64, got ", pareto));
    require(!(pareto > 0 && (param_budget > 0 || latency_budget > 0)), cmd, "--pareto sets the budgets itself; drop --param-budget and --latency-budget");
    require(latency_runs >= 1 && latency_runs <= 100000, cmd, cat("--latency-runs must be in 1..100000, got ", latency_runs));
    o.seed = seed;
    o.resume = resume;
    return parse_positive_list(lr_grid, cmd, "w-lr-grid");
  }

  /// Records which flags the caller gave (flags::given()), so that fit_to() leaves them as given.
  void note_given(const flags& f) { given_flags = f.given(); }

  /// The default rule's fit to the data (docs/method.md, "The default rule"): below reference_images training
  /// images (n), every epoch count left at its default is multiplied by ceil(reference_images / n), so that the
  /// search, the selection and their fine-tuning make the updates they make at reference_images (a count the
  /// caller gave stays as given); and select_folds 0 becomes 5-fold cross-validation over all n images there (a
  /// 20 % search-val of 200 images is 40 images, 2.5 points each), 1 (search-val) from reference_images on.
  /// Runs once, after validate(); says what it changed.
  void fit_to(long n) {
    if (epoch_scale > 0) return;
    epoch_scale = epoch_scale_for(n, reference_images);
    const bool small = epoch_scale > 1;  // n < reference_images: ceil(reference_images / n) >= 2
    // the two warm-ups are parts of --epochs: they scale with it, and stay as they are when --epochs is given
    struct count { long* value; const char* flag; bool part_of_epochs; };
    const count counts[] = {{&o.epochs, "epochs", false}, {&o.warmup_epochs, "warmup-epochs", true},
                            {&o.bilevel.w.warmup_epochs, "lr-warmup-epochs", true}, {&grid_epochs, "grid-epochs", false},
                            {&select_epochs, "select-epochs", false}, {&finetune_epochs, "finetune-epochs", false}};
    std::string scaled, kept;
    for (const count& c : counts) {
      if (given_flags.count(c.flag) || (c.part_of_epochs && given_flags.count("epochs"))) {
        if (small) kept += cat(kept.empty() ? "" : ", ", c.flag, " ", *c.value);
        continue;
      }
      *c.value *= epoch_scale;  // defaults are small numbers: no overflow
      if (small) scaled += cat(scaled.empty() ? "" : ", ", c.flag, " ", *c.value);
    }
    if (select_folds == 0) select_folds = small ? std::min(5L, n) : 1;
    if (small)
      std::printf("search: %ld training images, fewer than --reference-images %ld: the epoch counts not given x%ld (%s)%s%s\n",
                  n, reference_images, epoch_scale, scaled.empty() ? "none" : scaled.c_str(),
                  kept.empty() ? "" : cat("; kept: ", kept).c_str(),
                  runs > 1 || pareto > 0 ? cat("; the runs scored by ", select_folds, "-fold cross-validation").c_str() : "");
  }
};

/// What a search found: its genotype, its final softmax(alpha) (L x K) and its metrics.json.
struct search_outcome {
  vp::genotype found;
  vp::matrix<double> alpha;
  nlohmann::json metrics;
};

/// Checks the search's and the common settings, the output folder and a resume's checkpoint kind, and
/// applies the common settings (threads, precision); returns the w lr grid (empty: none).
/// @throws usage_error, config_error.
std::vector<double> prepare_search(search_settings& s, common_settings& common);

/// The search (s.runs of them, the best kept) on `train` with backbone `vit` (read from `bb`; `classes`
/// says which classes the data holds, for the log), writing its files to s.out.
search_outcome run_search(search_settings& s, const std::vector<double>& grid, const vp::vit<float>& vit,
                          const vp::data::labelled_images<float>& train, const fs::path& bb, const std::string& classes);

/// The retrain command's own flags.
struct retrain_settings {
  std::string run = "vpdarts-run", out, genotype_file, op, lr_grid, wd_grid, prompts_grid;
  long prompts = 8, epochs = 20, batch = 32, crop_padding = 0, grid_epochs = 0, widen_grid = 2;
  std::vector<double> weight_decays;  ///< --wd-grid, parsed (empty: --weight-decay alone)
  std::vector<long> prompt_counts;    ///< --prompts-grid, parsed (empty: --prompts alone)
  double val_fraction = 0.2;
  std::uint64_t seed = 0;
  bool probe = false, flip = false;
  w_settings w;
  std::optional<vp::genotype> given;  ///< the genotype to retrain, when given as a value (the Python module)
  /// The flags given by the caller (note_given): without --epochs a small training set is warned about.
  std::map<std::string, std::string> given_flags;

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
    f.add("wd-grid", wd_grid, "with --lr-grid: the weight decays tried with every lr, e.g. 0,1e-4,1e-3 (default: --weight-decay alone)",
          "LIST");
    f.add("prompts-grid", prompts_grid,
          "with --lr-grid: the prompt counts tried (each with the whole lr and weight-decay grid), e.g. 1,8,50 as VPT's "
          "protocol; the genotype must use prompts (concat, cross_attention)", "LIST");
    f.add("widen-grid", widen_grid,
          "with --lr-grid: times the grid widens when the best lr is its smallest or largest value (or the best weight "
          "decay its largest); metrics.json says what was added and what still sits at an edge");
    f.add("grid-epochs", grid_epochs, "epochs per grid value (default: --epochs)");
    f.add("val-fraction", val_fraction, "share of the training images held out as search-val for --lr-grid");
    f.add("seed", seed, "seed of the fresh operator parameters and the shuffling");
    f.add("crop-padding", crop_padding, "augmentation: pad by N pixels, then crop back at a random offset");
    f.add_switch("flip", flip, "augmentation: random left-right flips");
  }

  /// Records which flags the caller gave (flags::given()).
  void note_given(const flags& f) { given_flags = f.given(); }

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
    require(!(given && (probe || !op.empty())), cmd, "a genotype excludes --linear-probe and --op");
    require(widen_grid >= 0 && widen_grid <= 20, cmd, cat("--widen-grid must be in 0..20, got ", widen_grid));
    weight_decays = parse_positive_list(wd_grid, cmd, "wd-grid", true);
    prompt_counts.clear();
    for (double v : parse_positive_list(prompts_grid, cmd, "prompts-grid")) {
      require(v == std::floor(v) && v >= 1 && v <= 100000, cmd, cat("--prompts-grid: ", v, " is not a prompt count in 1..100000"));
      prompt_counts.push_back(static_cast<long>(v));
    }
    std::sort(prompt_counts.begin(), prompt_counts.end());
    require((weight_decays.empty() && prompt_counts.empty()) || !lr_grid.empty(), cmd,
            "--wd-grid and --prompts-grid are parts of the --lr-grid search; give --lr-grid too");
    require(!(probe && !prompt_counts.empty()), cmd, "--prompts-grid does not apply to the linear probe (it has no prompts)");
    if (out.empty()) out = (fs::path(run) / (probe ? "probe" : op.empty() ? "retrain" : "op-" + op)).string();
  }

  /// The genotype to retrain (--op, --genotype or RUN/genotype.json).
  vp::genotype genotype(vp::index depth) const {
    if (given) return *given;
    if (!op.empty()) return vp::genotype::uniform(op, static_cast<std::size_t>(depth));
    const fs::path gf = genotype_file.empty() ? fs::path(run) / "genotype.json" : fs::path(genotype_file);
    if (!fs::exists(gf))
      throw vp::io_error("no genotype at '" + gf.string() + "' (run vpdarts search --out " + run +
                         " first, or give --genotype FILE, --op NAME or --linear-probe)");
    return vp::genotype::load(gf);
  }
};

/// Checks the retrain's and the common settings and the output files, and applies the common settings;
/// returns the lr grid (empty: none). @throws usage_error.
std::vector<double> prepare_retrain(retrain_settings& s, common_settings& common);

/// Retrains (s.probe: a linear probe on) backbone `vit` (read from `bb`) on `train`, tests it on `test`
/// (none when empty: test_accuracy is null) and writes model.safetensors (its images normalised as
/// `norm` says) and metrics.json to s.out; returns the metrics.
nlohmann::json run_retrain(retrain_settings& s, const std::vector<double>& grid, bool quiet, vp::vit<float> vit,
                           const vp::data::labelled_images<float>& train, const vp::data::labelled_images<float>& test,
                           const fs::path& bb, const vp::data::normalization& norm);

}  // namespace vpdarts_cli
