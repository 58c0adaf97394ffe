// The same work as the PyTorch peer (../shared/peers/torch_search_bench.py),
// timed the same way: the reference workloads of docs/method.md (section 7), a first- or second-order DARTS
// step or a derived model's forward pass, 2 warm-up steps then --steps timed
// ones, the median, and the peer's analytic FLOP count (matmuls only; frozen
// weights get no gradient). One line per run:
//
//   RESULT workload=toy mode=first batch=32 sec_per_step=... images_per_s=... gflops=... gflops_per_s=... peak_rss_mb=...
//
//   vpdarts_bench [--workload toy|tiny16|base16|dinov2s14] [--mode first|second|infer|block] [--batch N] [--steps 5] [--threads 2 (0: the free cores)] [--seed 0]
//                 [--precision fp32|bf16]   (bf16: the frozen products on oneDNN; exit 2 where unavailable)
//                 [--fp32-gemm auto|eigen|onednn]   (who runs the frozen float32 products; auto: oneDNN on AVX-512)
//                 [--recompute-mlp]         (frozen blocks compute their MLP hidden layer again in backward)
//                 [--recompute-qkv]         (frozen blocks compute qkv again in backward)
//                 [--profile]               (also prints where a timed step's time goes: PROFILE lines, detail/profile.hpp)
//                 [--repeat R]              (--mode block: one frozen block of the workload's backbone, forward and
//                                            backward, on --batch images R times per step; --batch 24 against
//                                            --batch 8 --repeat 3 is the same work in one pass or three, the
//                                            question of stacking a MixedOp's candidates into one block pass)
//   vpdarts_bench --roof [fp32|bf16]   the matmul roof: the float32 GEMM of --fp32-gemm (Eigen, or oneDNN's
//                                      better of its matmul and its GEMM) / oneDNN's bf16 matmul, on a 2048 cube
//   mpirun -np N vpdarts_bench ...   (a build with MPI: every step's batch shared over N processes, as
//                                     vpdarts search does; RESULT adds processes=N)
//   vpdarts_bench --scaling          the data-parallel scaling model of docs/distributed.md
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <vpdarts/detail/profile.hpp>
#include <vpdarts/vpdarts.hpp>
#ifdef VPDARTS_WITH_MPI
#include <vpdarts/distributed.hpp>
#endif

namespace vp = vpdarts;

namespace {

struct workload {
  std::string name;
  vp::vit_config config;
  long prompts;
  long batch;
};

workload find_workload(const std::string& name) {
  if (name == "toy") return {"toy", vp::vit_config::toy(), 8, 32};
  if (name == "tiny16") return {"tiny16", vp::vit_config::tiny16(10), 10, 8};
  if (name == "base16") return {"base16", {224, 3, 16, 768, 12, 12, 3072, 10}, 10, 8};  // vit_base_patch16_224
  if (name == "dinov2s14") {  // vit_small_patch14_dinov2 at 224 (16 x 16 patches): LayerScale, patch 14
    vp::vit_config c{224, 3, 14, 384, 12, 6, 1536, 10};
    c.layer_scale = true;
    return {"dinov2s14", c, 10, 8};
  }
  std::fprintf(stderr, "vpdarts_bench: unknown workload '%s' (toy, tiny16, base16 or dinov2s14)\n", name.c_str());
  std::exit(2);
}

// The FLOPs of --mode block: one frozen block's products on `images` images of the backbone's tokens,
// forward and the input gradients of backward, counted as the peer counts a block (matmuls only).
double block_flops(const vp::vit_config& c, long images) {
  const double rows = static_cast<double>(images * c.tokens()), d = static_cast<double>(c.dim),
               t = static_cast<double>(c.tokens()), m = static_cast<double>(c.mlp);
  const double weights = 2 * rows * d * (4 * d + 2 * m), attention = 4 * rows * t * d;
  return 2 * weights + 3 * attention;  // backward: each weight product once, attention's two products twice
}

// ---- the peer's FLOP count (torch_search_bench.py: block_flops ... step_flops)
const std::vector<std::string> op_names{"concat", "add", "affine", "cross_attention"};

double op_flops(const vp::vit_config& c, long p, const std::string& name, bool backward, bool param_grads) {
  const double T = static_cast<double>(c.tokens()), D = static_cast<double>(c.dim), M = static_cast<double>(c.mlp);
  const double t = name == "concat" ? T + static_cast<double>(p) : T;
  const double linear = 2 * t * D * 3 * D + 2 * t * D * D + 2 * t * D * M + 2 * t * M * D;
  const double attention = 2 * (2 * t * t * D);
  const double cross = 2 * T * static_cast<double>(p) * D;
  if (!backward) return linear + attention + (name == "cross_attention" ? 2 * cross : 0);
  const double extra = name == "cross_attention" ? (2 + (param_grads ? 2 : 0)) * cross : 0;
  return linear + 2 * attention + extra;
}

double pass_flops(const vp::vit_config& c, long p, const std::vector<std::vector<std::string>>& layers,
                  const std::string& backward_to) {
  const double D = static_cast<double>(c.dim), C = static_cast<double>(c.classes);
  double total = 2 * static_cast<double>(c.patches()) * D * static_cast<double>(c.channels * c.patch * c.patch) + 2 * D * C;
  for (const auto& ops : layers)
    for (const auto& n : ops) total += op_flops(c, p, n, false, false);
  if (backward_to.empty()) return total;
  total += 2 * D * C * (backward_to == "w" ? 2 : 1);
  for (std::size_t l = 0; l < layers.size(); ++l) {
    if (backward_to == "alpha" && l == 0) continue;
    for (const auto& n : layers[l]) total += op_flops(c, p, n, true, backward_to == "w");
  }
  return total;
}

double step_flops(const vp::vit_config& c, long p, const std::string& mode, long batch) {
  const std::vector<std::vector<std::string>> search(static_cast<std::size_t>(c.depth), op_names);
  double per_image = 0;
  if (mode == "first") per_image = pass_flops(c, p, search, "alpha") + pass_flops(c, p, search, "w");
  else if (mode == "second") per_image = 3 * pass_flops(c, p, search, "w") + 2 * pass_flops(c, p, search, "alpha");
  else {
    std::vector<std::vector<std::string>> derived;
    for (long l = 0; l < c.depth; ++l) derived.push_back({op_names[static_cast<std::size_t>(l) % op_names.size()]});
    per_image = pass_flops(c, p, derived, "");
  }
  return per_image * static_cast<double>(batch);
}

// ---- the data-parallel scaling model (docs/distributed.md)
// Per first-order step on N nodes with global batch B: compute F(B) / (N R), R one node's rate; two
// all-reduces (alpha's gradient, then w's) of 8-byte values (the reduction is in double), each a ring:
// 2 (N-1)/N bytes / bandwidth + 2 (N-1) latencies. Efficiency = time on one node / (N x time on N).
void print_scaling(double rate_gflops) {
  std::printf("scaling model: one node's rate R = %.0f GFLOP/s (first-order step), ring all-reduce in double,\n"
              "latency 20 us at 10 Gb/s and 5 us at 100 Gb/s; efficiency for N nodes (global batch B, B/N rows each)\n\n",
              rate_gflops);
  std::printf("| workload | B | trainable values (w + alpha) | MB all-reduced per step | GFLOP per step | N | B/N | 10 Gb/s | 100 Gb/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const char* name : {"toy", "tiny16", "base16"}) {
    const workload w = find_workload(name);
    vp::prompted_vit<float> model(vp::vit<float>(w.config, 0), {.prompts = w.prompts});
    double values = 0;
    for (auto* p : model.weights()) values += static_cast<double>(p->size());
    const double alpha = static_cast<double>(model.alpha().size());
    for (long B : {w.batch, 64L}) {
      const double flops = step_flops(w.config, w.prompts, "first", B);
      for (long n : {1L, 2L, 4L, 8L, 16L, 32L, 64L}) {
        if (n > B) break;
        std::printf("| %s | %ld | %.0f | %.2f | %.1f | %ld | %.1f |", name, B, values + alpha, 8 * (values + alpha) / 1e6,
                    flops / 1e9, n, static_cast<double>(B) / static_cast<double>(n));
        for (double gbit : {10.0, 100.0}) {
          const double latency = gbit < 50 ? 20e-6 : 5e-6, bandwidth = gbit * 1e9 / 8, k = static_cast<double>(n);
          auto ring = [&](double bytes) { return n == 1 ? 0.0 : 2 * (k - 1) / k * bytes / bandwidth + 2 * (k - 1) * latency; };
          const double one = flops / (rate_gflops * 1e9), many = flops / (k * rate_gflops * 1e9) + ring(8 * values) + ring(8 * alpha);
          std::printf(" %.0f %% |", 100 * one / (k * many));
        }
        std::printf("\n");
      }
    }
  }
}

// The matmul roof: the best rate of a 2048 x 2048 x 2048 product, float32 on the GEMM in use (Eigen or
// oneDNN, execution_config::fp32_engine; on oneDNN the better of the two kernels the float32 products
// use, kernels/onednn.hpp) or bf16 on oneDNN.
int print_roof(const std::string& precision, const vp::execution_config& e) {
  const vp::index n = 2048;
  vp::matrix<float> a = vp::matrix<float>::Random(n, n), b = vp::matrix<float>::Random(n, n), c(n, n);
  std::vector<std::uint16_t> a16(static_cast<std::size_t>(n * n)), b16(a16.size());
  vp::detail::to_bf16(a.data(), a16.data(), a16.size());
  vp::detail::to_bf16(b.data(), b16.data(), b16.size());
  double best = 1e30;
  for (int i = 0; i < 12; ++i) {
    const auto start = std::chrono::steady_clock::now();
    if (precision == "fp32" && e.fp32_engine() == vp::fp32_gemm::eigen) {
      c.noalias() = a * b.transpose();
    } else {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
      // float32 on oneDNN: the better of its two kernels in use, the matmul (forward products) and the
      // GEMM (large weights' input gradients), taken in turn
      auto& mm = vp::kernels::onednn::matmuls::here();
      if (precision == "fp32" && i % 2 == 0) mm.run_f32(n, n, n, a.data(), b.data(), true, c.data(), false);
      else if (precision == "fp32") mm.run_f32_gemm(n, n, n, a.data(), b.data(), c.data(), false);
      else mm.run(n, n, n, a16.data(), b16.data(), true, c.data(), false);
#endif
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::printf("ROOF precision=%s n=%ld gflops_per_s=%.1f%s\n", precision.c_str(), static_cast<long>(n),
              2.0 * static_cast<double>(n * n * n) / best / 1e9,
              precision == "fp32" ? vp::text::cat(" gemm=", vp::to_string(e.fp32_engine())).c_str() : "");
  return 0;
}

vp::image_batch<float> random_images(const vp::vit_config& c, long batch, std::mt19937_64& rng) {
  std::normal_distribution<float> n01;
  vp::image_batch<float> x(batch, c.channels, c.image, c.image);
  for (vp::index i = 0; i < x.pixels.size(); ++i) x.pixels.data()[i] = n01(rng);
  return x;
}

std::vector<int> random_labels(const vp::vit_config& c, long batch, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> u(0, static_cast<int>(c.classes) - 1);
  std::vector<int> y(static_cast<std::size_t>(batch));
  for (auto& v : y) v = u(rng);
  return y;
}

}  // namespace

/// Where the timed steps' time went (detail/profile.hpp), per step: each kind, then the rest (the tape's
/// own work, element-wise ops, the fusion operators' backward, the loss, ...).
void print_profile(const std::string& workload, const std::string& mode, long batch, const std::vector<double>& times) {
  const auto& p = vp::detail::profile();
  double total = 0;
  for (double t : times) total += t;
  const double steps = static_cast<double>(times.size());
  std::printf("PROFILE workload=%s mode=%s batch=%ld: per step, %.1f ms in all (mean of %zu steps)\n", workload.c_str(),
              mode.c_str(), batch, 1e3 * total / steps, times.size());
  double listed = 0;
  for (std::size_t k = 0; k < vp::detail::profile_names.size(); ++k) {
    const double s = static_cast<double>(p.ns[k].load()) * 1e-9;
    listed += s;
    std::printf("PROFILE   %-20s %9.1f ms %5.1f %%  %8.0f calls\n", vp::detail::profile_names[k], 1e3 * s / steps,
                100.0 * s / total, static_cast<double>(p.calls[k].load()) / steps);
  }
  std::printf("PROFILE   %-20s %9.1f ms %5.1f %%\n", "the rest", 1e3 * (total - listed) / steps, 100.0 * (total - listed) / total);
}

int main(int argc, char** argv) {
  vp::exec_best_variant(argv);
  std::string workload_name = "toy", mode = "first", precision = "fp32", roof, fp32_gemm = "auto";
  long batch = 0, steps = 5, threads = 2, repeat = 1;
  std::uint64_t seed = 0;
  double scaling_rate = 0;
  bool profiling = false;
  vp::data_parallel dp;
  vp::execution_config exec;
#ifdef VPDARTS_WITH_MPI
  std::optional<vp::mpi::environment> mpi;
  if (vp::mpi::launched()) {
    mpi.emplace(argc, argv);
    dp = vp::mpi::world();
  }
#endif
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--recompute-mlp") == 0) {
      exec.mlp = vp::mlp_memory::recompute;
      continue;
    }
    if (std::strcmp(argv[i], "--recompute-qkv") == 0) {
      exec.attention = vp::attention_memory::recompute;
      continue;
    }
    if (std::strcmp(argv[i], "--profile") == 0) {
      profiling = true;
      continue;
    }
    if (std::strcmp(argv[i], "--scaling") == 0) {
      scaling_rate = i + 1 < argc ? std::atof(argv[++i]) : 100.0;
      continue;
    }
    auto is = [&](const char* flag) { return std::strcmp(argv[i], flag) == 0 && i + 1 < argc; };
    if (is("--workload")) workload_name = argv[++i];
    else if (is("--mode")) mode = argv[++i];
    else if (is("--batch")) batch = std::atol(argv[++i]);
    else if (is("--steps")) steps = std::atol(argv[++i]);
    else if (is("--threads")) threads = std::atol(argv[++i]);
    else if (is("--seed")) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (is("--repeat")) repeat = std::atol(argv[++i]);
    else if (is("--precision")) precision = argv[++i];
    else if (is("--roof")) roof = argv[++i];
    else if (is("--fp32-gemm")) fp32_gemm = argv[++i];
    else {
      std::fprintf(stderr, "vpdarts_bench: unknown argument '%s' (see the comment at the top of vpdarts_bench.cpp)\n", argv[i]);
      return 2;
    }
  }
  if (mode != "first" && mode != "second" && mode != "infer" && mode != "block") {
    std::fprintf(stderr, "vpdarts_bench: --mode is first, second, infer or block, not '%s'\n", mode.c_str());
    return 2;
  }
  if (steps < 1 || threads < 0 || batch < 0 || repeat < 1) {
    std::fprintf(stderr,
                 "vpdarts_bench: --steps must be >= 1, --threads >= 0 (0: the free cores), --batch >= 0, --repeat >= 1\n");
    return 2;
  }
  if (scaling_rate > 0) {
    print_scaling(scaling_rate);
    return 0;
  }
  if ((precision != "fp32" && precision != "bf16") || (!roof.empty() && roof != "fp32" && roof != "bf16")) {
    std::fprintf(stderr, "vpdarts_bench: --precision and --roof are fp32 or bf16\n");
    return 2;
  }
  if (fp32_gemm != "auto" && fp32_gemm != "eigen" && fp32_gemm != "onednn") {
    std::fprintf(stderr, "vpdarts_bench: --fp32-gemm is auto, eigen or onednn, not '%s'\n", fp32_gemm.c_str());
    return 2;
  }
  try {
    exec.fp32_products = fp32_gemm == "eigen"    ? vp::fp32_gemm::eigen
                         : fp32_gemm == "onednn" ? vp::fp32_gemm::onednn
                                                 : vp::fp32_gemm::automatic;
    exec.check("vpdarts_bench");
  } catch (const vp::error& e) {
    std::fprintf(stderr, "vpdarts_bench: %s\n", e.what());
    return 2;
  }
  const bool auto_threads = threads == 0;
  if (auto_threads) threads = vp::free_cores();  // as the tool's default: the cores other work leaves free
  omp_set_num_threads(static_cast<int>(threads));
  if (precision == "bf16" || roof == "bf16") {
    const vp::bf16_support s = vp::bf16_supported();
    if (!s.available) {
      std::fprintf(stderr, "vpdarts_bench: bf16 is not available: %s\n", s.reason.c_str());
      return 2;
    }
    std::fprintf(stderr, "vpdarts_bench: bf16 on oneDNN's %s kernels\n", s.kernel.c_str());
    if (precision == "bf16") exec.products = vp::precision::bf16;
  }
  if (!roof.empty()) return print_roof(roof, exec);
  std::fprintf(stderr, "vpdarts_bench: compiled for %s\n", std::string(vp::compiled_isa()).c_str());
  if (precision == "fp32")
    std::fprintf(stderr, "vpdarts_bench: float32 products on %s%s\n", vp::to_string(exec.fp32_engine()),
                 exec.fp32_products == vp::fp32_gemm::automatic
                     ? vp::text::cat(" (auto: ", vp::fp32_gemm_automatic().reason, ")").c_str() : "");
  const workload w = find_workload(workload_name);
  std::vector<long> batches = batch > 0 ? std::vector<long>{batch}
                                        : (mode == "infer" ? std::vector<long>{1, 64} : std::vector<long>{w.batch});
  try {
    for (long b : batches) {
      std::mt19937_64 rng(seed + 1);
      vp::vit<float> backbone(w.config, seed);
      std::vector<double> times;
      const int warmup = 2;
      if (mode == "block") {
        // one frozen block, forward and backward: `repeat` inputs of b images, one pass each
        vp::vit_block<float>& block = backbone.blocks.front();
        std::vector<vp::parameter<float>*> frozen;
        block.collect(frozen);
        for (vp::parameter<float>* p : frozen) p->freeze();
        std::vector<vp::parameter<float>> inputs;
        vp::init::engine irng(seed + 2);
        for (long r = 0; r < repeat; ++r) {
          inputs.emplace_back("x", b * w.config.tokens(), w.config.dim);
          vp::init::normal(inputs.back(), 1.0, irng);
        }
        vp::tape<float> t(exec);
        for (long i = 0; i < warmup + steps; ++i) {
          if (i == warmup) vp::detail::set_profiling(profiling);
          const auto start = std::chrono::steady_clock::now();
          t.reset();
          vp::var<float> loss;
          for (long r = 0; r < repeat; ++r) {
            const vp::var<float> l = vp::sum(block.forward(t, t.leaf(inputs[static_cast<std::size_t>(r)]), b));
            loss = r == 0 ? l : loss + l;
          }
          t.backward(loss);
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          if (i >= warmup) times.push_back(s);
        }
      } else if (mode == "infer") {
        vp::genotype g;
        for (long l = 0; l < w.config.depth; ++l) g.layers.push_back({op_names[static_cast<std::size_t>(l) % 4], {}});
        vp::prompted_vit<float> model(std::move(backbone), g, {.prompts = w.prompts, .seed = seed});
        const std::vector<vp::image_batch<float>> data{random_images(w.config, b, rng), random_images(w.config, b, rng)};
        vp::tape<float> t(exec);
        vp::no_grad<float> guard(t);
        for (long i = 0; i < warmup + steps; ++i) {
          if (i == warmup) vp::detail::set_profiling(profiling);  // the timed steps only
          const auto start = std::chrono::steady_clock::now();
          t.reset();
          model.logits(t, data[static_cast<std::size_t>(i % 2)], vp::grad_target::none);
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          if (i >= warmup) times.push_back(s);
        }
      } else {
        vp::prompted_vit<float> model(std::move(backbone), {.prompts = w.prompts, .seed = seed});
        vp::bilevel_options o;
        o.order = mode == "first" ? vp::darts_order::first : vp::darts_order::second;
        o.w.lr = 0.25 * static_cast<double>(b) / 256.0;  // the peer's BASE_LR, scaled by batch / 256
        o.execution = exec;
        vp::bilevel_optimizer<float, vp::default_ops> d(model, o, {}, dp);
        std::vector<vp::image_batch<float>> x;
        std::vector<std::vector<int>> y;
        const auto share = dp.share_of(b);  // this process's rows of every global batch
        std::vector<vp::index> rows(static_cast<std::size_t>(share.count));
        for (std::size_t r = 0; r < rows.size(); ++r) rows[r] = share.first + static_cast<vp::index>(r);
        for (int k = 0; k < 4; ++k) {  // val, train, val, train
          const auto all = random_images(w.config, b, rng);
          const auto labels = random_labels(w.config, b, rng);
          x.push_back(all.select(rows));
          y.emplace_back(labels.begin() + share.first, labels.begin() + share.first + share.count);
        }
        for (long i = 0; i < warmup + steps; ++i) {
          const std::size_t v = static_cast<std::size_t>((2 * i) % 4), tr = static_cast<std::size_t>((2 * i + 1) % 4);
          if (dp.active()) dp.comm()->barrier();
          if (i == warmup) vp::detail::set_profiling(profiling);  // the timed steps only
          const auto start = std::chrono::steady_clock::now();
          d.step(x[tr], y[tr], x[v], y[v]);
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          if (i >= warmup) times.push_back(s);
        }
        const auto& t = d.step_tape();
        const auto mib = [](std::size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); };
        std::fprintf(stderr,
                     "vpdarts_bench: tape memory held (MiB): values %.0f (peak in use %.0f), adjoints %.0f (peak %.0f), "
                     "working buffers %.0f (peak %.0f)\n",
                     mib(t.memory().capacity_bytes()), mib(t.memory().peak_bytes()), mib(t.adjoint_memory().capacity_bytes()),
                     mib(t.adjoint_memory().peak_bytes()), mib(t.temp_memory().capacity_bytes()),
                     mib(t.temp_memory().peak_bytes()));
      }
      if (profiling && dp.root()) print_profile(w.name, mode, b, times);
      vp::detail::set_profiling(false);
      std::sort(times.begin(), times.end());
      const double median = times.size() % 2 ? times[times.size() / 2]
                                              : 0.5 * (times[times.size() / 2 - 1] + times[times.size() / 2]);
      const double images = static_cast<double>(mode == "infer" ? b : mode == "block" ? b * repeat : 2 * b);
      const double gflops =
          (mode == "block" ? static_cast<double>(repeat) * block_flops(w.config, b) : step_flops(w.config, w.prompts, mode, b)) / 1e9;
      if (dp.root())
        std::printf("RESULT workload=%s mode=%s batch=%ld sec_per_step=%.4f images_per_s=%.1f gflops=%.2f gflops_per_s=%.1f "
                    "peak_rss_mb=%.0f precision=%s%s%s%s%s%s\n",
                    w.name.c_str(), mode.c_str(), b, median, images / median, gflops, gflops / median,
                    vp::report::peak_rss_mb(), precision.c_str(),
                    precision == "fp32" && exec.fp32_engine() == vp::fp32_gemm::onednn ? " fp32_gemm=onednn" : "",
                    exec.mlp == vp::mlp_memory::recompute ? " mlp=recompute" : "",
                    exec.attention == vp::attention_memory::recompute ? " qkv=recompute" : "",
                    mode == "block" ? vp::text::cat(" repeat=", repeat).c_str() : "",
                    dp.active() ? vp::text::cat(" processes=", dp.size(), " threads=", threads).c_str()
                                : (auto_threads ? vp::text::cat(" threads=auto:", threads).c_str() : ""));
      std::fflush(stdout);
    }
  } catch (const vp::error& e) {
    std::fprintf(stderr, "vpdarts_bench: %s\n", e.what());
    return 1;
  }
}
