#pragma once
/// \file
/// Run-time choice between a portable build of a program and ones compiled for
/// x86-64-v3 (AVX2 + FMA) and x86-64-v4 (AVX-512).
///
/// vpdarts is header-only, so the instruction set is the one the user's program
/// is compiled for. Eigen's GEMM kernels with AVX2 + FMA run about twice as fast
/// as the SSE2 ones of a default x86-64 build, but a program compiled with
/// `-march=x86-64-v3` dies with SIGILL on an older CPU. The CMake function
/// `vpdarts_add_dispatched_executable(name sources...)` therefore builds the
/// program three times: `name` (portable), `name-x86-64-v3` and `name-x86-64-v4`
/// (AVX-512: the element-wise passes, LayerNorm, softmax, GELU and the bf16
/// rounding in 16-float vectors), installed side by side. The portable one
/// calls `exec_best_variant(argv)` first thing in `main`; it replaces itself
/// with the highest sibling the CPU runs.
///
/// Set the environment variable `VPDARTS_DISPATCH=off` to keep the portable
/// build, `VPDARTS_DISPATCH=v3` to go no higher than x86-64-v3 (for example to
/// compare them).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#include <unistd.h>
#endif

namespace vpdarts {

/// The instruction-set level this translation unit was compiled for:
/// "x86-64-v4" when AVX-512 F, BW, CD, DQ and VL are enabled at compile time,
/// "x86-64-v3" with AVX2 and FMA, "x86-64-v2" with SSE4.2, "native/other" for
/// any other target, else "x86-64".
inline constexpr std::string_view compiled_isa() noexcept {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512CD__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
  return "x86-64-v4";
#elif defined(__AVX2__) && defined(__FMA__)
  return "x86-64-v3";
#elif defined(__SSE4_2__)
  return "x86-64-v2";
#elif defined(__x86_64__)
  return "x86-64";
#else
  return "native/other";
#endif
}

/// True when the CPU this process runs on supports x86-64-v3 (AVX, AVX2, BMI1,
/// BMI2, F16C, FMA, LZCNT, MOVBE). Always false off x86-64.
inline bool cpu_supports_x86_64_v3() noexcept {
#if defined(__x86_64__) && defined(__clang__)
  // clang (14) knows no "x86-64-v3" level: ask for its features one by one
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
         __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("fma");  // F16C, MOVBE, LZCNT come with AVX2 on every such CPU
#elif defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("x86-64-v3");
#else
  return false;
#endif
}

/// True when the CPU this process runs on supports x86-64-v4 (x86-64-v3 and
/// AVX-512 F, BW, CD, DQ, VL). Always false off x86-64.
inline bool cpu_supports_x86_64_v4() noexcept {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return cpu_supports_x86_64_v3() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

/// If this program was compiled for plain x86-64, `VPDARTS_DISPATCH` is not
/// "off", and an executable named `<this program>-x86-64-v4` (when the CPU
/// supports x86-64-v4) or `<this program>-x86-64-v3` (when it supports
/// x86-64-v3) sits next to it, replace the process with the highest of them,
/// passing `argv` unchanged. Otherwise, or when the exec fails, return and let
/// the caller go on with the portable build. Never throws.
///
/// Call it first thing in `main`: `vpdarts::exec_best_variant(argv);`.
inline void exec_best_variant(char** argv) noexcept {
#if defined(__linux__) && defined(__x86_64__) && !(defined(__AVX2__) && defined(__FMA__))
  const char* env = std::getenv("VPDARTS_DISPATCH");
  const std::string_view choice = env != nullptr ? env : "";
  if (choice == "off" || !cpu_supports_x86_64_v3()) return;
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return;
  const std::string me(self, static_cast<std::size_t>(n));
  const struct {
    const char* suffix;
    bool runs;
  } levels[] = {{"-x86-64-v4", choice != "v3" && cpu_supports_x86_64_v4()}, {"-x86-64-v3", true}};
  for (const auto& level : levels) {
    const std::string sibling = me + level.suffix;
    if (level.runs && ::access(sibling.c_str(), X_OK) == 0) ::execv(sibling.c_str(), argv);  // returns only on failure
  }
#else
  (void)argv;
#endif
}

/// CPU time of one CPU from /proc/stat, in ticks: busy (user, nice, system, irq, softirq, steal) and all.
struct cpu_ticks {
  unsigned long long busy = 0, total = 0;
};

/// The /proc/stat line of every CPU ("cpuN ..."), indexed by N; CPUs missing from the file stay zero.
/// Empty when the file cannot be read. Never throws.
inline std::vector<cpu_ticks> read_cpu_ticks() noexcept {
  std::vector<cpu_ticks> out;
  try {
    std::ifstream in("/proc/stat");
    std::string line;
    while (std::getline(in, line)) {
      if (line.size() < 4 || line.compare(0, 3, "cpu") != 0 || line[3] < '0' || line[3] > '9') continue;
      std::istringstream f(line.substr(3));
      std::size_t cpu = 0;
      unsigned long long v[8] = {};
      if (!(f >> cpu) || cpu > 65535) continue;
      for (auto& x : v) f >> x;  // user nice system idle iowait irq softirq steal (older kernels: fewer, left 0)
      if (out.size() <= cpu) out.resize(cpu + 1);
      out[cpu].busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
      out[cpu].total = out[cpu].busy + v[3] + v[4];
    }
  } catch (...) {
    out.clear();
  }
  return out;
}

/// The CPUs this process may run on that other work leaves free: the size of its CPU set
/// (sched_getaffinity) minus the CPU time the rest of the machine took on them over `window`
/// (measured from /proc/stat while this thread sleeps, rounded to whole cores), at least 1.
/// A plain busy loop beside a 2-core job gives 1. Where the figures cannot be read (not
/// Linux, no /proc) it returns the size of the CPU set (elsewhere: the hardware's threads). Costs `window` of wall time.
///
/// The tool uses it for its default thread count: on a machine whose cores are shared,
/// threads that split a product evenly wait at every barrier for the one that shares its core
/// (docs/performance.md, "A machine that is not yours alone").
inline int free_cores(std::chrono::milliseconds window = std::chrono::milliseconds(100)) noexcept {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  const int mine = CPU_COUNT(&set);
  if (mine <= 1) return 1;
  const std::vector<cpu_ticks> a = read_cpu_ticks();
  if (a.empty()) return mine;
  std::this_thread::sleep_for(window);
  const std::vector<cpu_ticks> b = read_cpu_ticks();
  double taken = 0;
  for (std::size_t c = 0; c < a.size() && c < b.size() && c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &set) || b[c].total <= a[c].total) continue;
    taken += static_cast<double>(b[c].busy - std::min(b[c].busy, a[c].busy)) / static_cast<double>(b[c].total - a[c].total);
  }
  const int free = mine - static_cast<int>(std::floor(taken + 0.5));
  return free < 1 ? 1 : (free > mine ? mine : free);
#else
  (void)window;
  return std::max(1u, std::thread::hardware_concurrency());
#endif
}

}  // namespace vpdarts
