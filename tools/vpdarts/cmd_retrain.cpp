// vpdarts retrain: the derived model of a genotype (or one operator at every
// layer, or a linear probe), trained and tested, written as a model file.
#include "commands.hpp"

#include <chrono>

namespace vpdarts_cli {

namespace {

/// True when some operator of `g` has parameters whose size follows the prompt count.
bool uses_prompts(const vp::genotype& g, const vp::vit_config& c) {
  bool uses = false;
  vp::default_ops::for_each([&](auto type, auto i) {
    using Op = typename decltype(type)::type;
    const std::string_view name = vp::default_ops::names[decltype(i)::value];
    auto values = [&](vp::index p) {
      double n = 0;
      for (const auto& spec : vp::fusion_traits<Op>::params(vp::fusion_context{c, p})) n += static_cast<double>(spec.rows * spec.cols);
      return n;
    };
    for (const auto& l : g.layers)
      if (l.op == name && values(1) != values(2)) uses = true;
  });
  return uses;
}

}  // namespace

std::vector<double> prepare_retrain(retrain_settings& s, common_settings& common) {
  common.validate("retrain");
  s.validate();
  check_outputs("retrain", "--out", {fs::path(s.out) / "model.safetensors", fs::path(s.out) / "metrics.json"});
  common.apply();
  return parse_positive_list(s.lr_grid, "retrain", "lr-grid");
}

nlohmann::json run_retrain(retrain_settings& s, const std::vector<double>& grid, bool quiet, vp::vit<float> vit,
                           const vp::data::labelled_images<float>& train, const vp::data::labelled_images<float>& test,
                           const fs::path& bb, const vp::data::normalization& norm) {
  vp::w_optimizer_options w = s.w.options("retrain");
  const fs::path dir = s.out;
  const vp::genotype g = s.probe ? vp::genotype{} : s.genotype(vit.config().depth);
  // the lr and weight-decay grid (VTAB-1k practice): search-train / search-val as the search splits them,
  // never the test images
  nlohmann::json grid_json;
  const vp::lr_grid_options grid_opts{.grid = grid, .weight_decays = s.weight_decays, .widen = static_cast<int>(s.widen_grid),
                                      .epochs = s.grid_epochs, .batch = s.batch, .val_fraction = s.val_fraction, .w = w,
                                      .seed = s.seed, .progress = !quiet,
                                      .augment = {.crop_padding = s.crop_padding, .flip = s.flip}, .parallel = parallel(),
                                      .execution = execution()};
  auto grid_to_json = [&](const vp::lr_grid_result& g) {
    return nlohmann::json{{"lrs", g.lrs}, {"weight_decays", g.weight_decays}, {"val_accuracy", g.val_accuracy},
                          {"train_loss", vp::io::numbers_to_json(g.train_loss)}, {"best", g.best},
                          {"best_weight_decay", g.best_weight_decay}, {"best_accuracy", g.best_accuracy},
                          {"widened", g.widened}, {"at_edge", g.at_edge}, {"epochs", s.grid_epochs},
                          {"val_fraction", s.val_fraction}};
  };
  auto take = [&](const vp::lr_grid_result& g) {
    w.lr = g.best;
    w.weight_decay = g.best_weight_decay;
    for (const auto& e : g.widened) std::printf("retrain: the grid widened: %s\n", e.c_str());
    for (const auto& e : g.at_edge) std::fprintf(stderr, "warning: retrain: the best sits at the grid's edge: %s (--widen-grid)\n", e.c_str());
    std::printf("retrain: lr %g, weight decay %g (search-val accuracy %.4f)\n", g.best, g.best_weight_decay, g.best_accuracy);
  };
  auto choose_lr = [&](auto&& choose) {
    if (grid.empty()) return;
    std::printf("retrain: choosing the lr%s on search-val (%ld epochs per value)\n", s.weight_decays.empty() ? "" : " and weight decay",
                s.grid_epochs);
    const vp::lr_grid_result g = choose(grid_opts);
    take(g);
    grid_json = grid_to_json(g);
  };

  // below 1000 images the default epochs make few updates (docs/method.md, the revised rule; the search scales
  // its own counts, retraining leaves the choice to the caller and says so)
  const long n = static_cast<long>(train.size());
  if (const long k = epoch_scale_for(n, reference_images_default); k > 1 && !s.given_flags.count("epochs")) {
    on_root([&] {
      std::fprintf(stderr,
                   "warning: retrain: %ld training images: %ld epochs are about %ld updates of batch %ld, 1/%ld of what they "
                   "are at %ld images; --epochs %ld (and --grid-epochs) gives as many (docs/method.md)\n",
                   n, s.epochs, (n * s.epochs + s.batch - 1) / s.batch, s.batch, k, reference_images_default, s.epochs * k);
    });
  }
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
                                    {.epochs = s.epochs, .batch = s.batch, .w = w, .seed = s.seed, .progress = !quiet,
                                     .parallel = parallel(), .execution = execution()});
    accuracy = r.test_accuracy;  // NaN without test images
    save = [&] { vp::save_model(dir / "model.safetensors", vit, train.class_names, norm); };
    seconds = elapsed();
    m = cost_metrics(r.trainable_params, 100.0 * static_cast<double>(r.trainable_params) / static_cast<double>(vit.backbone_size()),
                     vit.config(), [&](vp::tape<float>& t, const vp::image_batch<float>& x) { return vit.logits(t, x); });
    m.update({{"method", "linear_probe"}, {"train_loss", r.train_loss}, {"train_accuracy", r.train_accuracy}});
  } else {
    long prompts = s.prompts;
    nlohmann::json prompts_json;
    if (!s.prompt_counts.empty() && !grid.empty()) {
      // VPT's protocol: the prompt count is part of the grid; each count gets the whole lr and decay grid
      if (!uses_prompts(g, vit.config()))
        throw usage_error("vpdarts retrain: --prompts-grid: the genotype (" + g.str() +
                          ") uses no prompt tokens; only concat and cross_attention do");
      vp::lr_grid_result best_g;
      prompts_json = nlohmann::json::array();
      for (std::size_t i = 0; i < s.prompt_counts.size(); ++i) {
        const long p = s.prompt_counts[i];
        std::printf("retrain: %ld prompts: choosing the lr and weight decay on search-val\n", p);
        model_t trial(vit, g, vp::prompt_options{.prompts = p, .classes = train.classes(), .seed = s.seed});
        const vp::lr_grid_result r = vp::choose_w_lr(trial, train, grid_opts);
        prompts_json.push_back({{"prompts", p}, {"trainable_params", trial.trainable_params()}, {"grid", grid_to_json(r)}});
        if (i == 0 || r.best_accuracy > best_g.best_accuracy + 1e-12) {  // on a tie, the fewer prompts (the list comes sorted)
          best_g = r;
          prompts = p;
        }
      }
      take(best_g);
      grid_json = grid_to_json(best_g);
      std::printf("retrain: %ld prompts\n", prompts);
    }
    model_t& model = prompted.emplace(std::move(vit), g,
                                      vp::prompt_options{.prompts = prompts, .classes = train.classes(), .seed = s.seed});
    std::printf("retrain: %s with %s\n", model.config().describe().c_str(), g.str().c_str());
    if (prompts_json.is_null()) choose_lr([&](const vp::lr_grid_options& o) { return vp::choose_w_lr(model, train, o); });
    const double loss = vp::train(model, train,
                                  {.epochs = s.epochs, .batch = s.batch, .w = w, .seed = s.seed, .progress = !quiet,
                                   .augment = {.crop_padding = s.crop_padding, .flip = s.flip}, .parallel = parallel(),
                                   .execution = execution()});
    accuracy = test.size() > 0 ? vp::evaluate(model, test, 64, parallel(), execution()) : std::nan("");
    save = [&] {
      vp::save_model(dir / "model.safetensors", model, train.class_names, norm);
    };
    seconds = elapsed();
    m = cost_metrics(model.trainable_params(), model.trainable_percent(), model.config(),
                     [&](vp::tape<float>& t, const vp::image_batch<float>& x) {
                       return model.logits(t, x, vp::grad_target::none);
                     });
    m.update({{"method", s.op.empty() ? "genotype" : s.op}, {"genotype", g.names()}, {"train_loss", loss}, {"prompts", prompts}});
    if (!prompts_json.is_null()) m["prompts_grid"] = prompts_json;
  }
  m.update({{"command", "retrain"},
            {"test_accuracy", test.size() > 0 ? nlohmann::json(accuracy) : nlohmann::json()},
            {"test_images", test.size()},
            {"lr", w.lr},
            {"weight_decay", w.weight_decay},
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
    std::printf("retrain: test accuracy %s, %ld trainable parameters (%.3f%% of the backbone), latency %.2f ms at batch 1, "
              "%.1f images/s at batch 64, %.1f s; wrote %s/{model.safetensors, metrics.json}\n",
              test.size() > 0 ? cat(accuracy).c_str() : "- (no test images)", m["trainable_params"].get<long>(), m["trainable_percent"].get<double>(),
              m["latency_ms_batch1"].get<double>(), m["throughput_batch64"].get<double>(), seconds, s.out.c_str());
  return m;
}

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
  s.note_given(f);
  backbone.validate("retrain");
  data.validate("retrain", true, true);
  data.validate_image("retrain", backbone.image);
  const std::vector<double> grid = prepare_retrain(s, common);
  fs::path bb;
  vp::vit<float> vit = backbone.load(common.quiet, &bb);
  if (!s.probe) s.given = s.genotype(vit.config().depth);  // a missing genotype file stops before the data is read
  auto train = data.load(vit.config(), false), test = data.load(vit.config(), true);
  test.relabel_to(train.class_names, "retrain (test data)");  // by class name, never by folder order
  const vp::data::normalization norm = data.norm(vit.config());
  run_retrain(s, grid, common.quiet, std::move(vit), train, test, bb, norm);
  return 0;
}

}  // namespace vpdarts_cli
