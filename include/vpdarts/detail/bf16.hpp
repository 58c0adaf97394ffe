#pragma once
// bf16 values: float32 -> bf16 rounding (to nearest, ties to even; NaN stays
// NaN), and the cached bf16 copy a frozen parameter keeps of its value. No
// oneDNN here: the products are in kernels/onednn.hpp.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <bit>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "../fwd.hpp"
#include "parallel.hpp"
#include "profile.hpp"

namespace vpdarts::detail {

/// f rounded to the nearest bf16 (ties to even); a NaN stays a (quiet) NaN, infinities stay. Written
/// without branches, so that a loop of it becomes vector code.
inline std::uint16_t to_bf16(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t quiet = (u >> 16) | 0x40u;
  return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

/// The float a bf16 value stands for (exact).
inline float from_bf16(std::uint16_t h) noexcept { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }

/// out[i] = to_bf16(in[i]) for i in [0, n) (in float, or another type converted to float first), on the
/// calling thread, as vector code.
template <class T>
void to_bf16_serial(const T* in, std::uint16_t* out, std::size_t n) noexcept {
  VPDARTS_SIMD
  for (std::size_t i = 0; i < n; ++i) out[i] = to_bf16(static_cast<float>(in[i]));
}

/// out[i] = to_bf16(in[i]) for i in [0, n), over the OpenMP threads for large n.
inline void to_bf16(const float* in, std::uint16_t* out, std::size_t n) {
  detail::profile_scope profiled(detail::profile_kind::conversion);
  constexpr index chunk = index{1} << 16;
  parallel_chunks(static_cast<index>(n), chunk, [&](index first, index count) {
    to_bf16_serial(in + first, out + first, static_cast<std::size_t>(count));
  });
}

/// out[i] = from_bf16(in[i]) for i in [0, n) (as float, or as T), over the OpenMP threads for large n.
template <class T>
void from_bf16(const std::uint16_t* in, T* out, std::size_t n) {
  constexpr index chunk = index{1} << 16;
  parallel_chunks(static_cast<index>(n), chunk, [&](index first, index count) {
    VPDARTS_SIMD
    for (index i = first; i < first + count; ++i) out[i] = static_cast<T>(from_bf16(in[i]));
  });
}

/// How many times a weight was converted to bf16 in this process (tests check
/// that a warm step converts nothing).
inline std::atomic<std::uint64_t>& bf16_weight_conversions() {
  static std::atomic<std::uint64_t> n{0};
  return n;
}

/// The bf16 copies of a parameter's value, rebuilt when the parameter's version
/// moved: the plain row-major one, and copies laid out for a matrix unit
/// (oneDNN's blocked weight layouts, made by the caller and told apart by an
/// opaque key). Copying a parameter gives the copy an empty cache.
struct bf16_cache {
  bf16_cache() = default;
  bf16_cache(const bf16_cache&) : bf16_cache() {}
  bf16_cache& operator=(const bf16_cache&) {
    std::lock_guard<std::mutex> hold(*lock);
    forget();
    return *this;
  }

  /// The plain bf16 copy of `n` values at `src` of version `v`, converting when stale.
  const std::uint16_t* get(const float* src, std::size_t n, std::uint64_t v) {
    std::lock_guard<std::mutex> hold(*lock);
    refresh(src, n, v);
    if (values.size() != n) {
      values.resize(n);
      to_bf16(src, values.data(), n);
      ++bf16_weight_conversions();
    }
    return values.data();
  }

  /// The copy of `bytes` bytes known by `key` (a layout's description), made by `make(dst)`
  /// the first time it is asked for at this version. At most four layouts are kept.
  template <class Make>
  const std::byte* laid_out(const float* src, std::size_t n, std::uint64_t v, const std::byte* key,
                            std::size_t key_size, std::size_t bytes, Make&& make) {
    std::lock_guard<std::mutex> hold(*lock);
    refresh(src, n, v);
    for (const layout& l : layouts)
      if (l.key.size() == key_size && std::equal(l.key.begin(), l.key.end(), key)) return l.data.data();
    if (layouts.size() >= 4) layouts.erase(layouts.begin());
    layouts.push_back({std::vector<std::byte>(key, key + key_size), std::vector<std::byte>(bytes)});
    make(layouts.back().data.data());
    ++bf16_weight_conversions();
    return layouts.back().data.data();
  }

  /// A copy in some layout.
  struct layout {
    std::vector<std::byte> key;   ///< the layout's description
    std::vector<std::byte> data;  ///< the values in it
  };
  std::vector<std::uint16_t> values;                              ///< the plain copy, row-major (empty until asked for)
  std::vector<layout> layouts;                                    ///< the laid-out copies
  std::uint64_t version = ~std::uint64_t{0};                      ///< the parameter version they were made of
  const float* source = nullptr;                                  ///< the value they were made of
  std::size_t size = 0;                                           ///< its number of values
  std::unique_ptr<std::mutex> lock = std::make_unique<std::mutex>();  ///< one converter at a time

 private:
  void refresh(const float* src, std::size_t n, std::uint64_t v) {
    if (version == v && source == src && size == n) return;
    forget();
    version = v;
    source = src;
    size = n;
  }
  void forget() {
    values.clear();
    layouts.clear();
    version = ~std::uint64_t{0};
    source = nullptr;
    size = 0;
  }
};

/// A handle on the bf16 copies of a float32 matrix (a frozen parameter's value): what a bf16 product
/// reads of its weight. Empty (cache null) for a weight that has none.
struct bf16_copies {
  bf16_cache* cache = nullptr;  ///< where the copies live (the parameter's)
  const float* source = nullptr;  ///< the float32 values
  std::size_t size = 0;           ///< their number
  std::uint64_t version = 0;      ///< the parameter's version

  /// The plain row-major copy (made at the first call of a version).
  const std::uint16_t* plain() const { return cache->get(source, size, version); }
  /// The copy laid out as `key` says, made by make(dst) at the first call of a version.
  template <class Make>
  const std::byte* laid_out(const std::byte* key, std::size_t key_size, std::size_t bytes, Make&& make) const {
    return cache->laid_out(source, size, version, key, key_size, bytes, std::forward<Make>(make));
  }
};

}  // namespace vpdarts::detail
