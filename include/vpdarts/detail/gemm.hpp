#pragma once
// Eigen's GEMM, split over the OpenMP threads by vpdarts rather than by Eigen.
//
// Eigen parallelises a large product itself, and its threads wait for each other's packed
// blocks by spinning on a flag without yielding. When another process shares the cores, a
// spinning thread waits for one that is not running for a whole time slice, at every wait of
// every product: two 2-thread searches of a small model side by side on 2 cores ran 300x
// slower than one alone (docs/performance.md, "Two processes on the same cores"). Here each
// thread runs Eigen's single-threaded GEMM on its own block of the result, and the threads meet
// once, at the end of an OpenMP region, whose barrier spins briefly and then sleeps.

#include <algorithm>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../fwd.hpp"
#include "parallel.hpp"
#include "profile.hpp"

namespace vpdarts::detail {

/// The threads gemm() splits an m x n x k product over: as many as Eigen itself would use (at
/// least 50000 multiply-adds and 4 rows or columns per thread), at most the OpenMP threads, and
/// 1 inside a parallel region.
inline int gemm_threads(index m, index n, index k) {
#ifdef _OPENMP
  if (omp_in_parallel()) return 1;
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const double by_work = work / 50000.0, by_size = static_cast<double>(std::max(m, n) / 4);
  return static_cast<int>(std::max(1.0, std::min({static_cast<double>(omp_get_max_threads()), by_work, by_size})));
#else
  (void)m, (void)n, (void)k;
  return 1;
#endif
}

/// dst = lhs * rhs, or dst += lhs * rhs with `accumulate`: one Eigen GEMM (noalias) per thread,
/// on contiguous blocks of dst's rows (of its columns when it has fewer rows than columns).
/// lhs and rhs are Eigen matrices, maps or their transposes; dst may not alias either.
template <class Dst, class Lhs, class Rhs>
void gemm(Dst&& dst, const Lhs& lhs, const Rhs& rhs, bool accumulate = false) {
  detail::profile_scope profiled(detail::profile_kind::weight_product);
  auto run = [accumulate](auto&& d, const auto& a, const auto& b) {
    if (accumulate)
      d.noalias() += a * b;
    else
      d.noalias() = a * b;
  };
  const index m = dst.rows(), n = dst.cols();
  const int threads = gemm_threads(m, n, lhs.cols());
  if (threads <= 1) {
    run(dst, lhs, rhs);  // Eigen keeps to one thread: too small, or already inside a region
    return;
  }
  // `threads` blocks of whole multiples of 4 rows (or columns); gemm_threads leaves at least 4 a
  // thread, so there are always at least two blocks and the work runs inside a parallel region,
  // where Eigen sees a team of more than one thread and keeps to its single-threaded GEMM
  const bool by_rows = m >= n;
  const index size = by_rows ? m : n, unit = 4, units = (size + unit - 1) / unit;
  parallel_chunks(size, unit * ((units + threads - 1) / threads), [&](index first, index count) {
    if (by_rows)
      run(dst.middleRows(first, count), lhs.middleRows(first, count), rhs);
    else
      run(dst.middleCols(first, count), lhs, rhs.middleCols(first, count));
  });
}

}  // namespace vpdarts::detail
