// vpdarts: the command-line tool. Pretrain a backbone, search the fusion
// operator of every layer, retrain the derived model (or a linear probe),
// evaluate it and classify image files, with no C++ to write.
//
//   vpdarts pretrain | search | retrain | eval | predict  [flags]   (each has --help)
//
// Exit codes: 0 done, 1 the work failed (the message says why), 2 bad flags.
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <vpdarts/vpdarts.hpp>

#include "flags.hpp"

namespace vp = vpdarts;
namespace fs = std::filesystem;
using vpdarts_cli::flags;
using vpdarts_cli::usage_error;

namespace {

using model_t = vp::prompted_vit<float, vp::default_ops>;

// ---------------------------------------------------------------- settings

/// Flags every command shares.
struct common_settings {
  long threads = 0;
  bool quiet = false;

  void add_to(flags& f) {
    f.add("threads", threads, "OpenMP threads (0: all cores)");
    f.add_switch("quiet", quiet, "no progress bars");
  }
  void apply() const {
    if (threads < 0) throw usage_error("--threads must be >= 0");
    if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  }
};

/// Parses "5-9", "0,2,4" or "1-3,7" into class indices.
std::vector<int> parse_classes(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  std::string part;
  auto number = [&](const std::string& s) {
    const int v = vp::detail::parse_number<int>(s).value_or(-1);
    if (v < 0) throw usage_error("--classes: '" + s + "' in '" + text + "' is not a class number");
    return v;
  };
  while (std::getline(in, part, ',')) {
    if (auto dash = part.find('-'); dash != std::string::npos && dash > 0) {
      const int a = number(part.substr(0, dash)), b = number(part.substr(dash + 1));
      if (b < a) throw usage_error("--classes: the range '" + part + "' runs backwards");
      for (int c = a; c <= b; ++c) out.push_back(c);
    } else {
      out.push_back(number(part));
    }
  }
  if (out.empty()) throw usage_error("--classes: no class in '" + text + "'");
  return out;
}

/// Where the data comes from.
struct data_settings {
  std::string data = "synthetic";
  std::string train_path, test_path;
  std::string classes;
  long default_train, default_test;
  long train_images = -1;
  long test_images = -1;
  long per_class = 0;
  bool skip_bad = false;
  std::uint64_t data_seed = 1;
  double noise = 0.08;

  data_settings(std::string default_classes, long train, long test)
      : classes(std::move(default_classes)), default_train(train), default_test(test) {}

  void add_to(flags& f, bool with_train = true, bool with_test = true) {
    f.add("data", data,
          "synthetic (built in), folder (PATH/<class>/<image>), list (a file of 'path label' lines),\n" + std::string(30, ' ') +
              "idx (a folder of MNIST-style IDX files, plain or .gz), or fashion (Debian's Fashion-MNIST)",
          "KIND");
    if (with_train) f.add("train", train_path, "training data: the folder, list file or IDX folder", "PATH");
    if (with_test) f.add("test", test_path, "test data: the folder, list file or IDX folder", "PATH");
    f.add("classes", classes, "which classes of synthetic or IDX data, as '5-9' or '0,2,4'", "LIST");
    if (with_train)
      f.add("train-images", train_images,
            vp::detail::cat("training images (synthetic: -1 means ", default_train, "; IDX: -1 means all, else balanced and seeded)"));
    if (with_test)
      f.add("test-images", test_images, vp::detail::cat("test images (synthetic: -1 means ", default_test, "; IDX: -1 means all)"));
    f.add("per-class", per_class, "IDX data: at most this many training images per class (0: no limit)");
    f.add_switch("skip-bad", skip_bad, "folder and list data: skip unreadable image files (and list them) instead of failing");
    f.add("data-seed", data_seed, "seed of the synthetic images and of IDX sampling");
    f.add("noise", noise, "pixel noise of the synthetic images (0..1 scale)");
  }

  /// Checks the paths the chosen kind needs, before anything is loaded.
  void validate(bool need_train, bool need_test) const {
    if (data != "synthetic" && data != "folder" && data != "list" && data != "idx" && data != "fashion")
      throw usage_error("--data '" + data + "' is not a data kind (synthetic, folder, list, idx, fashion)");
    const bool files = data == "folder" || data == "list" || data == "idx";
    if (files && need_train && train_path.empty()) throw usage_error("--data " + data + " needs --train PATH");
    if (files && need_test && test_path.empty()) throw usage_error("--data " + data + " needs --test PATH");
  }

  /// The input normalisation of this data for a model of `c`.
  vp::data::normalization norm(const vp::vit_config& c) const {
    if (data == "synthetic") return vp::data::normalization::synthetic();
    if (data == "fashion") return vp::data::fashion_mnist_normalization();
    if (data == "idx" || c.channels == 1) return {{0.5}, {0.5}};
    return vp::data::normalization::imagenet();
  }

  vp::data::labelled_images<float> load(const vp::vit_config& c, bool test) const {
    const long requested = test ? test_images : train_images;
    const char* count_flag = test ? "--test-images" : "--train-images";
    if (requested == 0 || requested < -1) throw usage_error(std::string(count_flag) + " must be -1 or >= 1");
    if (data == "synthetic") {
      const long count = requested > 0 ? requested : (test ? default_test : default_train);
      return vp::data::make_synthetic<float>({.image = c.image,
                                              .channels = c.channels,
                                              .count = count,
                                              .seed = test ? data_seed + 1000003 : data_seed,
                                              .classes = parse_classes(classes),
                                              .noise = noise});
    }
    const std::string path = test ? test_path : train_path;
    if (data == "folder" || data == "list") {
      if (path.empty())
        throw usage_error(vp::detail::cat("--data ", data, " needs ", test ? "--test" : "--train", " PATH"));
      vp::data::folder_options fo{.image = c.image, .channels = c.channels, .norm = norm(c), .skip_bad = skip_bad};
      auto set = data == "folder" ? vp::data::image_folder<float>(path, fo) : vp::data::image_list<float>(path, fo);
      if (!set.skipped.empty()) {
        std::fprintf(stderr, "data: skipped %zu unreadable file(s) in %s:\n", set.skipped.size(), path.c_str());
        for (const auto& why : set.skipped) std::fprintf(stderr, "  %s\n", why.c_str());
      }
      std::printf("data: %ld images of %ld classes from %s\n", static_cast<long>(set.data.size()),
                  static_cast<long>(set.data.classes()), path.c_str());
      return std::move(set.data);
    }
    if (data == "idx" || data == "fashion") {
      fs::path dir = path;
      if (dir.empty()) {
        if (data == "idx") throw usage_error(vp::detail::cat("--data idx needs ", test ? "--test" : "--train", " FOLDER"));
        dir = "/usr/share/datasets/fashion-mnist";
      }
      const std::string stem = test ? "t10k" : "train";
      auto file = [&](const std::string& what) {
        const fs::path plain = dir / (stem + "-" + what), gz = dir / (stem + "-" + what + ".gz");
        if (fs::exists(plain)) return plain;
        if (fs::exists(gz)) return gz;
        throw vp::io_error(vp::detail::cat("no ", plain.filename().string(), "[.gz] in '", dir.string(), "'",
                                           data == "fashion" ? " (install Debian's dataset-fashion-mnist)" : ""));
      };
      vp::data::idx_options io{.classes = parse_classes(classes), .image = c.image, .channels = c.channels, .norm = norm(c)};
      if (data == "fashion") io.label_names = vp::data::fashion_mnist_class_names();
      const long n_classes = static_cast<long>(io.classes.size());
      if (!test && per_class > 0) io.per_class = per_class;
      if (requested > 0) {
        if (requested < n_classes) throw usage_error(vp::detail::cat(count_flag, " ", requested, " is fewer than the ", n_classes, " classes"));
        if (io.per_class == 0 || io.per_class > requested / n_classes) io.per_class = requested / n_classes;
      }
      io.random_sample = io.per_class > 0;
      io.sample_seed = data_seed + (test ? 1000003 : 0);
      auto set = vp::data::load_idx<float>(file("images-idx3-ubyte"), file("labels-idx1-ubyte"), io);
      std::printf("data: %ld %s images of %ld classes from %s\n", static_cast<long>(set.size()), stem.c_str(),
                  static_cast<long>(set.classes()), dir.string().c_str());
      return set;
    }
    throw usage_error("--data '" + data + "' is not a data kind (synthetic, folder, list, idx, fashion)");
  }
};

// ---------------------------------------------------------------- backbones

/// The built-in backbone: a small ViT pretrained on synthetic classes 0-4 the
/// first time it is needed, then cached.
struct builtin_recipe {
  vp::vit_config config{32, 3, 4, 64, 4, 2, 256, 5};
  long images = 3000;
  long epochs = 8;
  vp::index batch = 32;
  double lr = 1e-3;

  std::string file_name() const {
    return vp::detail::cat("builtin-v1-i", config.image, "p", config.patch, "d", config.dim, "l", config.depth, "h",
                           config.heads, "m", config.mlp, ".safetensors");
  }
};

void ensure_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw vp::io_error("cannot create the folder '" + dir.string() + "': " + ec.message());
}

fs::path cache_dir(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* v = std::getenv("VPDARTS_CACHE"); v && *v) return v;
  if (const char* v = std::getenv("XDG_CACHE_HOME"); v && *v) return fs::path(v) / "vpdarts";
  if (const char* v = std::getenv("HOME"); v && *v) return fs::path(v) / ".cache" / "vpdarts";
  return fs::temp_directory_path() / "vpdarts-cache";
}

/// The backbone file to use: the flag's, or the built-in one (pretrained now when not cached).
fs::path backbone_path(const std::string& flag, const std::string& cache_flag, bool quiet) {
  if (!flag.empty()) {
    if (!fs::exists(flag)) throw vp::io_error("the backbone checkpoint '" + flag + "' does not exist");
    return flag;
  }
  const builtin_recipe r;
  const fs::path dir = cache_dir(cache_flag);
  const fs::path file = dir / r.file_name();
  if (fs::exists(file)) {
    std::printf("backbone: built-in, cached at %s\n", file.string().c_str());
    return file;
  }
  ensure_dir(dir);
  std::printf("backbone: pretraining the built-in ViT (%s) on synthetic classes 0-4 (once; cached at %s)\n",
              r.config.describe().c_str(), file.string().c_str());
  vp::vit<float> m(r.config, 0, vp::vit_init::xavier);
  const std::vector<int> classes{0, 1, 2, 3, 4};
  auto train = vp::data::make_synthetic<float>({.image = r.config.image, .count = r.images, .seed = 0, .classes = classes});
  auto test = vp::data::make_synthetic<float>({.image = r.config.image, .count = 500, .seed = 7, .classes = classes});
  auto res = vp::pretrain(m, train, test, {.epochs = r.epochs, .batch = r.batch, .lr = r.lr, .progress = !quiet});
  std::printf("backbone: pretraining test accuracy %.3f (%.0f s)\n", res.test_accuracy, res.seconds);
  vp::io::save_vit(file, m, {{"vpdarts.recipe", r.file_name()}});
  return file;
}

// ---------------------------------------------------------------- model files

/// Writes a self-contained model file: backbone, fusion parameters and head,
/// with the genotype, class names and input normalisation in its metadata.
void save_model(const fs::path& path, vp::vit<float>& backbone, model_t* prompted, const std::vector<std::string>& class_names,
                const vp::data::normalization& norm) {
  std::vector<vp::parameter<float>*> ps = backbone.parameters();
  std::map<std::string, std::string> meta{{"vpdarts.heads", std::to_string(backbone.config().heads)},
                                          {"vpdarts.classes", std::to_string(backbone.config().classes)},
                                          {"vpdarts.class_names", nlohmann::json(class_names).dump()},
                                          {"vpdarts.normalize", norm.str()}};
  if (prompted) {
    for (vp::parameter<float>* p : prompted->fusion_parameters()) ps.push_back(p);
    meta["vpdarts.kind"] = "prompted";
    meta["vpdarts.genotype_json"] = prompted->derive().to_json().dump();
    meta["vpdarts.prompts"] = std::to_string(prompted->options().prompts);
  } else {
    meta["vpdarts.kind"] = "probe";
  }
  vp::io::save_parameters<float>(path, ps, meta);
}

/// `n` trainable values as a percentage of the backbone's size.
double backbone_percent(vp::index n, vp::vit<float>& backbone) {
  return 100.0 * static_cast<double>(n) / static_cast<double>(backbone.backbone_size());
}

/// A model read back from save_model's file.
struct loaded_model {
  std::optional<model_t> prompted;
  std::optional<vp::vit<float>> probe;
  std::vector<std::string> class_names;
  vp::data::normalization norm;
  std::string kind;

  const vp::vit_config& config() const { return prompted ? prompted->config() : probe->config(); }
  vp::var<float> logits(vp::tape<float>& t, const vp::image_batch<float>& x) {
    return prompted ? prompted->logits(t, x, vp::grad_target::none) : probe->logits(t, x);
  }
  vp::index trainable_params() {
    return prompted ? prompted->trainable_params() : probe->head.weight.size() + probe->head.bias.size();
  }
  double trainable_percent() { return backbone_percent(trainable_params(), prompted ? prompted->backbone() : *probe); }
};

loaded_model load_model(const fs::path& path) {
  if (!fs::exists(path)) throw vp::io_error("the model file '" + path.string() + "' does not exist (write one with vpdarts retrain)");
  const vp::io::safetensors f = vp::io::safetensors::read(path);
  const auto& meta = f.metadata();
  auto need = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end())
      throw vp::io_error(vp::detail::cat("'", path.string(), "' is not a vpdarts model file (no ", key,
                                         " metadata; vpdarts retrain writes one)"));
    return it->second;
  };
  loaded_model out;
  out.kind = need("vpdarts.kind");
  try {
    out.class_names = nlohmann::json::parse(need("vpdarts.class_names")).get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw vp::io_error("'" + path.string() + "': bad vpdarts.class_names: " + e.what());
  }
  out.norm = vp::data::normalization::parse(need("vpdarts.normalize"));
  vp::vit<float> backbone = vp::io::load_vit<float>(f, 0, 0, true);  // the file is read once
  if (out.kind == "probe") {
    out.probe.emplace(std::move(backbone));
  } else if (out.kind == "prompted") {
    const vp::genotype g = vp::genotype::from_json(need("vpdarts.genotype_json"), path.string());
    const long prompts = vp::detail::parse_number<long>(need("vpdarts.prompts")).value_or(0);
    if (prompts < 1) throw vp::io_error("'" + path.string() + "': bad vpdarts.prompts metadata '" + need("vpdarts.prompts") + "'");
    out.prompted.emplace(std::move(backbone), g, vp::prompt_options{.prompts = prompts});
    std::vector<vp::parameter<float>*> ps = out.prompted->fusion_parameters();
    vp::io::load_parameters<float>(f, ps, {.allow_unexpected = true});
  } else {
    throw vp::io_error("'" + path.string() + "': unknown model kind '" + out.kind + "'");
  }
  if (static_cast<vp::index>(out.class_names.size()) != out.config().classes)
    throw vp::io_error(vp::detail::cat("'", path.string(), "': ", out.class_names.size(), " class names for a head of ",
                                       out.config().classes));
  return out;
}

/// Latency, throughput and memory of a model, the part of metrics.json every command shares.
nlohmann::json cost_metrics(vp::index trainable, double percent, const vp::vit_config& c,
                            const std::function<vp::var<float>(vp::tape<float>&, const vp::image_batch<float>&)>& fwd) {
  const auto timing = vp::report::time_inference<float>(fwd, c.channels, c.image);
  return {{"trainable_params", trainable},
          {"trainable_percent", percent},
          {"latency_ms_batch1", timing.latency_ms_batch1},
          {"throughput_batch64", timing.throughput_batch64},
          {"threads", vp::detail::max_threads()}};
}

std::vector<double> parse_mults(const std::string& text) {
  // "1,1,0.2,0.2" (op-list order) or "affine=0.2,cross_attention=0.2"
  std::vector<double> out;
  if (text.empty()) return out;
  out.assign(vp::default_ops::size, 1.0);
  std::stringstream in(text);
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
    if (slot >= out.size())
      throw usage_error(vp::detail::cat("--op-lr-mult: more than ", out.size(), " values (operators: ",
                                        vp::detail::join(vp::default_ops::names), ")"));
    const double v = vp::detail::parse_number<double>(value).value_or(-1);
    if (!(v >= 0)) throw usage_error("--op-lr-mult: '" + part + "' is not a multiplier >= 0");
    out[slot] = v;
  }
  if (named && positional) throw usage_error("--op-lr-mult: mix of named and positional values in '" + text + "'");
  if (positional && k != out.size())
    throw usage_error(vp::detail::cat("--op-lr-mult: ", k, " values for ", out.size(), " operators (",
                                      vp::detail::join(vp::default_ops::names), "); or name them: affine=0.2"));
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

// ---------------------------------------------------------------- commands

int cmd_pretrain(int argc, char** argv) {
  flags f("pretrain", "Pretrains a ViT from scratch on the synthetic task and saves it as a timm-named safetensors file.");
  common_settings common;
  data_settings data("0-4", 3000, 500);
  std::string out = "backbone.safetensors", init = "xavier";
  const builtin_recipe r;
  vp::vit_config c = r.config;
  long image = c.image, patch = c.patch, dim = c.dim, depth = c.depth, heads = c.heads, mlp = c.mlp, channels = c.channels;
  long epochs = r.epochs, batch = r.batch;
  double lr = r.lr, wd = 0.05;
  std::uint64_t seed = 0;
  f.add("out", out, "the checkpoint to write", "FILE");
  f.add("image", image, "image side in pixels");
  f.add("channels", channels, "input channels (1 or 3)");
  f.add("patch", patch, "patch side");
  f.add("dim", dim, "width D");
  f.add("depth", depth, "blocks");
  f.add("heads", heads, "attention heads");
  f.add("mlp", mlp, "MLP hidden width");
  f.add("init", init, "initialisation: xavier (trains from scratch) or timm (0.02 normal)", "NAME");
  f.add("epochs", epochs, "epochs");
  f.add("batch", batch, "batch size");
  f.add("lr", lr, "AdamW peak learning rate (one warm-up epoch, then cosine)");
  f.add("weight-decay", wd, "AdamW decoupled weight decay");
  f.add("seed", seed, "initialisation and shuffling seed");
  data.add_to(f);
  common.add_to(f);
  if (!f.parse(argc, argv, 2)) return 0;
  common.apply();
  data.validate(true, true);
  if (init != "xavier" && init != "timm") throw usage_error("vpdarts pretrain: --init is 'xavier' or 'timm', got '" + init + "'");
  const std::vector<int> cls = parse_classes(data.classes);
  c = {image, channels, patch, dim, depth, heads, mlp, static_cast<vp::index>(cls.size())};
  vp::vit<float> m(c, seed, init == "timm" ? vp::vit_init::timm : vp::vit_init::xavier);
  std::printf("pretrain: %s, %ld backbone parameters\n", c.describe().c_str(), static_cast<long>(m.backbone_size()));
  auto train = data.load(c, false), test = data.load(c, true);
  auto res = vp::pretrain(m, train, test,
                          {.epochs = epochs, .batch = batch, .lr = lr, .weight_decay = wd, .seed = seed, .progress = !common.quiet});
  vp::io::save_vit(out, m);
  std::printf("pretrain: train accuracy %.3f, test accuracy %.3f, %.1f s; wrote %s\n", res.train_accuracy,
              res.test_accuracy, res.seconds, out.c_str());
  return 0;
}

/// Flags of the w optimiser shared by search and retrain.
struct w_settings {
  double lr = 0.05, momentum = 0.9, weight_decay = 1e-4, grad_clip = 5, head_lr_mult = 1;
  long lr_warmup_epochs = 1;
  std::string op_lr_mult;

  void add_to(flags& f, const char* lr_name) {
    f.add(lr_name, lr, "SGD base learning rate of w (prompts, operator parameters, head)");
    f.add("momentum", momentum, "SGD momentum");
    f.add("weight-decay", weight_decay, "weight decay on w but the head's bias");
    f.add("grad-clip", grad_clip, "gradient-norm clip of w (0: none)");
    f.add("lr-warmup-epochs", lr_warmup_epochs, "epochs of linear lr warm-up before the cosine decay");
    f.add("op-lr-mult", op_lr_mult, "lr multiplier per operator: '1,1,0.2,0.2' in operator order or 'affine=0.2'", "LIST");
    f.add("head-lr-mult", head_lr_mult, "lr multiplier of the head");
  }
};

int cmd_search(int argc, char** argv) {
  flags f("search",
          "Runs the DARTS search of one fusion operator per layer on a frozen backbone, then writes\n"
          "genotype.json, alpha.csv, alpha.png, search.safetensors (the checkpoint) and metrics.json to --out.");
  common_settings common;
  data_settings data("5-9", 1000, 0);
  std::string out = "vpdarts-run", backbone, cache, order = "first", alpha_lr = "auto";
  long prompts = 8, epochs = 10, warmup = 2, batch = 32, heads = 0;
  double val_fraction = 0.2, alpha_wd = 1e-3;
  std::uint64_t seed = 0;
  bool resume = false;
  w_settings w;
  f.add("out", out, "output folder", "DIR");
  f.add("backbone", backbone, "backbone checkpoint (timm-named safetensors); empty: the built-in one", "FILE");
  f.add("heads", heads, "attention heads of the backbone when its file does not say (0: from metadata or D/64)");
  f.add("cache-dir", cache, "where the built-in backbone is cached (default $VPDARTS_CACHE, else ~/.cache/vpdarts)", "DIR");
  f.add("prompts", prompts, "prompt tokens p (concat and cross_attention)");
  f.add("epochs", epochs, "search epochs");
  f.add("warmup-epochs", warmup, "epochs that train w only, before alpha moves");
  f.add("batch", batch, "batch size of search-train and search-val");
  f.add("val-fraction", val_fraction, "share of the training images held out as search-val");
  f.add("order", order, "DARTS order: first or second", "ORDER");
  w.add_to(f, "w-lr");
  f.add("alpha-lr", alpha_lr, "Adam lr of alpha; auto: 6 / planned alpha steps (DESIGN.md section 5)", "X|auto");
  f.add("alpha-weight-decay", alpha_wd, "L2 weight decay of alpha");
  double beta1 = 0.5, beta2 = 0.999;
  f.add("alpha-beta1", beta1, "Adam beta1 of alpha");
  f.add("alpha-beta2", beta2, "Adam beta2 of alpha");
  std::string lr_grid;
  long grid_epochs = 2;
  f.add("w-lr-grid", lr_grid, "choose --w-lr on search-val from these values first, e.g. 0.005,0.01,0.05,0.1,0.25,0.5", "LIST");
  f.add("grid-epochs", grid_epochs, "epochs of w-only training per grid value");
  f.add("seed", seed, "seed of alpha, the operator parameters, the split and the shuffling");
  f.add_switch("resume", resume, "continue from DIR/search.safetensors when it exists");
  data.add_to(f, true, false);
  common.add_to(f);
  f.note("Example: vpdarts search --out run --epochs 10   (built-in backbone and data)");
  if (!f.parse(argc, argv, 2)) return 0;
  common.apply();
  data.validate(true, false);
  if (order != "first" && order != "second") throw usage_error("vpdarts search: --order is 'first' or 'second', got '" + order + "'");
  vp::search_options o;
  o.epochs = epochs;
  o.warmup_epochs = warmup;
  o.batch = batch;
  o.val_fraction = val_fraction;
  o.lr_warmup_epochs = w.lr_warmup_epochs;
  o.seed = seed;
  o.progress = !common.quiet;
  o.darts.order = order == "first" ? vp::darts_order::first : vp::darts_order::second;
  o.darts.w_lr = w.lr;
  o.darts.w_momentum = w.momentum;
  o.darts.w_weight_decay = w.weight_decay;
  o.darts.grad_clip = w.grad_clip;
  o.darts.op_lr_mult = parse_mults(w.op_lr_mult);
  o.darts.head_lr_mult = w.head_lr_mult;
  o.darts.alpha_weight_decay = alpha_wd;
  o.darts.alpha_beta1 = beta1;
  o.darts.alpha_beta2 = beta2;
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1))
    throw usage_error("vpdarts search: --alpha-beta1 and --alpha-beta2 must be in [0, 1)");
  std::vector<double> grid;
  {
    std::stringstream in(lr_grid);
    std::string item;
    while (std::getline(in, item, ',')) {
      const double v = vp::detail::parse_number<double>(item).value_or(0);
      if (!(v > 0)) throw usage_error("vpdarts search: --w-lr-grid: '" + item + "' is not a learning rate > 0");
      grid.push_back(v);
    }
  }
  if (grid_epochs < 1) throw usage_error("vpdarts search: --grid-epochs must be >= 1");
  if (alpha_lr != "auto") {
    const double v = vp::detail::parse_number<double>(alpha_lr).value_or(0);
    if (!(v > 0)) throw usage_error("vpdarts search: --alpha-lr wants a number > 0 or 'auto', got '" + alpha_lr + "'");
    o.auto_alpha_lr = false;
    o.darts.alpha_lr = v;
  }
  ensure_dir(out);
  const fs::path dir = out;
  o.checkpoint = dir / "search.safetensors";
  o.resume = resume;
  if (!resume && fs::exists(o.checkpoint)) fs::remove(o.checkpoint);

  const fs::path bb = backbone_path(backbone, cache, common.quiet);
  vp::vit<float> vit = vp::io::load_vit<float>(bb, heads, 0, true);
  auto train = data.load(vit.config(), false);
  model_t model(std::move(vit), {.prompts = prompts, .classes = train.classes(), .seed = seed});
  std::printf("search: %s, %ld prompts, operators %s; %ld images of %ld classes (%s), %s order\n",
              model.config().describe().c_str(), prompts, vp::detail::join(vp::default_ops::names).c_str(),
              static_cast<long>(train.size()), static_cast<long>(train.classes()), data.classes.c_str(), order.c_str());
  nlohmann::json grid_json;
  if (!grid.empty()) {
    std::printf("search: choosing the w learning rate on search-val (%ld epochs per value)\n", grid_epochs);
    const auto g = vp::choose_w_lr(model, train, o, grid, grid_epochs);
    o.darts.w_lr = g.best;
    std::printf("search: w lr %g\n", g.best);
    grid_json = {{"lrs", g.lrs}, {"val_accuracy", g.val_accuracy}, {"train_loss", vp::detail::losses_to_json(g.train_loss)},
                 {"best", g.best}, {"epochs", grid_epochs}};
  }
  std::vector<std::string> ops(vp::default_ops::names.begin(), vp::default_ops::names.end());
  o.on_epoch = [&](long e, const vp::matrix<double>& a, double, double) {
    (void)e;
    vp::report::write_alpha_heatmap(dir / "alpha.png", a, ops);  // the picture so far
  };
  const auto r = vp::search(model, train, o);
  if (r.resumed_from > 0) std::printf("search: resumed after epoch %ld of %ld\n", r.resumed_from, epochs);
  r.found.save(dir / "genotype.json");
  vp::report::write_alpha_csv(dir / "alpha.csv", r.alpha_history, ops);
  vp::report::write_alpha_heatmap(dir / "alpha.png", r.alpha_history.back(), ops);
  print_genotype(r.found);
  for (const auto& warning : r.warnings) std::printf("warning: %s\n", warning.c_str());
  nlohmann::json margins = nlohmann::json::array();
  for (const auto& l : r.found.layers) margins.push_back(l.margin());
  nlohmann::json m = cost_metrics(model.trainable_params(true), model.trainable_percent(true), model.config(),
                                  [&](vp::tape<float>& t, const vp::image_batch<float>& x) { return model.logits(t, x, vp::grad_target::none); });
  m.update({{"command", "search"},
            {"genotype", r.found.names()},
            {"margins", margins},
            {"warnings", r.warnings},
            {"alpha_lr", r.alpha_lr},
            {"train_loss", vp::detail::losses_to_json(r.train_loss)},
            {"val_loss", vp::detail::losses_to_json(r.val_loss)},
            {"search_seconds", r.seconds},
            {"w_lr", o.darts.w_lr},
            {"w_lr_grid", grid_json},
            {"backbone", bb.string()},
            {"peak_rss_mb", vp::report::peak_rss_mb()}});
  m["seconds"] = r.seconds;
  vp::report::write_json(dir / "metrics.json", m);
  std::printf("search: %.1f s; wrote %s/{genotype.json, alpha.csv, alpha.png, search.safetensors, metrics.json}\n",
              r.seconds, out.c_str());
  return 0;
}

int cmd_retrain(int argc, char** argv) {
  flags f("retrain",
          "Builds the derived model of a genotype with fresh operator parameters (or a linear probe), trains it on\n"
          "the training images, evaluates it on the test images, and writes model.safetensors and metrics.json to --out.");
  common_settings common;
  data_settings data("5-9", 1000, 1000);
  std::string run = "vpdarts-run", out, backbone, cache, genotype_file, op;
  long prompts = 8, epochs = 20, batch = 32, heads = 0;
  std::uint64_t seed = 0;
  bool probe = false;
  w_settings w;
  f.add("run", run, "the search's output folder (its genotype.json is the default genotype)", "DIR");
  f.add("out", out, "output folder (default: RUN/retrain, RUN/probe or RUN/op-NAME)", "DIR");
  f.add("genotype", genotype_file, "genotype file (default: RUN/genotype.json)", "FILE");
  f.add("op", op, "instead of a genotype, this operator at every layer (concat is VPT-deep)", "NAME");
  f.add_switch("linear-probe", probe, "instead of prompts, train only a linear head on the frozen backbone");
  f.add("backbone", backbone, "backbone checkpoint; empty: the built-in one", "FILE");
  f.add("heads", heads, "attention heads of the backbone when its file does not say");
  f.add("cache-dir", cache, "where the built-in backbone is cached", "DIR");
  f.add("prompts", prompts, "prompt tokens p");
  f.add("epochs", epochs, "epochs");
  f.add("batch", batch, "batch size");
  w.add_to(f, "lr");
  f.add("seed", seed, "seed of the fresh operator parameters and the shuffling");
  long crop_padding = 0;
  bool flip = false;
  f.add("crop-padding", crop_padding, "augmentation: pad by N pixels, then crop back at a random offset");
  f.add_switch("flip", flip, "augmentation: random left-right flips");
  data.add_to(f);
  common.add_to(f);
  if (!f.parse(argc, argv, 2)) return 0;
  common.apply();
  data.validate(true, true);
  if (crop_padding < 0) throw usage_error("vpdarts retrain: --crop-padding must be >= 0");
  if (probe && (crop_padding > 0 || flip))
    throw usage_error("vpdarts retrain: the linear probe trains on fixed features; --crop-padding and --flip do not apply");
  if (probe && !op.empty()) throw usage_error("vpdarts retrain: --linear-probe and --op exclude each other");
  if (out.empty()) out = (fs::path(run) / (probe ? "probe" : op.empty() ? "retrain" : "op-" + op)).string();
  const fs::path dir = out;
  ensure_dir(dir);
  const fs::path bb = backbone_path(backbone, cache, common.quiet);
  vp::vit<float> vit = vp::io::load_vit<float>(bb, heads, 0, true);
  auto train = data.load(vit.config(), false), test = data.load(vit.config(), true);
  nlohmann::json m;
  double accuracy = 0, seconds = 0;
  const auto start = std::chrono::steady_clock::now();
  if (probe) {
    std::printf("retrain: linear probe on %s\n", vit.config().describe().c_str());
    const auto r = vp::linear_probe(vit, train, test,
                                    {.epochs = std::max(epochs, 1L), .batch = batch, .lr = w.lr, .momentum = w.momentum,
                                     .weight_decay = w.weight_decay, .warmup_epochs = w.lr_warmup_epochs, .seed = seed,
                                     .progress = !common.quiet});
    accuracy = r.test_accuracy;
    save_model(dir / "model.safetensors", vit, nullptr, train.class_names, data.norm(vit.config()));
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    m = cost_metrics(r.trainable_params, backbone_percent(r.trainable_params, vit), vit.config(),
                     [&](vp::tape<float>& t, const vp::image_batch<float>& x) { return vit.logits(t, x); });
    m.update({{"method", "linear_probe"}, {"train_loss", r.train_loss}, {"train_accuracy", r.train_accuracy}});
  } else {
    vp::genotype g;
    if (!op.empty()) {
      g = vp::genotype::uniform(op, static_cast<std::size_t>(vit.config().depth));
    } else {
      const fs::path gf = genotype_file.empty() ? fs::path(run) / "genotype.json" : fs::path(genotype_file);
      if (!fs::exists(gf))
        throw vp::io_error("no genotype at '" + gf.string() + "' (run vpdarts search --out " + run +
                           " first, or give --genotype FILE, --op NAME or --linear-probe)");
      g = vp::genotype::load(gf);
    }
    model_t model(std::move(vit), g, {.prompts = prompts, .classes = train.classes(), .seed = seed});
    std::printf("retrain: %s with %s\n", model.config().describe().c_str(), g.str().c_str());
    vp::train_options o{.epochs = epochs,
                        .batch = batch,
                        .lr = w.lr,
                        .momentum = w.momentum,
                        .weight_decay = w.weight_decay,
                        .warmup_epochs = w.lr_warmup_epochs,
                        .grad_clip = w.grad_clip,
                        .op_lr_mult = parse_mults(w.op_lr_mult),
                        .head_lr_mult = w.head_lr_mult,
                        .seed = seed,
                        .progress = !common.quiet,
                        .augment = {.crop_padding = crop_padding, .flip = flip}};
    const double loss = vp::train(model, train, o);
    accuracy = vp::evaluate(model, test);
    save_model(dir / "model.safetensors", model.backbone(), &model, train.class_names, data.norm(model.config()));
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    m = cost_metrics(model.trainable_params(), model.trainable_percent(), model.config(),
                     [&](vp::tape<float>& t, const vp::image_batch<float>& x) { return model.logits(t, x, vp::grad_target::none); });
    m.update({{"method", op.empty() ? "genotype" : op}, {"genotype", g.names()}, {"train_loss", loss}});
  }
  m.update({{"command", "retrain"},
            {"test_accuracy", accuracy},
            {"test_images", test.size()},
            {"train_images", train.size()},
            {"backbone", bb.string()},
            {"peak_rss_mb", vp::report::peak_rss_mb()},
            {"seconds", seconds}});
  vp::report::write_json(dir / "metrics.json", m);
  std::printf("retrain: test accuracy %.4f, %ld trainable parameters (%.3f%% of the backbone), latency %.2f ms at batch 1, "
              "%.1f images/s at batch 64, %.1f s; wrote %s/{model.safetensors, metrics.json}\n",
              accuracy, m["trainable_params"].get<long>(), m["trainable_percent"].get<double>(),
              m["latency_ms_batch1"].get<double>(), m["throughput_batch64"].get<double>(), seconds, out.c_str());
  return 0;
}

int cmd_eval(int argc, char** argv) {
  flags f("eval", "Evaluates a model file from vpdarts retrain on the test images and writes metrics.json.");
  common_settings common;
  data_settings data("5-9", 0, 1000);
  std::string model_file, out;
  f.add("model", model_file, "model file written by vpdarts retrain", "FILE");
  f.add("out", out, "where metrics.json goes (default: the model's folder/eval)", "DIR");
  data.add_to(f, false, true);
  common.add_to(f);
  if (!f.parse(argc, argv, 2)) return 0;
  common.apply();
  data.validate(false, true);
  if (model_file.empty()) throw usage_error("vpdarts eval: --model FILE is required (see vpdarts eval --help)");
  const auto start = std::chrono::steady_clock::now();
  loaded_model lm = load_model(model_file);
  auto test = data.load(lm.config(), true);
  if (test.classes() != lm.config().classes)
    throw vp::config_error(vp::detail::cat("eval: the test data has ", test.classes(), " classes, the model ", lm.config().classes));
  const double acc = vp::detail::top1_accuracy(test, 64, [&](vp::tape<float>& t, const vp::image_batch<float>& x) { return lm.logits(t, x); });
  nlohmann::json m = cost_metrics(lm.trainable_params(), lm.trainable_percent(), lm.config(),
                                  [&](vp::tape<float>& t, const vp::image_batch<float>& x) { return lm.logits(t, x); });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  m.update({{"command", "eval"},
            {"model", model_file},
            {"test_accuracy", acc},
            {"test_images", test.size()},
            {"peak_rss_mb", vp::report::peak_rss_mb()},
            {"seconds", seconds}});
  const fs::path dir = out.empty() ? fs::path(model_file).parent_path() / "eval" : fs::path(out);
  ensure_dir(dir);
  const fs::path path = dir / "metrics.json";
  vp::report::write_json(path, m);
  std::printf("eval: test accuracy %.4f on %ld images, latency %.2f ms at batch 1, %.1f images/s at batch 64; wrote %s\n",
              acc, static_cast<long>(test.size()), m["latency_ms_batch1"].get<double>(), m["throughput_batch64"].get<double>(),
              path.string().c_str());
  return 0;
}

int cmd_predict(int argc, char** argv) {
  flags f("predict", "Classifies image files (PNG, JPEG, BMP, ...) with a model file from vpdarts retrain;\n"
                     "prints one line per file: the file, the label and its probability.");
  common_settings common;
  std::string model_file;
  long top = 1;
  std::vector<std::string> files;
  f.add("model", model_file, "model file written by vpdarts retrain", "FILE");
  f.add("top", top, "labels to print per file");
  f.positional(files, "IMAGE");
  common.add_to(f);
  if (!f.parse(argc, argv, 2)) return 0;
  common.apply();
  if (model_file.empty()) throw usage_error("vpdarts predict: --model FILE is required (see vpdarts predict --help)");
  if (files.empty()) throw usage_error("vpdarts predict: no image files given (see vpdarts predict --help)");
  if (top < 1) throw usage_error("vpdarts predict: --top must be >= 1");
  loaded_model lm = load_model(model_file);
  const auto& c = lm.config();
  const std::vector<fs::path> paths(files.begin(), files.end());
  const auto batch = vp::data::load_images<float>(paths, c.channels, c.image, lm.norm);
  vp::tape<float> t;
  vp::no_grad<float> guard(t);
  const vp::matrix<float> probs = vp::softmax_rows(lm.logits(t, batch)).value();
  for (std::size_t i = 0; i < files.size(); ++i) {
    std::vector<std::pair<float, vp::index>> ranked;
    for (vp::index k = 0; k < probs.cols(); ++k) ranked.emplace_back(probs(static_cast<vp::index>(i), k), k);
    std::sort(ranked.begin(), ranked.end(), std::greater<>());
    std::printf("%s", files[i].c_str());
    for (long k = 0; k < std::min<long>(top, static_cast<long>(ranked.size())); ++k)
      std::printf("\t%s\t%.4f", lm.class_names[static_cast<std::size_t>(ranked[static_cast<std::size_t>(k)].second)].c_str(),
                  static_cast<double>(ranked[static_cast<std::size_t>(k)].first));
    std::printf("\n");
  }
  return 0;
}

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
  if (!f.parse(argc, argv, 2)) return 0;
  common.apply();
  if (data.data != "synthetic") throw usage_error("vpdarts sample: only --data synthetic can be sampled");
  data.train_images = count;
  vp::vit_config c;
  c.image = image;
  c.channels = channels;
  const auto set = data.load(c, false);
  const vp::data::normalization norm = vp::data::normalization::synthetic();
  std::vector<unsigned char> px(static_cast<std::size_t>(image * image * channels));
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
    const fs::path file = dir / vp::detail::cat(i, ".png");
    vp::report::canvas::write_png_bytes(file, static_cast<int>(image), static_cast<int>(image), static_cast<int>(channels), px.data());
    std::printf("%s\t%s\n", file.string().c_str(), name.c_str());
  }
  return 0;
}

void print_usage() {
  std::printf(
      "vpdarts %s: visual prompt tuning with differentiable fusion search\n\n"
      "usage: vpdarts COMMAND [flags]\n\n"
      "commands:\n"
      "  pretrain   pretrain a ViT backbone from scratch on the synthetic task\n"
      "  search     DARTS search of the fusion operator of every layer (genotype, alpha trajectory, heatmap)\n"
      "  retrain    train the derived model of a genotype (or one operator everywhere, or a linear probe); test it\n"
      "  eval       evaluate a retrained model file\n"
      "  predict    classify image files with a retrained model file\n"
      "  sample     write synthetic images as PNG files (OUT/<class>/<n>.png)\n\n"
      "Each command takes --help. With no data flags, search and retrain use the built-in synthetic task and a\n"
      "built-in backbone (pretrained on first use and cached).\n",
      vp::version_string);
}

}  // namespace

int main(int argc, char** argv) {
  vp::exec_best_variant(argv);
  if (argc < 2) {
    print_usage();
    return 2;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      print_usage();
      return 0;
    }
    if (cmd == "--version") {
      std::printf("vpdarts %s (compiled for %s)\n", vp::version_string, std::string(vp::compiled_isa()).c_str());
      return 0;
    }
    if (cmd == "pretrain") return cmd_pretrain(argc, argv);
    if (cmd == "search") return cmd_search(argc, argv);
    if (cmd == "retrain") return cmd_retrain(argc, argv);
    if (cmd == "eval") return cmd_eval(argc, argv);
    if (cmd == "predict") return cmd_predict(argc, argv);
    if (cmd == "sample") return cmd_sample(argc, argv);
    std::fprintf(stderr, "vpdarts: unknown command '%s' (commands: pretrain, search, retrain, eval, predict, sample; see vpdarts --help)\n",
                 cmd.c_str());
    return 2;
  } catch (const usage_error& e) {
    const std::string what = e.what();
    std::fprintf(stderr, "%s%s\n", what.rfind("vpdarts", 0) == 0 ? "" : ("vpdarts " + cmd + ": ").c_str(), what.c_str());
    return 2;
  } catch (const vp::error& e) {
    std::fprintf(stderr, "vpdarts %s: %s\n", cmd.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vpdarts %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
