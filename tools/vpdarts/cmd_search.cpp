// vpdarts search: the DARTS search of one fusion operator per layer, with the
// genotype, the alpha trajectory (CSV and heatmap), the checkpoint and metrics.
// By default several searches (seeds SEED, SEED+1, ...), each one's genotype chosen by
// perturbation, trained briefly on search-train and scored on search-val; the best is the result.
#include "commands.hpp"

#include <chrono>
#include <cmath>
#include <fstream>

namespace vpdarts_cli {

namespace {


/// The cost table and what `g` costs by it: exact trainable values, and the latency estimate.
nlohmann::json cost_json(const vp::op_costs& c, const vp::genotype& g) {
  const auto ops = vp::op_positions<vp::default_ops>(g);
  return {{"ops", std::vector<std::string>(vp::default_ops::names.begin(), vp::default_ops::names.end())},
          {"params", vp::io::matrix_to_json(c.params)}, {"fixed_params", c.fixed_params},
          {"latency_ms", vp::io::matrix_to_json(c.latency_ms)}, {"fixed_latency_ms", c.fixed_latency_ms}, {"latency_runs", c.latency_runs},
          {"genotype_params", vp::make_cost_objective(c, vp::cost_kind::params).of(ops)},
          {"genotype_latency_ms_estimate", vp::make_cost_objective(c, vp::cost_kind::latency).of(ops)}};
}

/// One search (settings `s`, seed s.seed) into `dir`, its genotype chosen by s.select; writes the run's
/// files and returns what it found.
search_outcome search_once(search_settings s, const std::vector<double>& grid, const vp::vit<float>& vit,
                           const vp::data::labelled_images<float>& train, const fs::path& dir, const fs::path& bb,
                           const std::string& classes) {
  s.o.seed = s.seed;
  on_root([&] { ensure_dir(dir); });
  s.o.checkpoint = dir / "search.safetensors";  // a fresh run replaces it after its first epoch
  model_t model(vit, {.prompts = s.prompts, .classes = train.classes(), .seed = s.seed});
  std::printf("search: %s, %ld prompts, operators %s; %ld images of %ld classes (%s), %s order, seed %llu\n",
              model.config().describe().c_str(), s.prompts, join(vp::default_ops::names).c_str(),
              static_cast<long>(train.size()), static_cast<long>(train.classes()), classes.c_str(), s.order.c_str(),
              static_cast<unsigned long long>(s.seed));
  nlohmann::json grid_json;
  if (!grid.empty()) {
    std::printf("search: choosing the w learning rate on search-val (%ld epochs per value)\n", s.grid_epochs);
    const auto g = vp::choose_w_lr(model, train,
                                   {.grid = grid, .epochs = s.grid_epochs, .batch = s.o.batch, .val_fraction = s.o.val_fraction,
                                    .w = s.o.bilevel.w, .seed = s.seed, .progress = s.o.progress,
                                    .parallel = s.o.parallel, .execution = s.o.bilevel.execution});
    s.o.bilevel.w.lr = g.best;
    std::printf("search: w lr %g\n", g.best);
    grid_json = {{"lrs", g.lrs}, {"val_accuracy", g.val_accuracy}, {"train_loss", vp::io::numbers_to_json(g.train_loss)},
                 {"best", g.best}, {"epochs", s.grid_epochs}};
  }
  const std::vector<std::string> ops(vp::default_ops::names.begin(), vp::default_ops::names.end());
  vp::cost_objective objective;  // the cost term of alpha's objective (none unless asked for)
  if (s.costs && (s.cost_weight > 0 || s.budget())) {
    objective = vp::make_cost_objective(*s.costs, s.kind(), s.cost_weight, s.budget());
    s.o.bilevel.cost = objective;
    std::printf("search: alpha's objective prices %s%s\n", objective.unit.c_str(),
                s.budget() ? cat(" within a budget of ", *s.budget(), " (cheapest genotype ", objective.cheapest(),
                                 ", costliest ", objective.costliest(), ")").c_str()
                           : cat(" with weight ", s.cost_weight).c_str());
  }
  s.o.on_epoch = [&](long epoch, const vp::matrix<double>& a, double train_loss, double val_loss) {
    on_root([&] { vp::report::write_alpha_heatmap(dir / "alpha.png", a, ops); });  // the picture so far
    if (s.on_epoch) s.on_epoch(s.seed, epoch, a, train_loss, val_loss);
  };
  const auto r = vp::search(model, train, s.o);
  if (r.resumed_from > 0) std::printf("search: resumed after epoch %ld of %ld\n", r.resumed_from, s.o.epochs);
  vp::genotype found = r.found;
  nlohmann::json selection = {{"rule", s.select}, {"argmax_genotype", r.found.names()}};
  if (s.select == "perturbation") {
    std::printf("search: perturbation-based selection (%ld fine-tuning epochs per layer)\n", s.finetune_epochs);
    const auto p = vp::select_by_perturbation(model, train,
                                              {.finetune_epochs = s.finetune_epochs, .batch = s.o.batch,
                                               .val_fraction = s.o.val_fraction, .w = s.o.bilevel.w, .seed = s.seed,
                                               .progress = s.o.progress, .parallel = s.o.parallel,
                                               .execution = s.o.bilevel.execution, .cost = objective});
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
            {"schedule", {{"reference_images", s.reference_images}, {"epoch_scale", s.epoch_scale},
                          {"epochs", s.o.epochs}, {"warmup_epochs", s.o.warmup_epochs},
                          {"lr_warmup_epochs", s.o.bilevel.w.warmup_epochs}, {"grid_epochs", s.grid_epochs},
                          {"select_epochs", s.select_epochs}, {"select_folds", s.select_folds},
                          {"finetune_epochs", s.finetune_epochs}}},
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
  if (s.costs) {
    nlohmann::json c = cost_json(*s.costs, found);
    if (objective.cost.size() > 0)
      c.update({{"objective", vp::to_string(s.kind())},
                {"unit", objective.unit},
                {"budget", s.budget() ? nlohmann::json(*s.budget()) : nlohmann::json()},
                {"lambda_start", objective.lambda},
                {"lambda", vp::io::numbers_to_json(r.cost_lambda)},
                {"expected_cost", vp::io::numbers_to_json(r.expected_cost)}});
    m["cost"] = c;
  }
  on_root([&] { vp::report::write_json(dir / "metrics.json", m); });
  std::printf("search: %.1f s; wrote %s/{genotype.json, alpha.csv, alpha.png, alpha_trajectory.png, search.safetensors, metrics.json}\n",
              r.seconds, dir.string().c_str());
  return {std::move(found), r.alpha_history.back(), std::move(m)};
}

/// DARTS's best-of-runs scoring, for several runs' genotypes and for the front's: each trained --select-epochs
/// from fresh parameters at w lr `lr` on search-train and scored on search-val (or by --select-folds
/// cross-validation over all the training images).
vp::genotype_scores score_runs(const search_settings& s, const std::vector<vp::genotype>& gs, double lr,
                               const vp::vit<float>& vit, const vp::data::labelled_images<float>& train) {
  vp::w_optimizer_options wo = s.o.bilevel.w;
  wo.lr = lr;
  std::printf("search: %zu genotypes, each trained %ld epochs on search-train and scored %s\n", gs.size(), s.select_epochs,
              s.select_folds > 1 ? cat("by ", s.select_folds, "-fold cross-validation").c_str() : "on search-val");
  return vp::score_genotypes<float, vp::default_ops>(
      vit, gs, train,
      {.epochs = s.select_epochs, .batch = s.o.batch, .val_fraction = s.o.val_fraction, .w = wo, .prompts = s.prompts,
       .seed = s.seed, .folds = static_cast<int>(s.select_folds), .progress = s.o.progress, .parallel = s.o.parallel,
       .execution = s.o.bilevel.execution});
}

/// Copies `from` to `to` through io::atomic_write, so `to` is never half-written.
void copy_atomically(const fs::path& from, const fs::path& to) {
  std::ifstream in(from, std::ios::binary);
  if (!in) throw vp::io_error("cannot read '" + from.string() + "' to copy it to '" + to.string() + "'");
  vp::io::atomic_write(to, [&](std::ostream& out) { out << in.rdbuf(); });
}

}  // namespace

std::vector<double> prepare_search(search_settings& s, common_settings& common) {
  common.validate("search");
  const std::vector<double> grid = s.validate();
  const fs::path dir = s.out;
  {
    const fs::path last = s.runs == 1 ? dir : dir / cat("run-", s.runs - 1);  // the longest names it writes
    check_outputs("search", "--out", {last / "alpha_trajectory.png", last / "search.safetensors", dir / "metrics.json"});
  }
  if (s.resume) {
    // a folder holds one search (DIR/search.safetensors) or several (DIR/run-K/...): resuming the other
    // kind would start afresh beside a checkpoint that is never used
    const bool one = fs::exists(dir / "search.safetensors"), several = fs::exists(dir / "run-0" / "search.safetensors");
    if (s.runs > 1 && one && !several)
      throw vp::config_error(cat("--resume --runs ", s.runs, ": '", dir.string(), "' holds the checkpoint of one search (",
                                 (dir / "search.safetensors").string(), "), not of several (run-K/search.safetensors); "
                                 "resume it with --runs 1, or give another --out"));
    if (s.runs == 1 && several && !one)
      throw vp::config_error(cat("--resume --runs 1: '", dir.string(), "' holds the checkpoints of several searches (",
                                 (dir / "run-0" / "search.safetensors").string(),
                                 ", ...), not of one; resume it with the --runs it ran with, or give another --out"));
  }
  // a resumed search keeps the thread count it ran with (the default follows the free cores)
  common.apply(s.resume ? vp::search_state::threads_of(s.runs == 1 ? dir / "search.safetensors"
                                                                    : dir / "run-0" / "search.safetensors")
                        : std::nullopt);
  s.o.progress = !common.quiet;
  s.o.parallel = parallel();
  s.o.bilevel.execution = execution();
  if (s.o.parallel.active())
    std::printf("search: every batch shared over %d processes (MPI)\n", s.o.parallel.size());
  return grid;
}

namespace {

/// s.runs searches into s.out (one, or the best of several).
search_outcome run_searches(search_settings& s, const std::vector<double>& grid, const vp::vit<float>& vit,
                            const vp::data::labelled_images<float>& train, const fs::path& bb, const std::string& classes) {
  const fs::path dir = s.out;
  on_root([&] { ensure_dir(dir); });
  if (s.runs == 1) return search_once(s, grid, vit, train, dir, bb, classes);

  // DARTS's protocol: several searches, each run's genotype trained briefly from fresh parameters on
  // search-train (the split of SEED) and scored on search-val; the best run's files become OUT's.
  const auto start = std::chrono::steady_clock::now();
  std::vector<nlohmann::json> runs;
  std::vector<vp::genotype> gs;
  std::vector<vp::matrix<double>> alphas;
  std::vector<std::string> names;  // run-0, run-1, ...: each run's folder in OUT
  double search_seconds = 0;
  for (long k = 0; k < s.runs; ++k) {
    search_settings one = s;
    one.seed = s.seed + static_cast<std::uint64_t>(k);
    names.push_back(cat("run-", k));
    const fs::path rd = dir / names.back();
    std::printf("search: run %ld of %ld (seed %llu) in %s\n", k + 1, s.runs, static_cast<unsigned long long>(one.seed),
                rd.string().c_str());
    search_outcome run = search_once(one, grid, vit, train, rd, bb, classes);
    gs.push_back(std::move(run.found));
    alphas.push_back(std::move(run.alpha));
    runs.push_back(std::move(run.metrics));
    search_seconds += runs.back()["search_seconds"].get<double>();
  }
  const double select_lr = runs.front()["w_lr"].get<double>();  // the first run's (a --w-lr-grid chooses it per run)
  const vp::genotype_scores sc = score_runs(s, gs, select_lr, vit, train);
  nlohmann::json candidates = scored_candidates(names, gs, sc);
  for (std::size_t i = 0; i < gs.size(); ++i) candidates[i]["seed"] = s.seed + i;
  const fs::path best = dir / names[sc.best];
  nlohmann::json m = runs[sc.best];
  nlohmann::json selection = {{"rule", "best_of_runs"},     {"runs", s.runs},         {"run_rule", s.select},
                              {"best_run", names[sc.best]}, {"select_epochs", s.select_epochs}, {"select_folds", s.select_folds}, {"select_lr", select_lr},
                              {"candidates", candidates},   {"best_run_selection", m["selection"]}};
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  m.update({{"selection", selection}, {"search_seconds", search_seconds}, {"seconds", seconds},
            {"peak_rss_mb", vp::report::peak_rss_mb()}});
  on_root([&] {
    for (const char* file : {"alpha.csv", "alpha.png", "alpha_trajectory.png"}) copy_atomically(best / file, dir / file);
    gs[sc.best].save(dir / "genotype.json");
    vp::report::write_json(dir / "metrics.json", m);
  });
  std::printf("search: selection best of %ld runs (%s within each): run-%zu, search-val accuracy %.4f\n", s.runs,
              s.select.c_str(), sc.best, sc.val[sc.best].accuracy);
  print_genotype(gs[sc.best]);
  std::printf("search: %.1f s; wrote %s/{genotype.json, alpha.csv, alpha.png, alpha_trajectory.png, metrics.json} (the best run's)\n",
              seconds, s.out.c_str());
  return {gs[sc.best], alphas[sc.best], m};
}

/// --pareto K: a search within each of K budgets of s.kind() from the cheapest genotype to the
/// costliest (geometric steps), each genotype trained --select-epochs on search-train and scored on
/// search-val, and the front written as DIR/front.csv and DIR/front.png; the best-scoring genotype
/// is OUT's genotype.json.
search_outcome run_pareto(search_settings& s, const std::vector<double>& grid, const vp::vit<float>& vit,
                          const vp::data::labelled_images<float>& train, const fs::path& bb, const std::string& classes) {
  const auto start = std::chrono::steady_clock::now();
  const fs::path dir = s.out;
  on_root([&] { ensure_dir(dir); });
  const vp::cost_objective whole = vp::make_cost_objective(*s.costs, s.kind());
  const double lo = whole.cheapest(), hi = whole.costliest();
  std::vector<double> budgets;
  for (long i = 0; i < s.pareto; ++i)
    budgets.push_back(i + 1 == s.pareto ? hi : lo * std::pow(hi / lo, static_cast<double>(i) / static_cast<double>(s.pareto - 1)));
  std::printf("search: the front over %ld budgets of %s from %g to %g\n", s.pareto, whole.unit.c_str(), lo, hi);
  std::vector<vp::genotype> gs;
  std::vector<nlohmann::json> runs;
  std::vector<std::string> names;
  double search_seconds = 0;
  for (std::size_t i = 0; i < budgets.size(); ++i) {
    search_settings one = s;
    one.pareto = 0;
    (s.kind() == vp::cost_kind::params ? one.param_budget : one.latency_budget) = budgets[i];
    names.push_back(cat("budget-", i));
    one.out = (dir / names.back()).string();
    std::printf("search: budget %zu of %zu: %g %s\n", i + 1, budgets.size(), budgets[i], whole.unit.c_str());
    search_outcome r = run_searches(one, grid, vit, train, bb, classes);
    gs.push_back(std::move(r.found));
    search_seconds += r.metrics["search_seconds"].get<double>();
    runs.push_back(std::move(r.metrics));
  }
  const double select_lr = runs.front()["w_lr"].get<double>();
  const vp::genotype_scores sc = score_runs(s, gs, select_lr, vit, train);
  std::vector<vp::report::front_point> points;
  const vp::cost_objective by_params = vp::make_cost_objective(*s.costs, vp::cost_kind::params),
                           by_latency = vp::make_cost_objective(*s.costs, vp::cost_kind::latency);
  for (std::size_t i = 0; i < gs.size(); ++i) {
    const auto ops = vp::op_positions<vp::default_ops>(gs[i]);
    points.push_back({.label = cat(i), .budget = budgets[i], .accuracy = sc.val[i].accuracy, .params = by_params.of(ops),
                      .latency_ms = by_latency.of(ops), .note = gs[i].str()});
  }
  vp::report::mark_front(points);
  nlohmann::json front = nlohmann::json::array();
  std::printf("\n%-8s %-12s %-10s %-12s %-9s %s\n", "budget", "search-val", "trainable", "latency ms", "on front", "genotype");
  for (std::size_t i = 0; i < gs.size(); ++i) {
    front.push_back({{"run", names[i]}, {"budget", budgets[i]}, {"genotype", gs[i].names()},
                     {"val_accuracy", points[i].accuracy}, {"val_loss", sc.val[i].loss},
                     {"trainable_params", points[i].params}, {"latency_ms_estimate", points[i].latency_ms},
                     {"on_front", points[i].on_front}});
    std::printf("%-8zu %-12.4f %-10.0f %-12.3f %-9s %s\n", i, points[i].accuracy, points[i].params, points[i].latency_ms,
                points[i].on_front ? "yes" : "no", gs[i].str().c_str());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json m = runs[sc.best];
  m.update({{"selection", {{"rule", "pareto"}, {"budgets", budgets}, {"cost", vp::to_string(s.kind())},
                           {"best_run", names[sc.best]}, {"select_epochs", s.select_epochs}, {"select_folds", s.select_folds}, {"select_lr", select_lr}}},
            {"front", front}, {"search_seconds", search_seconds}, {"seconds", seconds},
            {"peak_rss_mb", vp::report::peak_rss_mb()}});
  on_root([&] {
    vp::report::write_front_csv(dir / "front.csv", points);
    vp::report::write_front_png(dir / "front.png", points,
                                cat("search-val accuracy against cost: ", s.pareto, " budgets of ", whole.unit));
    for (const char* file : {"alpha.csv", "alpha.png", "alpha_trajectory.png"})
      copy_atomically(dir / names[sc.best] / file, dir / file);
    gs[sc.best].save(dir / "genotype.json");
    vp::report::write_json(dir / "metrics.json", m);
  });
  std::printf("search: %.1f s; wrote %s/{front.csv, front.png, genotype.json (the best on search-val), metrics.json} and budget-I/\n",
              seconds, dir.string().c_str());
  return {gs[sc.best], {}, m};
}

}  // namespace

search_outcome run_search(search_settings& s, const std::vector<double>& grid, const vp::vit<float>& vit,
                          const vp::data::labelled_images<float>& train, const fs::path& bb, const std::string& classes) {
  s.fit_to(static_cast<long>(train.size()));  // below --reference-images: more epochs, cross-validated selection
  if (!s.costs) {
    // every candidate's cost, once for every run: trainable values exactly, latency as timed here and now
    model_t probe(vit, {.prompts = s.prompts, .classes = train.classes(), .seed = s.seed});
    vp::op_costs c = vp::param_costs(probe);
    on_root([&] {
      vp::op_latency(probe, c, {.runs = static_cast<int>(s.latency_runs), .warmup = 3, .execution = s.o.bilevel.execution});
    });
    if (parallel().active()) {  // process 0's timing on every process: the others add zeros
      if (!parallel().root()) {
        c.latency_ms = vp::matrix<double>::Zero(c.params.rows(), c.params.cols());
        c.fixed_latency_ms = 0;
      }
      parallel().sum(c.latency_ms);
      c.fixed_latency_ms = parallel().sum(c.fixed_latency_ms);
      c.latency_runs = static_cast<int>(s.latency_runs);
    }
    s.costs = std::move(c);
  }
  if (s.pareto > 0) return run_pareto(s, grid, vit, train, bb, classes);
  return run_searches(s, grid, vit, train, bb, classes);
}

int cmd_search(int argc, char** argv) {
  flags f("search",
          "Runs the DARTS search of one fusion operator per layer on a frozen backbone, then writes\n"
          "genotype.json, alpha.csv, alpha.png (the final weights), alpha_trajectory.png (over the epochs),\n"
          "search.safetensors (the checkpoint) and metrics.json to --out. By default it runs --runs 3 searches\n"
          "(seeds SEED, SEED+1, SEED+2, each in OUT/run-K), trains each one's genotype briefly on search-train and\n"
          "keeps the best on search-val (DARTS's protocol); OUT's files are the best run's. --runs 1 is one search.");
  common_settings common;
  data_settings data("5-9", 1000, 0);
  backbone_settings backbone;
  search_settings s;
  backbone.add_to(f);
  s.add_to(f);
  data.add_to(f, true, false);
  common.add_to(f);
  f.note("Examples: vpdarts search --out run --epochs 10   (built-in backbone and data; three searches)\n"
         "          vpdarts search --out run --runs 1   (one search, a third of the time)");
  if (!parse_flags(f, argc, argv)) return 0;
  s.note_given(f);
  backbone.validate("search");
  data.validate("search", true, false);
  data.validate_image("search", backbone.image);
  const std::vector<double> grid = prepare_search(s, common);
  fs::path bb;
  const vp::vit<float> vit = backbone.load(common.quiet, &bb);
  const auto train = data.load(vit.config(), false);
  run_search(s, grid, vit, train, bb, data.classes);
  return 0;
}

}  // namespace vpdarts_cli
