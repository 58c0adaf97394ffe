// The vpdarts tool's shared settings (see settings.hpp).
#include "settings.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>
#include <sstream>

namespace vpdarts_cli {

std::vector<int> parse_classes(const std::string& text) {
  std::vector<int> out;
  std::set<int> seen;
  std::stringstream in(text);
  std::string part;
  constexpr int max_class = 9999;
  auto number = [&](const std::string& s) {
    const int v = vp::text::parse_number<int>(s).value_or(-1);
    if (v < 0 || v > max_class)
      throw usage_error(cat("--classes: '", s, "' in '", text, "' is not a class number (0..", max_class, ")"));
    return v;
  };
  auto push = [&](int c) {
    if (!seen.insert(c).second) throw usage_error(cat("--classes: class ", c, " appears twice in '", text, "'"));
    out.push_back(c);
  };
  while (std::getline(in, part, ',')) {
    if (auto dash = part.find('-'); dash != std::string::npos && dash > 0) {
      const int a = number(part.substr(0, dash)), b = number(part.substr(dash + 1));
      if (b < a) throw usage_error("--classes: the range '" + part + "' runs backwards");
      for (int c = a; c <= b; ++c) push(c);
    } else {
      push(number(part));
    }
  }
  if (out.empty()) throw usage_error("--classes: no class in '" + text + "'");
  return out;
}

// ---------------------------------------------------------------- data

void data_settings::add_to(flags& f, bool with_train, bool with_test) {
  f.add("data", data,
        "synthetic (built in), folder (PATH/<class>/<image>), list (a file of 'path label' lines),\n" + std::string(30, ' ') +
            "idx (a folder of MNIST-style IDX files, plain or .gz), or fashion (Debian's Fashion-MNIST)",
        "KIND");
  if (with_train) f.add("train", train_path, "training data: the folder, list file or IDX folder", "PATH");
  if (with_test) f.add("test", test_path, "test data: the folder, list file or IDX folder", "PATH");
  f.add("classes", classes, "which classes of synthetic or IDX data, as '5-9' or '0,2,4'", "LIST");
  if (with_train)
    f.add("train-images", train_images,
          cat("training images (synthetic: -1 means ", default_train, "; IDX: -1 means all, else balanced and seeded)"));
  if (with_test)
    f.add("test-images", test_images, cat("test images (synthetic: -1 means ", default_test, "; IDX: -1 means all)"));
  f.add("per-class", per_class, "IDX data: at most this many training images per class (0: no limit)");
  f.add_switch("skip-bad", skip_bad, "folder and list data: skip unreadable image files (and list them) instead of failing");
  f.add("data-seed", data_seed, "seed of the synthetic images and of IDX sampling");
  f.add("noise", noise, "pixel noise of the synthetic images (0..1 scale)");
}

void data_settings::validate(const std::string& command, bool need_train, bool need_test) const {
  require(data == "synthetic" || data == "folder" || data == "list" || data == "idx" || data == "fashion", command,
          "--data '" + data + "' is not a data kind (synthetic, folder, list, idx, fashion)");
  const bool files = data == "folder" || data == "list" || data == "idx";
  require(!(files && need_train && train_path.empty()), command, "--data " + data + " needs --train PATH");
  require(!(files && need_test && test_path.empty()), command, "--data " + data + " needs --test PATH");
  if (data == "synthetic" || data == "idx" || data == "fashion") {
    const int most = data == "synthetic" ? 9 : 255;
    for (int k : parse_classes(classes))
      require(k <= most, command,
              data == "synthetic" ? cat("--classes: class ", k, " is not one of the synthetic task's classes 0-9")
                                  : cat("--classes: class ", k, " cannot be an IDX label (labels are bytes, 0-255)"));
  }
  for (const auto& [n, flag] : {std::pair{train_images, "--train-images"}, std::pair{test_images, "--test-images"}}) {
    require(n == -1 || (n >= 1 && n <= 10'000'000), command, cat(flag, " must be -1 or in 1..10000000, got ", n));
    require(n == -1 || !(data == "folder" || data == "list"), command,
            cat(flag, " does not apply to --data ", data, ": every image of the folder or list is used"));
  }
  require(per_class >= 0, command, cat("--per-class must be >= 0, got ", per_class));
  require(noise >= 0 && noise <= 1, command, cat("--noise must be in [0, 1], got ", noise));
}

void data_settings::validate_image(const std::string& command, long image) const {
  if (data != "synthetic") return;
  require(image == 0 || image >= 8, command, cat("--image ", image, ": the synthetic images need at least 8 pixels a side"));
}

vp::data::normalization data_settings::norm(const vp::vit_config& c) const {
  if (data == "synthetic") return vp::data::normalization::synthetic();
  if (data == "fashion") return vp::data::fashion_mnist_normalization();
  if (data == "idx" || c.channels == 1) return {{0.5}, {0.5}};
  return vp::data::normalization::imagenet();
}

vp::data::labelled_images<float> data_settings::load(const vp::vit_config& c, bool test,
                                                     const vp::data::normalization* norm_override) const {
  const vp::data::normalization nm = norm_override ? *norm_override : norm(c);
  const long requested = test ? test_images : train_images;
  const char* count_flag = test ? "--test-images" : "--train-images";
  if (data == "synthetic") {
    const long count = requested > 0 ? requested : (test ? default_test : default_train);
    try {
      return vp::data::make_synthetic<float>({.image = c.image,
                                              .channels = c.channels,
                                              .count = count,
                                              .seed = test ? data_seed + 1000003 : data_seed,
                                              .classes = parse_classes(classes),
                                              .noise = noise});
    } catch (const vp::config_error& e) {  // too many images for the memory, or a backbone's image size too small
      throw vp::config_error(cat(e.message(), " (", count_flag, " ", count, ", the backbone's image ", c.image, "x",
                                 c.image, "x", c.channels, ")"));
    }
  }
  const std::string path = test ? test_path : train_path;
  if (data == "folder" || data == "list") {
    vp::data::folder_options fo{.image = c.image, .channels = c.channels, .norm = nm, .skip_bad = skip_bad};
    auto set = data == "folder" ? vp::data::image_folder<float>(path, fo) : vp::data::image_list<float>(path, fo);
    if (!set.skipped.empty()) {
      std::fprintf(stderr, "data: skipped %zu unreadable file(s) in %s:\n", set.skipped.size(), path.c_str());
      for (const auto& why : set.skipped) std::fprintf(stderr, "  %s\n", why.c_str());
    }
    std::printf("data: %ld images of %ld classes from %s\n", static_cast<long>(set.data.size()),
                static_cast<long>(set.data.classes()), path.c_str());
    return std::move(set.data);
  }
  fs::path dir = path;
  if (dir.empty()) dir = "/usr/share/datasets/fashion-mnist";  // --data fashion (validate() asked idx for a path)
  const std::string stem = test ? "t10k" : "train";
  auto file = [&](const std::string& what) {
    const fs::path plain = dir / (stem + "-" + what), gz = dir / (stem + "-" + what + ".gz");
    if (fs::exists(plain)) return plain;
    if (fs::exists(gz)) return gz;
    throw vp::io_error(cat("no ", plain.filename().string(), "[.gz] in '", dir.string(), "'",
                           data == "fashion" ? " (install Debian's dataset-fashion-mnist)" : ""));
  };
  vp::data::idx_options io{.classes = parse_classes(classes), .image = c.image, .channels = c.channels, .norm = nm};
  if (data == "fashion") io.label_names = vp::data::fashion_mnist_class_names();
  const long n_classes = static_cast<long>(io.classes.size());
  if (!test && per_class > 0) io.per_class = per_class;
  if (requested > 0) {
    if (requested < n_classes) throw usage_error(cat(count_flag, " ", requested, " is fewer than the ", n_classes, " classes"));
    if (io.per_class == 0 || io.per_class > requested / n_classes) io.per_class = requested / n_classes;
  }
  io.random_sample = io.per_class > 0;
  io.sample_seed = data_seed + (test ? 1000003 : 0);
  auto set = vp::data::load_idx<float>(file("images-idx3-ubyte"), file("labels-idx1-ubyte"), io);
  std::printf("data: %ld %s images of %ld classes from %s\n", static_cast<long>(set.size()), stem.c_str(),
              static_cast<long>(set.classes()), dir.string().c_str());
  return set;
}

// ---------------------------------------------------------------- w's optimiser

void w_settings::add_to(flags& f, const char* lr_name) {
  f.add(lr_name, w.lr, "SGD base learning rate of w (prompts, operator parameters, head)");
  f.add("momentum", w.momentum, "SGD momentum");
  f.add("weight-decay", w.weight_decay, "weight decay on w but the head's bias");
  f.add("grad-clip", w.grad_clip, "gradient-norm clip of w (0: none)");
  f.add("lr-warmup-epochs", w.warmup_epochs, "epochs of linear lr warm-up before the cosine decay");
  f.add("op-lr-mult", op_lr_mult, "lr multiplier per operator: '1,1,0.2,0.2' in operator order or 'affine=0.2'", "LIST");
  f.add("head-lr-mult", w.head_lr_mult, "lr multiplier of the head");
}

vp::w_optimizer_options w_settings::options(const std::string& command) const {
  vp::w_optimizer_options o = w;
  // "1,1,0.2,0.2" (op-list order) or "affine=0.2,cross_attention=0.2"
  if (!op_lr_mult.empty()) {
    const auto& names = vp::default_ops::names;
    o.op_lr_mult.assign(names.size(), 1.0);
    std::stringstream in(op_lr_mult);
    std::string part;
    std::size_t k = 0;
    bool named = false, positional = false;
    while (std::getline(in, part, ',')) {
      std::string value = part;
      std::size_t slot = k++;
      if (auto eq = part.find('='); eq != std::string::npos) {
        named = true;
        try {
          slot = vp::default_ops::index_of(part.substr(0, eq));
        } catch (const vp::config_error& e) {
          throw usage_error(std::string("--op-lr-mult: ") + e.what());
        }
        value = part.substr(eq + 1);
      } else {
        positional = true;
      }
      if (slot >= names.size())
        throw usage_error(cat("--op-lr-mult: more than ", names.size(), " values (operators: ", join(names), ")"));
      const double v = vp::text::parse_number<double>(value).value_or(-1);
      if (!(v >= 0)) throw usage_error("--op-lr-mult: '" + part + "' is not a multiplier >= 0");
      o.op_lr_mult[slot] = v;
    }
    if (named && positional) throw usage_error("--op-lr-mult: mix of named and positional values in '" + op_lr_mult + "'");
    if (positional && k != names.size())
      throw usage_error(cat("--op-lr-mult: ", k, " values for ", names.size(), " operators (", join(names),
                            "); or name them: affine=0.2"));
  }
  try {
    o.validate(("vpdarts " + command).c_str());
  } catch (const vp::config_error& e) {
    throw usage_error(e.message() + " (see the --lr, --momentum, --weight-decay, --grad-clip flags)");
  }
  return o;
}

// ---------------------------------------------------------------- backbones

void backbone_settings::add_to(flags& f) {
  f.add("backbone", file, "backbone checkpoint (timm-named safetensors); empty: the built-in one", "FILE");
  f.add("arch", arch, "timm model name of the backbone, for what its weights cannot show (e.g. vit_small_patch14_dinov2)", "NAME");
  f.add("image", image, "image side to run the backbone at (0: its own; pos_embed is resampled as timm does)");
  f.add("heads", heads, "attention heads of the backbone when its file does not say (0: metadata, --arch, else D/64)");
  f.add("norm-eps", norm_eps, "LayerNorm eps when the file does not say (0: metadata, --arch, else 1e-6)");
  f.add("act", act, "MLP activation when the file does not say: gelu or quick_gelu (default: metadata, --arch, gelu)", "NAME");
  f.add("pool", pool, "feature pooling when the file does not say: token or avg (default: metadata, --arch, token)", "NAME");
  f.add_switch("ignore-unknown-tensors", ignore_unknown, "load a backbone file that holds tensors a ViT does not have");
  f.add("cache-dir", cache, "where the built-in backbone is cached (default $VPDARTS_CACHE, else ~/.cache/vpdarts)", "DIR");
}

void backbone_settings::validate(const std::string& command) {
  require(heads >= 0 && heads <= 4096, command, cat("--heads must be in 0..4096, got ", heads));
  require(image >= 0 && image <= 8192, command, cat("--image must be in 0..8192, got ", image));
  require(norm_eps >= 0 && norm_eps < 1, command, cat("--norm-eps must be in [0, 1), got ", norm_eps));
  options = {.image = image, .heads = heads, .arch = arch, .allow_unexpected = ignore_unknown};
  try {
    if (!arch.empty()) vp::find_vit_arch(arch);
    if (!act.empty()) options.act = vp::parse_activation(act);
    if (!pool.empty()) options.pool = vp::parse_pooling(pool);
  } catch (const vp::config_error& e) {
    throw usage_error("vpdarts " + command + ": " + e.message());
  }
  if (norm_eps > 0) options.norm_eps = norm_eps;
  const bool variant_flags = !arch.empty() || image > 0 || norm_eps > 0 || !act.empty() || !pool.empty() || ignore_unknown;
  require(!(file.empty() && variant_flags), command,
          "--arch, --image, --norm-eps, --act, --pool and --ignore-unknown-tensors describe a --backbone FILE; "
          "the built-in backbone needs none");
}

namespace {

fs::path cache_dir(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* v = std::getenv("VPDARTS_CACHE"); v && *v) return v;
  if (const char* v = std::getenv("XDG_CACHE_HOME"); v && *v) return fs::path(v) / "vpdarts";
  if (const char* v = std::getenv("HOME"); v && *v) return fs::path(v) / ".cache" / "vpdarts";
  return fs::temp_directory_path() / "vpdarts-cache";
}

}  // namespace

namespace {
vp::data_parallel& parallel_slot() {
  static vp::data_parallel p;
  return p;
}
int& processes_here_slot() {
  static int n = 1;
  return n;
}
}  // namespace

const vp::data_parallel& parallel() { return parallel_slot(); }

namespace {
vp::execution_config& execution_slot() {
  static vp::execution_config e;
  return e;
}
}  // namespace

const vp::execution_config& execution() { return execution_slot(); }
void common_settings::set_execution(const vp::execution_config& e) { execution_slot() = e; }

bool parse_flags(flags& f, int argc, char** argv) {
  if (!f.parse(argc, argv, 2)) return false;
  if (parallel().active()) {
    nlohmann::json given(f.given());
    given.erase("threads");  // each process's own cores
    given.erase("quiet");    // only process 0 prints
    parallel().require_same(given, cat("vpdarts ", argc > 1 ? argv[1] : "", " (flags)"));
  }
  return true;
}

void check_outputs(const std::string& command, const std::string& flag, std::initializer_list<fs::path> files) {
  for (const fs::path& file : files) try {
      vp::io::check_writable(file, flag);
    } catch (const vp::io_error& e) {
      throw usage_error("vpdarts " + command + ": " + e.message());
    }
}
void set_parallel(vp::data_parallel p, int here) {
  parallel_slot() = std::move(p);
  processes_here_slot() = std::max(1, here);
}
int processes_here() { return processes_here_slot(); }

fs::path backbone_settings::path(bool quiet) const {
  if (!file.empty()) {
    if (!fs::exists(file)) throw vp::io_error("the backbone checkpoint '" + file + "' does not exist");
    if (fs::is_directory(file)) throw vp::io_error("--backbone '" + file + "' is a folder, not a checkpoint file");
    return file;
  }
  const builtin_recipe r;
  const fs::path dir = cache_dir(cache);
  const fs::path cached = dir / r.file_name();
  if (fs::exists(cached)) {
    std::printf("backbone: built-in, cached at %s\n", cached.string().c_str());
    return cached;
  }
  on_root([&] {
    ensure_dir(dir);
    if (::access(dir.c_str(), W_OK) != 0)  // before a minute of pretraining whose result could not be kept
      throw vp::io_error("the backbone cache folder '" + dir.string() + "' is not writable (set --cache-dir or $VPDARTS_CACHE)");
  });
  std::printf("backbone: pretraining the built-in ViT (%s) on synthetic classes 0-4 (once; cached at %s)\n",
              r.config.describe().c_str(), cached.string().c_str());
  vp::vit<float> m(r.config, 0, vp::vit_init::xavier);
  const std::vector<int> classes{0, 1, 2, 3, 4};
  auto train = vp::data::make_synthetic<float>({.image = r.config.image, .count = r.images, .seed = 0, .classes = classes});
  auto test = vp::data::make_synthetic<float>({.image = r.config.image, .count = 500, .seed = 7, .classes = classes});
  auto res = vp::pretrain(m, train, test,
                          {.epochs = r.epochs, .batch = r.batch, .lr = r.lr, .progress = !quiet, .parallel = parallel()});
  std::printf("backbone: pretraining test accuracy %.3f (%.0f s)\n", res.test_accuracy, res.seconds);
  on_root([&] { vp::save_vit(cached, m, {{vp::io::keys::recipe, r.file_name()}}); });
  return cached;
}

vp::vit<float> backbone_settings::load(bool quiet, fs::path* used) const {
  const fs::path p = path(quiet);
  if (used) *used = p;
  vp::vit<float> m = vp::load_vit<float>(p, options);
  if (!file.empty()) std::printf("backbone: %s\n", m.config().describe().c_str());
  return m;
}

// ---------------------------------------------------------------- helpers

void ensure_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw vp::io_error("cannot create the folder '" + dir.string() + "': " + ec.message());
}

std::vector<double> parse_positive_list(const std::string& text, const std::string& command, const std::string& flag,
                                        bool allow_zero) {
  std::vector<double> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const double v = vp::text::parse_number<double>(item).value_or(-1);
    require(allow_zero ? v >= 0 && std::isfinite(v) : v > 0 && std::isfinite(v), command,
            "--" + flag + ": '" + item + "' is not a " + (allow_zero ? "number >= 0" : "learning rate > 0"));
    require(std::find(out.begin(), out.end(), v) == out.end(), command,
            "--" + flag + ": '" + item + "' appears twice in '" + text + "'");
    out.push_back(v);
  }
  return out;
}

nlohmann::json cost_metrics(vp::index trainable, double percent, const vp::vit_config& c,
                            const std::function<vp::var<float>(vp::tape<float>&, const vp::image_batch<float>&)>& fwd) {
  nlohmann::json out = {{"trainable_params", trainable}, {"trainable_percent", percent}, {"processes", parallel().size()}};
  on_root([&] {
    const int threads = omp_get_max_threads();
    if (processes_here() > 1) omp_set_num_threads(omp_get_num_procs());  // the others wait without spinning
    const auto timing = vp::report::time_inference<float>(fwd, c.channels, c.image, 50, 3, execution());
    out.update({{"latency_ms_batch1", timing.latency_ms_batch1},
                {"latency_ms_batch1_p10", timing.latency_ms_batch1_p10},
                {"latency_ms_batch1_p90", timing.latency_ms_batch1_p90},
                {"latency_runs", timing.latency_runs},
                {"multiply_adds_batch1", timing.multiply_adds_batch1},
                {"throughput_batch64", timing.throughput_batch64},
                {"threads", omp_get_max_threads()},
                {"precision", vp::to_string(execution().products)},
                {"fp32_gemm", vp::to_string(execution().fp32_engine())}});
    omp_set_num_threads(threads);
  });
  return out;
}

nlohmann::json scored_candidates(const std::vector<std::string>& runs, const std::vector<vp::genotype>& gs,
                                 const vp::genotype_scores& sc) {
  nlohmann::json out = nlohmann::json::array();
  for (std::size_t i = 0; i < gs.size(); ++i)
    out.push_back({{"run", runs[i]},
                   {"genotype", gs[i].names()},
                   {"val_accuracy", sc.val[i].accuracy},
                   {"val_loss", vp::io::numbers_to_json(std::vector<double>{sc.val[i].loss})[0]},
                   {"train_loss", vp::io::numbers_to_json(std::vector<double>{sc.train_loss[i]})[0]},
                   {"trainable_params", sc.trainable[i]}});
  return out;
}

void print_genotype(const vp::genotype& g) {
  std::printf("genotype (softmax weights, margin between the two strongest):\n");
  for (std::size_t l = 0; l < g.layers.size(); ++l) {
    std::printf("  layer %zu: %-16s", l, g.layers[l].op.c_str());
    for (std::size_t k = 0; k < g.layers[l].weights.size(); ++k)
      std::printf(" %s %.3f", g.ops[k].c_str(), g.layers[l].weights[k]);
    if (!g.layers[l].weights.empty()) std::printf("  margin %.3f", g.layers[l].margin());
    std::printf("\n");
  }
}

}  // namespace vpdarts_cli
