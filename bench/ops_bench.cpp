// Forward + backward of the tape's heavy ops at the shapes of the toy workload's (docs/method.md, section 7)
// workload (batch 32, T = 73 tokens with 8 prompts, D = 192, 3 heads, MLP 768),
// next to Eigen's plain SGEMM measured in the same run.
//
//   vpdarts_ops_bench [--benchmark_filter=...]      (threads: OMP_NUM_THREADS, default 2)
//
// FLOPs count matmul work only (2*M*N*K per product) as the PyTorch peer
// does; LayerNorm and GELU are memory-bound, so they report elements/s and
// their nominal FLOP rate (LayerNorm 8 + 10 FLOPs per element forward +
// backward, GELU 20 + 25 counting erf and exp as 10 each).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <vpdarts/vpdarts.hpp>

namespace vp = vpdarts;

namespace {

constexpr vp::index batch = 32, tokens = 73, dim = 192, heads = 3, mlp = 768;
constexpr vp::index rows = batch * tokens;
double g_gemm_flops_per_s = 0;

vp::matrix<float> randm(vp::index r, vp::index c, float s = 0.1f) {
  vp::matrix<float> m = vp::matrix<float>::Random(r, c);
  return m * s;
}

// Sets the FLOP/s counter and `of_gemm`, the fraction of the GEMM rate measured at start-up.
void report(benchmark::State& st, double flops_per_iter, std::chrono::steady_clock::time_point start) {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double rate = flops_per_iter * static_cast<double>(st.iterations()) / seconds;
  st.counters["GFLOP/s"] = rate / 1e9;
  st.counters["of_gemm"] = rate / g_gemm_flops_per_s;
}

// Eigen's own SGEMM at the qkv shape: the roof for everything else.
void bm_eigen_gemm(benchmark::State& st) {
  const vp::matrix<float> a = randm(rows, dim), b = randm(dim, 3 * dim);
  vp::matrix<float> c(rows, 3 * dim);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : st) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  report(st, 2.0 * rows * dim * 3 * dim, start);
}

// linear with a frozen weight and a trainable input: forward + dX.
void bm_linear(benchmark::State& st) {
  const vp::index out = st.range(0);
  vp::parameter<float> x("x", randm(rows, dim)), w("w", randm(out, dim), false), b("b", randm(1, out), false);
  vp::tape<float> t;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : st) {
    t.reset();
    auto y = vp::linear(t.leaf(x), t.leaf(w), t.leaf(b));
    t.backward(vp::sum(y));
  }
  report(st, 2.0 * 2.0 * rows * dim * out, start);
}

void bm_attention(benchmark::State& st) {
  vp::parameter<float> qkv("qkv", randm(rows, 3 * dim, 1.f));
  vp::tape<float> t;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : st) {
    t.reset();
    t.backward(vp::sum(vp::attention(t.leaf(qkv), batch, heads)));
  }
  const double product = 2.0 * batch * heads * tokens * tokens * (dim / heads);
  report(st, 6 * product, start);  // forward QK^T, AV; backward dV, dA, dQ, dK
}

void bm_layer_norm(benchmark::State& st) {
  vp::parameter<float> x("x", randm(rows, dim, 1.f)), g("g", randm(1, dim)), b("b", randm(1, dim));
  vp::tape<float> t;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : st) {
    t.reset();
    t.backward(vp::sum(vp::layer_norm(t.leaf(x), t.leaf(g), t.leaf(b))));
  }
  report(st, 18.0 * rows * dim, start);
  st.SetItemsProcessed(st.iterations() * rows * dim);
}

void bm_gelu(benchmark::State& st) {
  vp::parameter<float> x("x", randm(rows, mlp, 1.f));
  vp::tape<float> t;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : st) {
    t.reset();
    t.backward(vp::sum(vp::gelu(t.leaf(x))));
  }
  report(st, 45.0 * rows * mlp, start);
  st.SetItemsProcessed(st.iterations() * rows * mlp);
}

double measure_gemm() {
  const vp::matrix<float> a = randm(rows, dim), b = randm(dim, 3 * dim);
  vp::matrix<float> c(rows, 3 * dim);
  c.noalias() = a * b;
  int reps = 0;
  const auto start = std::chrono::steady_clock::now();
  double seconds = 0;
  do {
    c.noalias() = a * b;
    ++reps;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (seconds < 0.5);
  benchmark::DoNotOptimize(c.data());
  return 2.0 * rows * dim * 3 * dim * reps / seconds;
}

}  // namespace

BENCHMARK(bm_eigen_gemm)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_linear)->Arg(3 * dim)->Arg(mlp)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_attention)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_layer_norm)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_gelu)->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  vpdarts::exec_best_variant(argv);
  setenv("OMP_NUM_THREADS", "2", 0);
  g_gemm_flops_per_s = measure_gemm();
  std::printf("Eigen SGEMM %ldx%ldx%ld: %.1f GFLOP/s (threads: %d, %s); of_gemm below is each op's rate over this one\n",
              static_cast<long>(rows), static_cast<long>(dim), static_cast<long>(3 * dim), g_gemm_flops_per_s / 1e9,
              Eigen::nbThreads(), std::string(vpdarts::compiled_isa()).c_str());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
