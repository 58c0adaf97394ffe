#pragma once
// A parallel loop over [0, n) with OpenMP. A region is entered only when
// there is more than one job and more than one thread: libgomp allocates a
// new team for a one-thread region, which a warm training step must not do.

#include <algorithm>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../fwd.hpp"

/// Asks for vector code for the loop that follows (OpenMP's simd, in a program built with OpenMP, as
/// the CMake target vpdarts::vpdarts is): GCC 12 at -O2 (CMake's RelWithDebInfo) leaves scalar a loop
/// that needs a run-time check (for aliasing, or for the trip count), and the element-wise loops of
/// the kernels (the bf16 roundings) ran 3-8x slower so. For loops whose iterations are independent.
#ifdef _OPENMP
#define VPDARTS_SIMD _Pragma("omp simd")
#else
#define VPDARTS_SIMD
#endif

namespace vpdarts::detail {

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// Calls f(i) for i in [0, n), split statically over the OpenMP threads.
template <class F>
void parallel_for(index n, F&& f) {
#ifdef _OPENMP
  if (n > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
    for (index i = 0; i < n; ++i) f(i);
    return;
  }
#endif
  for (index i = 0; i < n; ++i) f(i);
}

/// Calls f(begin, count) over [0, n) in pieces of `chunk` (the last may be
/// shorter), the pieces split over the OpenMP threads.
template <class F>
void parallel_chunks(index n, index chunk, F&& f) {
  parallel_for((n + chunk - 1) / chunk, [&](index b) { f(b * chunk, std::min(chunk, n - b * chunk)); });
}

}  // namespace vpdarts::detail
