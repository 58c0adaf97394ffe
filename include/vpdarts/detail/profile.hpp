#pragma once
// Where a step's time goes: a process-wide, opt-in profile of the kernels by kind (products of weights,
// attention's products, attention's softmax, LayerNorm, activations, bf16 conversions, fusion operators,
// the optimiser). A kernel's entry point opens a profile_scope of its kind; time is exclusive (a scope
// inside another, a product inside a fused LayerNorm-and-product, say, is taken out of the outer one's),
// and only scopes opened outside OpenMP parallel regions count, so the kinds add up to at most the
// wall time. Off, a scope costs one relaxed atomic load. vpdarts_bench --profile prints it.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace vpdarts::detail {

/// What a kernel does.
enum class profile_kind : std::size_t {
  weight_product,     ///< a product with a weight (Eigen's GEMM or oneDNN's matmul)
  attention_product,  ///< attention's Q K^T, P V and their backward products
  attention_rest,     ///< the rest of an attention kernel: the softmax and its backward, and the Eigen
                      ///< path's per-head products (made inside its parallel loop, they are not told apart)
  layer_norm,         ///< LayerNorm forward and backward
  activation,         ///< GELU / QuickGELU forward and backward
  conversion,         ///< float32 -> bf16 rounding of operands
  fusion,             ///< the fusion operators' pre and post
  optimiser,          ///< SGD and Adam steps
  count
};

/// The kinds' names, in profile_kind's order.
inline constexpr std::array<const char*, static_cast<std::size_t>(profile_kind::count)> profile_names{
    "weight products", "attention products", "attention, the rest", "LayerNorm", "activations",
    "bf16 conversions", "fusion operators", "optimiser"};

/// The totals so far, in nanoseconds and calls, per kind.
struct profile_totals {
  std::array<std::atomic<long long>, static_cast<std::size_t>(profile_kind::count)> ns{};
  std::array<std::atomic<long long>, static_cast<std::size_t>(profile_kind::count)> calls{};
  std::atomic<bool> on{false};
};

inline profile_totals& profile() {
  static profile_totals p;
  return p;
}

/// Turns the profile on (clearing its totals) or off (keeping them to be read).
inline void set_profiling(bool on) {
  profile_totals& p = profile();
  if (on) {
    for (auto& v : p.ns) v.store(0);
    for (auto& v : p.calls) v.store(0);
  }
  p.on.store(on, std::memory_order_relaxed);
}

/// Times its lifetime as `kind` (see the file's comment). A product opened inside an attention
/// scope counts as an attention product.
class profile_scope {
 public:
  explicit profile_scope(profile_kind kind) noexcept {
    if (!profile().on.load(std::memory_order_relaxed)) return;
#ifdef _OPENMP
    if (omp_in_parallel()) return;
#endif
    const auto now = clock::now();
    outer_ = current();
    if (outer_ != nullptr) {
      if (kind == profile_kind::weight_product &&
          (outer_->kind_ == profile_kind::attention_rest || outer_->kind_ == profile_kind::attention_product))
        kind = profile_kind::attention_product;
      outer_->pause(now);
    }
    kind_ = kind;
    start_ = now;
    active_ = true;
    current() = this;
    profile().calls[static_cast<std::size_t>(kind_)].fetch_add(1, std::memory_order_relaxed);
  }
  profile_scope(const profile_scope&) = delete;
  profile_scope& operator=(const profile_scope&) = delete;
  ~profile_scope() {
    if (!active_) return;
    const auto now = clock::now();
    pause(now);
    current() = outer_;
    if (outer_ != nullptr) outer_->start_ = now;
  }

 private:
  using clock = std::chrono::steady_clock;
  static profile_scope*& current() noexcept {
    thread_local profile_scope* open = nullptr;
    return open;
  }
  void pause(clock::time_point now) noexcept {
    profile().ns[static_cast<std::size_t>(kind_)].fetch_add(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - start_).count(), std::memory_order_relaxed);
    start_ = now;
  }

  profile_kind kind_ = profile_kind::weight_product;
  clock::time_point start_{};
  profile_scope* outer_ = nullptr;
  bool active_ = false;
};

}  // namespace vpdarts::detail
