#pragma once
// The vpdarts tool's shared settings: the flags several commands take (threads,
// data, w's optimiser, the backbone), each checked before any file is read or
// any model is built, and the helpers the commands share.

#include <omp.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <vpdarts/vpdarts.hpp>

#include "flags.hpp"

namespace vpdarts_cli {

namespace vp = vpdarts;
namespace fs = std::filesystem;
using vp::text::cat;
using vp::text::join;
using model_t = vp::prompted_vit<float, vp::default_ops>;

// The commands, one file each.
int cmd_pretrain(int argc, char** argv);
int cmd_search(int argc, char** argv);
int cmd_select(int argc, char** argv);
int cmd_retrain(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_predict(int argc, char** argv);
int cmd_sample(int argc, char** argv);
int cmd_export(int argc, char** argv);

/// Throws usage_error("vpdarts CMD: --FLAG ...") unless `ok`.
inline void require(bool ok, const std::string& command, const std::string& what) {
  if (!ok) throw usage_error("vpdarts " + command + ": " + what);
}

/// The processes this run is shared over: one, unless an MPI build of the
/// tool was started by mpirun (main.cpp sets it before any command runs).
const vp::data_parallel& parallel();
/// Sets parallel() and the number of its processes on this machine (they share its cores).
void set_parallel(vp::data_parallel p, int processes_here);
/// Processes of parallel() on this machine.
int processes_here();

/// How this run's tapes compute (precision, float32 engine, memory): what common_settings::apply()
/// chose from --precision, --fp32-gemm, --recompute-mlp and --recompute-qkv; every library call the
/// tool makes is given it (the library itself has no process-wide setting).
const vp::execution_config& execution();

/// Parses the command's flags (see flags::parse); under mpirun, every process then checks that it was
/// given the flags process 0 was given (all but --threads and --quiet) and all stop, naming what differs.
/// @throws usage_error for a bad flag; config_error when the processes disagree.
bool parse_flags(flags& f, int argc, char** argv);

/// Checks before any work that `files` can be written (no name too long for the file system, with the
/// temporary each is written through). @throws usage_error naming `flag`.
void check_outputs(const std::string& command, const std::string& flag, std::initializer_list<fs::path> files);

/// Runs `work` on process 0 only (the one that writes files); every process
/// learns whether it failed. With one process, just runs it.
template <class Work>
void on_root(Work&& work) {
  parallel().on_root(std::forward<Work>(work));
}

/// Flags every command shares.
struct common_settings {
  long threads = 0;
  bool quiet = false;
  std::string precision = "fp32";
  std::string fp32_gemm = "auto";
  bool recompute_mlp = false;
  bool recompute_qkv = false;

  void add_to(flags& f) {
    f.add("threads", threads, "OpenMP threads (0: the cores other work leaves free, measured at start; under mpirun, the cores shared among a "
          "machine's processes; OMP_NUM_THREADS, when set, instead)");
    f.add_switch("quiet", quiet, "no progress bars");
    f.add("precision", precision,
          "the frozen backbone's products: fp32, bf16 (oneDNN on AVX512-BF16 or AMX; exit 2 where missing) or auto "
          "(bf16 where available)");
    f.add("fp32-gemm", fp32_gemm,
          "who runs the frozen float32 products: eigen, onednn (a build with oneDNN) or auto (oneDNN where the build has "
          "it, else Eigen)");
    f.add_switch("recompute-mlp", recompute_mlp,
                 "frozen blocks keep no MLP hidden layer for backward and compute it again: a search step holds about "
                 "0.7x the memory for 5-20 % more time, with the same results in fp32 (in bf16 the MLP's gradients differ by "
                 "bf16 rounding, docs/cli.md)");
    f.add_switch("recompute-qkv", recompute_qkv,
                 "frozen blocks keep no qkv for backward and compute it again (one more product per block): less "
                 "memory for more time, with the same results; with --recompute-mlp, a frozen block keeps the least");
  }
  void validate(const std::string& command) const {
    require(threads >= 0 && threads <= 4096, command, cat("--threads must be in 0..4096, got ", threads));
    require(precision == "fp32" || precision == "bf16" || precision == "auto", command,
            cat("--precision must be fp32, bf16 or auto, got '", precision, "'"));
    if (precision == "bf16") {
      const vp::bf16_support b = vp::bf16_supported();
      require(b.available, command, "--precision bf16 is not available here: " + b.reason);
    }
    require(fp32_gemm == "auto" || fp32_gemm == "eigen" || fp32_gemm == "onednn", command,
            cat("--fp32-gemm must be auto, eigen or onednn, got '", fp32_gemm, "'"));
    require(fp32_gemm != "onednn" || vp::kernels::onednn::built, command,
            "--fp32-gemm onednn is not available: this vpdarts was built without oneDNN");
  }
  /// Sets the threads and the precision; says on stderr which precision runs unless it is plain fp32
  /// (status goes to stderr, results alone to stdout).
  /// `resumed_threads`: the thread count of a search being resumed, used instead of the free cores
  /// when --threads is 0 (its bits depend on the count).
  void apply(std::optional<int> resumed_threads = std::nullopt) const {
    vp::execution_config e;
    if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
    else if (processes_here() > 1) omp_set_num_threads(std::max(1, omp_get_num_procs() / processes_here()));
    else if (std::getenv("OMP_NUM_THREADS") != nullptr) {
      // the user's OpenMP setting stands
    } else if (resumed_threads) {
      omp_set_num_threads(*resumed_threads);
      if (!quiet && *resumed_threads != omp_get_num_procs())
        std::fprintf(stderr, "threads: %d, as the search being resumed ran (--threads N chooses)\n", *resumed_threads);
    } else {
      // the default: the cores other work leaves free (an even split waits for the thread that shares a core)
      const int all = omp_get_max_threads(), free = std::min(all, vp::free_cores());
      if (free < all) {
        omp_set_num_threads(free);
        if (!quiet)
          std::fprintf(stderr, "threads: %d of %d (other work holds the rest of the cores; --threads N chooses)\n", free, all);
      }
    }
    e.mlp = recompute_mlp ? vp::mlp_memory::recompute : vp::mlp_memory::keep;
    if (recompute_mlp && !quiet) std::fprintf(stderr, "memory: frozen blocks compute their MLP hidden layer again in backward\n");
    e.attention = recompute_qkv ? vp::attention_memory::recompute : vp::attention_memory::keep;
    if (recompute_qkv && !quiet) std::fprintf(stderr, "memory: frozen blocks compute qkv again in backward\n");
    const vp::bf16_support b = vp::bf16_supported();
    const bool bf16 = precision == "bf16" || (precision == "auto" && b.available);
    e.products = bf16 ? vp::precision::bf16 : vp::precision::fp32;
    if (precision != "fp32") {
      if (bf16) std::fprintf(stderr, "precision: bf16 (frozen products on oneDNN's %s kernels, the rest float32)\n", b.kernel.c_str());
      else std::fprintf(stderr, "precision: fp32 (auto: %s)\n", b.reason.c_str());
    }
    e.fp32_products = fp32_gemm == "onednn" ? vp::fp32_gemm::onednn
                      : fp32_gemm == "eigen" ? vp::fp32_gemm::eigen : vp::fp32_gemm::automatic;
    // said when asked for, or when it is not what every build without oneDNN runs
    if (!bf16 && (fp32_gemm != "auto" || (!quiet && e.fp32_engine() == vp::fp32_gemm::onednn)))
      std::fprintf(stderr, "fp32 products: %s%s\n", e.fp32_engine() == vp::fp32_gemm::onednn ? "oneDNN" : "Eigen",
                  fp32_gemm == "auto" ? cat(" (auto: ", vp::fp32_gemm_automatic().reason, ")").c_str() : "");
    set_execution(e);
  }

 private:
  static void set_execution(const vp::execution_config& e);
};

/// Parses "5-9", "0,2,4" or "1-3,7" into class indices (0..9999, no repeats).
std::vector<int> parse_classes(const std::string& text);

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

  void add_to(flags& f, bool with_train = true, bool with_test = true);
  /// Checks every data flag and the paths the chosen kind needs, before anything is loaded.
  void validate(const std::string& command, bool need_train, bool need_test) const;
  /// Checks that synthetic data can be made at `image` pixels (--image's value; 0: not given).
  /// @throws usage_error naming --image.
  void validate_image(const std::string& command, long image) const;
  /// The input normalisation of this data for a model of `c`.
  vp::data::normalization norm(const vp::vit_config& c) const;
  /// The training or test set for a model of `c`, normalised as `norm_override` says when given
  /// (a model file's own), else as norm() says.
  vp::data::labelled_images<float> load(const vp::vit_config& c, bool test,
                                        const vp::data::normalization* norm_override = nullptr) const;
};

/// The flags of w's optimiser, shared by search and retrain.
struct w_settings {
  vp::w_optimizer_options w;
  std::string op_lr_mult;

  void add_to(flags& f, const char* lr_name);
  /// The options, after checking every value. @throws usage_error.
  vp::w_optimizer_options options(const std::string& command) const;
};

/// Where the backbone comes from: a file (any timm VisionTransformer variant, at any image size), or the
/// built-in one (cached).
struct backbone_settings {
  std::string file, cache, arch, act, pool;
  long heads = 0, image = 0;
  double norm_eps = 0;
  bool ignore_unknown = false;
  vp::vit_load_options options;  // filled by validate()

  void add_to(flags& f);
  /// Checks every backbone flag and fills `options`. @throws usage_error.
  void validate(const std::string& command);
  /// The backbone file to use: the flag's, or the built-in one (pretrained now when not cached).
  fs::path path(bool quiet) const;
  /// The backbone, loaded.
  vp::vit<float> load(bool quiet, fs::path* used = nullptr) const;
};

/// The built-in backbone: a small ViT pretrained on synthetic classes 0-4 the
/// first time it is needed, then cached.
struct builtin_recipe {
  vp::vit_config config{32, 3, 4, 64, 4, 2, 256, 5};
  long images = 3000;
  long epochs = 8;
  vp::index batch = 32;
  double lr = 1e-3;

  std::string file_name() const {
    return cat("builtin-v1-i", config.image, "p", config.patch, "d", config.dim, "l", config.depth, "h", config.heads,
               "m", config.mlp, ".safetensors");
  }
};

/// Creates a folder and its parents. @throws vpdarts::io_error.
void ensure_dir(const fs::path& dir);

/// A comma list of numbers > 0 ("0.01,0.1"; >= 0 with `allow_zero`), naming `flag` when one is not.
std::vector<double> parse_positive_list(const std::string& text, const std::string& command, const std::string& flag,
                                        bool allow_zero = false);

/// Latency, throughput and memory of a model, the part of metrics.json every command shares.
/// Under mpirun, process 0 measures with all of the machine's cores while the others wait (they get null).
nlohmann::json cost_metrics(vp::index trainable, double percent, const vp::vit_config& c,
                            const std::function<vp::var<float>(vp::tape<float>&, const vp::image_batch<float>&)>& fwd);

/// Prints a genotype with its softmax weights and margins.
void print_genotype(const vp::genotype& g);

/// Genotypes scored by vp::score_genotypes as metrics.json lists them: per genotype its run (`runs[i]`),
/// operators, search-val accuracy and loss, training loss and trainable values.
nlohmann::json scored_candidates(const std::vector<std::string>& runs, const std::vector<vp::genotype>& gs,
                                 const vp::genotype_scores& sc);

}  // namespace vpdarts_cli
