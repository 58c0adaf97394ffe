#pragma once
/// @file execution.hpp
/// How a tape runs the frozen backbone's kernels: the precision of its products, the library of its
/// float32 products, and what its fused blocks keep for backward. Every tape carries one
/// execution_config (tape::configure, or the `execution` field of the options of search, train,
/// linear_probe, ...); there is no process-wide setting, so two models with different settings run
/// side by side in one process.
///
/// Precision. Under precision::bf16 a product whose weight needs no gradient (the frozen backbone's
/// patch embedding, qkv, proj, fc1 and fc2, forward and the input-gradient product of backward)
/// rounds both operands to bf16 and accumulates in float32 through oneDNN (AMX where the CPU has it,
/// else AVX512-BF16); so do a frozen block's attention products (Q K^T and P V, and their four
/// backward products). The bf16 copy of a frozen weight is made once and kept until the parameter
/// changes. Everything else stays float32: LayerNorm, softmax, GELU (their outputs are rounded to
/// bf16 only where they are a bf16 product's operand), the attention of a block whose weights train
/// and cross_attention's, the fusion operators, alpha, the head, the loss, every trainable product,
/// the gradients and the optimisers' state. Models in double are never rounded. This is what
/// PyTorch's bf16 autocast does on a CPU, restricted to the products of weights that do not train
/// (docs/precision.md lists every product). bf16 needs the library built with oneDNN (the CMake
/// target `vpdarts::bf16`) and a CPU with AVX512-BF16 or AMX; asking for it where either is missing
/// throws config_error saying which; nothing falls back silently.
///
/// Float32 products of frozen weights run on Eigen's GEMM or, in a build with oneDNN, on oneDNN's
/// float32 matmul (fp32_gemm). `automatic` takes oneDNN wherever the build has it (its kernels are
/// chosen for the CPU at run time, AVX-512 included) and Eigen elsewhere. Both are float32 products
/// that sum in another order, so they differ by float32 rounding.
///
///     vpdarts::tape<float> t({.products = vpdarts::precision::bf16});
///     vpdarts::search_options o;  o.bilevel.execution.products = vpdarts::precision::bf16;

#include <string>

#include "../detail/format.hpp"
#include "../error.hpp"
#include "onednn_matmul.hpp"

namespace vpdarts {

/// The precision of the frozen products (see the file's comment).
enum class precision {
  fp32,  ///< float32 products (the default), on Eigen or oneDNN as fp32_gemm says
  bf16,  ///< frozen products in bf16 with float32 accumulation (oneDNN)
};

/// "fp32" or "bf16".
inline const char* to_string(precision p) noexcept { return p == precision::bf16 ? "bf16" : "fp32"; }

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

/// What layer_norm_mlp keeps of the MLP's hidden layer for backward, when every weight is constant.
enum class mlp_memory {
  keep,       ///< the hidden layer before the activation (R x M values; in bf16 when the products run in bf16): the fastest step, the default
  recompute,  ///< only the LayerNorm statistics; backward computes LayerNorm and fc1 again (docs/performance.md)
};

/// What layer_norm_attention keeps of qkv for backward, when every weight is constant.
enum class attention_memory {
  keep,       ///< qkv ((B*T) x 3E values; in bf16 when attention's products run in bf16): the fastest step, the default
  recompute,  ///< only the LayerNorm statistics; backward computes LayerNorm and the qkv product again (docs/performance.md)
};

/// What this build and this CPU offer for bf16.
struct bf16_support {
  bool available = false;  ///< bf16 products can run here
  std::string kernel;      ///< the instructions oneDNN uses: "AMX", "AVX512-BF16" (empty when unavailable)
  std::string reason;      ///< why not, when unavailable
};

/// Whether bf16 products can run in this program on this CPU, and which instructions they use.
/// oneDNN's own view of the CPU decides (it honours ONEDNN_MAX_CPU_ISA, so
/// `ONEDNN_MAX_CPU_ISA=AVX2` shows the refusal on any machine).
inline bf16_support bf16_supported() {
  bf16_support s;
  s.kernel = kernels::onednn::bf16_kernel();
  s.available = !s.kernel.empty();
  if (s.available) return s;
  s.reason = kernels::onednn::built
                 ? "this CPU (as oneDNN sees it) has neither AVX512-BF16 nor AMX, so bf16 products would be emulated "
                   "and slower than float32"
                 : "vpdarts was built without oneDNN (link the CMake target vpdarts::bf16, which needs Debian's "
                   "libdnnl-dev, or define VPDARTS_WITH_DNNL and link -ldnnl)";
  return s;
}

/// The widest vector instructions oneDNN's kernels use on this CPU: "AVX-512", "AVX2", "SSE4.1"
/// (empty in a build without oneDNN). oneDNN honours ONEDNN_MAX_CPU_ISA.
inline std::string onednn_cpu_isa() { return kernels::onednn::cpu_isa(); }

/// What fp32_gemm::automatic picks in this program on this CPU, and why.
struct fp32_gemm_choice {
  fp32_gemm gemm = fp32_gemm::eigen;  ///< eigen or onednn
  std::string reason;                 ///< one line: why
};

/// What fp32_gemm::automatic resolves to in this program: oneDNN in a build with it (its kernels,
/// chosen for the CPU at run time, were as fast as Eigen's or faster on every workload measured,
/// docs/performance.md), else Eigen.
inline constexpr fp32_gemm fp32_gemm_automatic_engine = kernels::onednn::built ? fp32_gemm::onednn : fp32_gemm::eigen;

/// fp32_gemm_automatic_engine, and why.
inline fp32_gemm_choice fp32_gemm_automatic() {
  if (!kernels::onednn::built) return {fp32_gemm_automatic_engine, "vpdarts was built without oneDNN"};
  return {fp32_gemm_automatic_engine, "vpdarts was built with oneDNN, whose " + onednn_cpu_isa() +
                                          " float32 kernels run the frozen products at least as fast as Eigen's"};
}

/// How a tape runs its kernels (see the file's comment). The default is float32 products on the
/// automatic engine, keeping qkv and the MLP's hidden layer.
struct execution_config {
  precision products = precision::fp32;         ///< the precision of the frozen products
  fp32_gemm fp32_products = fp32_gemm::automatic;  ///< the library of the frozen float32 products
  mlp_memory mlp = mlp_memory::keep;            ///< what a frozen block keeps of its MLP
  attention_memory attention = attention_memory::keep;  ///< what a frozen block keeps of qkv

  /// The library that runs the frozen float32 products: eigen or onednn (automatic resolved).
  fp32_gemm fp32_engine() const noexcept {
    return fp32_products != fp32_gemm::automatic ? fp32_products : fp32_gemm_automatic_engine;
  }

  /// @throws config_error naming `who` for bf16 where bf16_supported() says it is unavailable (with
  /// its reason), or oneDNN float32 products in a build without oneDNN.
  void check(const char* who) const {
    if (products == precision::bf16) {
      const bf16_support s = bf16_supported();
      if (!s.available) throw config_error(detail::cat(who, ": bf16 is not available: ", s.reason));
    }
    if (fp32_products == fp32_gemm::onednn && !kernels::onednn::built)
      throw config_error(detail::cat(who, ": oneDNN float32 products are not available: vpdarts was built without "
                                          "oneDNN (link the CMake target vpdarts::bf16, which needs Debian's libdnnl-dev)"));
  }

  /// One line for logs and metrics: "bf16", "fp32 (onednn)", with " mlp=recompute" / " qkv=recompute".
  std::string describe() const {
    std::string s = products == precision::bf16 ? "bf16" : detail::cat("fp32 (", to_string(fp32_engine()), ")");
    if (mlp == mlp_memory::recompute) s += " mlp=recompute";
    if (attention == attention_memory::recompute) s += " qkv=recompute";
    return s;
  }

  bool operator==(const execution_config&) const = default;
};

}  // namespace vpdarts
