#pragma once
/// \file
/// Run-time choice between a portable build of a program and one compiled for
/// x86-64-v3 (AVX2 + FMA).
///
/// vpdarts is header-only, so the instruction set is the one the user's program
/// is compiled for. Eigen's GEMM kernels with AVX2 + FMA run about twice as fast
/// as the SSE2 ones of a default x86-64 build, but a program compiled with
/// `-march=x86-64-v3` dies with SIGILL on an older CPU. The CMake function
/// `vpdarts_add_dispatched_executable(name sources...)` therefore builds the
/// program twice: `name` (portable) and `name-x86-64-v3`, installed side by
/// side. The portable one calls `exec_best_variant(argv)` first thing in
/// `main`; on a CPU with x86-64-v3 it replaces itself with its sibling.
///
/// Set the environment variable `VPDARTS_DISPATCH=off` to keep the portable
/// build (for example to compare the two).

#include <cstdlib>
#include <string>
#include <string_view>

#if defined(__linux__)
#include <unistd.h>
#endif

namespace vpdarts {

/// The instruction-set level this translation unit was compiled for:
/// "x86-64-v3" when AVX2 and FMA are enabled at compile time, "x86-64-v2" with
/// SSE4.2, "native/other" for any other target, else "x86-64".
inline constexpr std::string_view compiled_isa() noexcept {
#if defined(__AVX2__) && defined(__FMA__)
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

/// If this program was compiled for plain x86-64, the CPU supports x86-64-v3,
/// `VPDARTS_DISPATCH` is not "off", and an executable named
/// `<this program>-x86-64-v3` sits next to it, replace the process with that
/// program, passing `argv` unchanged. Otherwise, or when the exec fails, return
/// and let the caller go on with the portable build. Never throws.
///
/// Call it first thing in `main`: `vpdarts::exec_best_variant(argv);`.
inline void exec_best_variant(char** argv) noexcept {
#if defined(__linux__) && defined(__x86_64__) && !(defined(__AVX2__) && defined(__FMA__))
  if (const char* env = std::getenv("VPDARTS_DISPATCH"); env != nullptr && std::string_view(env) == "off") return;
  if (!cpu_supports_x86_64_v3()) return;
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return;
  std::string sibling(self, static_cast<std::size_t>(n));
  sibling += "-x86-64-v3";
  if (::access(sibling.c_str(), X_OK) != 0) return;
  ::execv(sibling.c_str(), argv);  // returns only on failure: keep the portable build
#else
  (void)argv;
#endif
}

}  // namespace vpdarts
