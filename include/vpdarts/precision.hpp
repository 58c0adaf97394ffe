#pragma once
/// @file precision.hpp
/// The precision of the frozen backbone's matrix products: float32 (the
/// default) or bf16 mixed precision on the CPU's matrix units.
///
/// In bf16 mode a product whose weight needs no gradient (the frozen
/// backbone's patch embedding, qkv, proj, fc1 and fc2, forward and the
/// input-gradient product of backward) rounds both operands to bf16 and
/// accumulates in float32 through oneDNN (AMX where the CPU has it, else
/// AVX512-BF16); so do a frozen block's attention products (Q K^T and P V,
/// and their four backward products). The bf16 copy of a frozen weight is
/// made once and kept until the parameter changes. Everything else stays
/// float32: LayerNorm, softmax, GELU (their outputs are rounded to bf16 only
/// where they are a bf16 product's operand), the attention of a block whose
/// weights train and cross_attention's, the fusion operators, alpha, the
/// head, the loss, every trainable product, the gradients and the
/// optimisers' state. Models in double are never rounded. This is what
/// PyTorch's bf16 autocast does on a CPU, restricted to the products of
/// weights that do not train (docs/precision.md lists every product).
///
/// The bf16 path needs the library built with oneDNN (the CMake target
/// `vpdarts::bf16`, which defines VPDARTS_WITH_DNNL for the whole program)
/// and a CPU with AVX512-BF16 or AMX. Asking for bf16 where either is missing
/// throws config_error saying which; nothing falls back silently.
///
///     vpdarts::set_matmul_precision(vpdarts::precision::bf16);   // or a scope:
///     { vpdarts::precision_scope bf16(vpdarts::precision::bf16); search(...); }
///
/// In float32 the same frozen products run on Eigen's GEMM or, in a build with
/// oneDNN, on oneDNN's float32 matmul: fp32_gemm. The default, `automatic`,
/// takes oneDNN wherever the build has it (oneDNN picks its kernels for the CPU
/// at run time, AVX-512 included, while the Eigen of vpdarts's fastest build
/// stops at AVX2) and Eigen elsewhere. Both are float32 products; they sum in
/// another order, so they differ by float32 rounding (docs/precision.md).

#include <atomic>
#include <string>

#include "error.hpp"

#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

namespace vpdarts {

/// The precision of the frozen products (see the file's comment).
enum class precision {
  fp32,  ///< float32 products (the default), on Eigen or oneDNN as fp32_gemm says
  bf16,  ///< frozen products in bf16 with float32 accumulation (oneDNN)
};

/// "fp32" or "bf16".
inline const char* to_string(precision p) noexcept { return p == precision::bf16 ? "bf16" : "fp32"; }

/// What this build and this CPU offer for bf16.
struct bf16_support {
  bool available = false;  ///< bf16 products can run here
  std::string kernel;      ///< the instructions oneDNN uses: "AMX", "AVX512-BF16" (empty when unavailable)
  std::string reason;      ///< why not, when unavailable
};

/// Whether bf16 products can run in this program on this CPU, and which
/// instructions they use. oneDNN's own view of the CPU decides (it honours
/// ONEDNN_MAX_CPU_ISA, so `ONEDNN_MAX_CPU_ISA=AVX2` shows the refusal on any machine).
inline bf16_support bf16_supported() {
  bf16_support s;
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
  const unsigned isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
  // oneDNN's ISA values are bit masks, each one containing the ones it extends
  const auto has = [isa](dnnl_cpu_isa_t want) { return (isa & static_cast<unsigned>(want)) == static_cast<unsigned>(want); };
  if (has(dnnl_cpu_isa_avx512_core_amx)) s.kernel = "AMX";
  else if (has(dnnl_cpu_isa_avx512_core_bf16)) s.kernel = "AVX512-BF16";
  s.available = !s.kernel.empty();
  if (!s.available)
    s.reason = "this CPU (as oneDNN sees it) has neither AVX512-BF16 nor AMX, so bf16 products would be emulated "
               "and slower than float32";
#else
  s.reason = "vpdarts was built without oneDNN (link the CMake target vpdarts::bf16, which needs Debian's "
             "libdnnl-dev, or define VPDARTS_WITH_DNNL and link -ldnnl)";
#endif
  return s;
}

namespace detail {
inline std::atomic<precision>& matmul_precision_state() {
  static std::atomic<precision> p{precision::fp32};
  return p;
}
}  // namespace detail

/// The precision of the frozen products, process-wide.
inline precision matmul_precision() noexcept { return detail::matmul_precision_state().load(std::memory_order_relaxed); }

/// Sets the precision of the frozen products for the whole process (every tape, every thread).
/// @throws config_error for bf16 where bf16_supported() says it is unavailable, with its reason.
inline void set_matmul_precision(precision p) {
  if (p == precision::bf16) {
    const bf16_support s = bf16_supported();
    if (!s.available) throw config_error("set_matmul_precision: bf16 is not available: " + s.reason);
  }
  detail::matmul_precision_state().store(p, std::memory_order_relaxed);
}

/// Which library runs the float32 products of frozen weights (see the file's comment).
enum class fp32_gemm {
  automatic,  ///< oneDNN where the build has it, else Eigen (the default)
  eigen,      ///< Eigen's GEMM (the only one a build without oneDNN has)
  onednn,     ///< oneDNN's float32 matmul (a build with oneDNN)
};

/// "auto", "eigen" or "onednn".
inline const char* to_string(fp32_gemm g) noexcept {
  return g == fp32_gemm::eigen ? "eigen" : g == fp32_gemm::onednn ? "onednn" : "auto";
}

/// What `automatic` picks in this program on this CPU, and why.
struct fp32_gemm_choice {
  fp32_gemm gemm = fp32_gemm::eigen;  ///< eigen or onednn
  std::string reason;                 ///< one line: why
};

/// The widest vector instructions oneDNN's kernels use on this CPU: "AVX-512", "AVX2", "SSE4.1"
/// (empty in a build without oneDNN). oneDNN honours ONEDNN_MAX_CPU_ISA.
inline std::string onednn_cpu_isa() {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
  const unsigned isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
  const auto has = [isa](dnnl_cpu_isa_t want) { return (isa & static_cast<unsigned>(want)) == static_cast<unsigned>(want); };
  if (has(dnnl_cpu_isa_avx512_core)) return "AVX-512";
  if (has(dnnl_cpu_isa_avx2)) return "AVX2";
  return "SSE4.1";
#else
  return {};
#endif
}

/// What fp32_gemm::automatic resolves to in this program: oneDNN in a build with it (its kernels,
/// chosen for the CPU at run time, were as fast as Eigen's or faster on every workload measured,
/// docs/performance.md), else Eigen.
inline fp32_gemm_choice fp32_gemm_automatic() {
  fp32_gemm_choice c;
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
  c.gemm = fp32_gemm::onednn;
  c.reason = "vpdarts was built with oneDNN, whose " + onednn_cpu_isa() +
             " float32 kernels run the frozen products at least as fast as Eigen's";
#else
  c.reason = "vpdarts was built without oneDNN";
#endif
  return c;
}

namespace detail {
inline std::atomic<fp32_gemm>& fp32_gemm_state() {
  static std::atomic<fp32_gemm> g{fp32_gemm::automatic};
  return g;
}
inline fp32_gemm fp32_gemm_automatic_cached() {
  static const fp32_gemm g = fp32_gemm_automatic().gemm;
  return g;
}
}  // namespace detail

/// The float32 GEMM setting, process-wide (automatic until set).
inline fp32_gemm fp32_gemm_setting() noexcept { return detail::fp32_gemm_state().load(std::memory_order_relaxed); }

/// The library that runs the frozen float32 products now: eigen or onednn.
inline fp32_gemm fp32_gemm_in_use() {
  const fp32_gemm g = fp32_gemm_setting();
  return g == fp32_gemm::automatic ? detail::fp32_gemm_automatic_cached() : g;
}

/// Sets the float32 GEMM for the whole process.
/// @throws config_error for onednn in a build without oneDNN.
inline void set_fp32_gemm(fp32_gemm g) {
#if !(defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL)
  if (g == fp32_gemm::onednn)
    throw config_error("set_fp32_gemm: oneDNN is not available: vpdarts was built without oneDNN (link the CMake "
                       "target vpdarts::bf16, which needs Debian's libdnnl-dev)");
#endif
  detail::fp32_gemm_state().store(g, std::memory_order_relaxed);
}

/// Sets the float32 GEMM for the scope's lifetime and restores the previous setting.
class fp32_gemm_scope {
 public:
  /// @throws config_error as set_fp32_gemm does.
  explicit fp32_gemm_scope(fp32_gemm g) : previous_(fp32_gemm_setting()) { set_fp32_gemm(g); }
  fp32_gemm_scope(const fp32_gemm_scope&) = delete;
  fp32_gemm_scope& operator=(const fp32_gemm_scope&) = delete;
  ~fp32_gemm_scope() { detail::fp32_gemm_state().store(previous_, std::memory_order_relaxed); }

 private:
  fp32_gemm previous_;
};

/// Sets the precision for the scope's lifetime and restores the previous one.
class precision_scope {
 public:
  /// @throws config_error as set_matmul_precision does.
  explicit precision_scope(precision p) : previous_(matmul_precision()) { set_matmul_precision(p); }
  precision_scope(const precision_scope&) = delete;
  precision_scope& operator=(const precision_scope&) = delete;
  ~precision_scope() { detail::matmul_precision_state().store(previous_, std::memory_order_relaxed); }

 private:
  precision previous_;
};

}  // namespace vpdarts
