#pragma once
/// @file eigen.hpp
/// The kernels vpdarts computes itself, with Eigen: weight products on Eigen's GEMM (split over the
/// threads by detail::gemm), LayerNorm, GELU and QuickGELU, a product's epilogue and the rounding of
/// operands to bf16; the softmax rows and multi-head attention are in eigen_attention.hpp. They serve
/// float and double; the oneDNN backend (onednn.hpp) uses the element-wise ones around its own products.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <type_traits>
#include <unsupported/Eigen/SpecialFunctions>

#include "../detail/bf16.hpp"
#include "../detail/gemm.hpp"
#include "../detail/parallel.hpp"
#include "../detail/profile.hpp"
#include "activation.hpp"
#include "operand.hpp"

namespace vpdarts::kernels::eigen {

using detail::parallel_chunks;
using detail::parallel_for;
using detail::profile_kind;
using detail::profile_scope;

/// Values per OpenMP job of the element-wise kernels.
inline constexpr index values_per_job = index{1} << 14;
/// Rows per OpenMP job of the row-wise kernels.
inline constexpr index rows_per_job = 32;

template <Scalar S>
using strided_map = Eigen::Map<matrix<S>, 0, Eigen::OuterStride<>>;
template <Scalar S>
using array_map = Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>;
template <Scalar S>
using const_array_map = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;

/// Calls f(first, count) over the rows [0, rows) of a matrix `cols` wide, in pieces of about
/// values_per_job values split over the threads (one thread for a small matrix).
template <class F>
void parallel_rows(index rows, index cols, F&& f) {
  parallel_chunks(rows, std::max<index>(1, values_per_job / std::max<index>(cols, 1)), std::forward<F>(f));
}

// ---- weight products --------------------------------------------------------------------------

/// c (rows x n) (+)= a (rows x k) * op(W): op(W) = W^T (n = out) when `transposed` (a linear layer's
/// forward), else W (n = in: its input gradient).
template <Scalar S>
void weight_product(const weight<S>& w, const S* a, index rows, S* c, bool transposed, bool accumulate) {
  const const_matrix_map<S> W(w.value, w.out, w.in);
  if (transposed)
    detail::gemm(matrix_map<S>(c, rows, w.out), const_matrix_map<S>(a, rows, w.in), W.transpose(), accumulate);
  else
    detail::gemm(matrix_map<S>(c, rows, w.in), const_matrix_map<S>(a, rows, w.out), W, accumulate);
}

/// The end of a product, in one pass over the rows of out (rows x cols): (out + bias) * scale + residual.
template <Scalar S>
void apply(const epilogue<S>& e, S* out, index rows, index cols) {
  if (e.bias == nullptr && e.scale == nullptr && e.residual == nullptr) return;
  parallel_rows(rows, cols, [&](index first, index count) {
    Eigen::Map<matrix<S>> o(out + first * cols, count, cols);
    if (e.bias != nullptr) o.rowwise() += Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>>(e.bias, cols);
    if (e.scale != nullptr) o.array().rowwise() *= Eigen::Map<const Eigen::Array<S, 1, Eigen::Dynamic>>(e.scale, cols);
    if (e.residual != nullptr) o.noalias() += Eigen::Map<const matrix<S>>(e.residual + first * cols, count, cols);
  });
}

// ---- LayerNorm ----------------------------------------------------------------------------------

/// For each of the r rows of the row-major r x d matrix x, in parallel: its mean and 1/std
/// (sqrt(var + eps)), to stats[2i] and stats[2i+1] unless stats is null, and write(i, mean, 1/std).
template <Scalar S, class Write>
void layer_norm_each_row(const S* x, index r, index d, S eps, S* stats, Write&& write) {
  using row = Eigen::Map<const Eigen::Array<S, 1, Eigen::Dynamic>>;
  parallel_chunks(r, rows_per_job, [&](index first, index count) {
    for (index i = first; i < first + count; ++i) {
      const row xi(x + i * d, d);
      const S mu = xi.mean();
      const S rstd = S(1) / std::sqrt((xi - mu).square().mean() + eps);
      write(i, mu, rstd);
      if (stats) {
        stats[2 * i] = mu;
        stats[2 * i + 1] = rstd;
      }
    }
  });
}

/// y = (x - mean) / sqrt(var + eps) * g + b for each of the r rows of the row-major r x d matrix x, into
/// y as S or (type bf16) rounded to bf16 as it is written (y may not alias x); the mean and 1/std of row
/// i go to stats[2i] and stats[2i+1] unless stats is null.
template <Scalar S>
void layer_norm(const S* x, void* y, element type, const S* g, const S* b, index r, index d, S eps, S* stats) {
  profile_scope profiled(profile_kind::layer_norm);
  using row = Eigen::Map<const Eigen::Array<S, 1, Eigen::Dynamic>>;
  if (type == element::bf16) {
    auto* y16 = static_cast<std::uint16_t*>(y);
    layer_norm_each_row(x, r, d, eps, stats, [&](index i, S mu, S rstd) {
      const S* xi = x + i * d;
      std::uint16_t* yi = y16 + i * d;
      VPDARTS_SIMD
      for (index j = 0; j < d; ++j) yi[j] = detail::to_bf16(static_cast<float>((xi[j] - mu) * rstd * g[j] + b[j]));
    });
    return;
  }
  const row gv(g, d), bv(b, d);
  S* ys = static_cast<S*>(y);
  layer_norm_each_row(x, r, d, eps, stats, [&](index i, S mu, S rstd) {
    Eigen::Map<Eigen::Array<S, 1, Eigen::Dynamic>>(ys + i * d, d) = (row(x + i * d, d) - mu) * rstd * gv + bv;
  });
}

/// dx += d LN(x) / d x applied to dy, for gamma g and the stats layer_norm saved.
template <Scalar S>
void layer_norm_backward(const S* x, const S* g, const S* stats, const S* dy, S* dx, index r, index d) {
  profile_scope profiled(profile_kind::layer_norm);
  using row = Eigen::Map<const Eigen::Array<S, 1, Eigen::Dynamic>>;
  const row gv(g, d);
  parallel_chunks(r, rows_per_job, [&](index first, index count) {
    for (index i = first; i < first + count; ++i) {
      const S mu = stats[2 * i], rstd = stats[2 * i + 1];
      const auto xhat = (row(x + i * d, d) - mu) * rstd;
      const auto dxhat = row(dy + i * d, d) * gv;
      const S m1 = dxhat.sum() / S(d);
      const S m2 = (dxhat * xhat).sum() / S(d);
      Eigen::Map<Eigen::Array<S, 1, Eigen::Dynamic>>(dx + i * d, d) += rstd * (dxhat - m1 - xhat * m2);
    }
  });
}

// ---- activations --------------------------------------------------------------------------------

/// y = act(x) for m values, on the calling thread (GELU: exact erf form; QuickGELU: x sigmoid(1.702 x)).
template <Scalar S>
void activation_serial(activation act, const S* x0, S* y0, index m) {
  const_array_map<S> x(x0, m);
  if (act == activation::gelu)
    array_map<S>(y0, m) = S(0.5) * x * (S(1) + (x * (S(1) / std::numbers::sqrt2_v<S>)).erf());
  else
    array_map<S>(y0, m) = x / (S(1) + (S(-1.702) * x).exp());
}

/// y = act(x) and dy = act'(x) for m <= values_per_job values, on the calling thread; y and dy are
/// different memory.
template <Scalar S>
void activation_with_derivative_serial(activation act, const S* x0, S* y0, S* dy0, index m) {
  const_array_map<S> x(x0, m);
  array_map<S> y(y0, m), dy(dy0, m);
  if (act == activation::gelu) {  // y = x Phi(x), y' = Phi(x) + x phi(x)
    constexpr S r2 = S(1) / std::numbers::sqrt2_v<S>;
    constexpr S inv_sqrt_2pi = std::numbers::inv_sqrtpi_v<S> * r2;
    y = S(0.5) * (S(1) + (x * r2).erf());
    dy = y + x * inv_sqrt_2pi * (S(-0.5) * x.square()).exp();
  } else {  // s = sigmoid(1.702 x): y = x s, y' = s + 1.702 x s (1 - s)
    y = S(1) / (S(1) + (S(-1.702) * x).exp());
    dy = y + S(1.702) * x * y * (S(1) - y);
  }
  y *= x;
}

/// d += g * act'(x) for m <= values_per_job values, on the calling thread (d = with `accumulate` false;
/// d may be g).
template <Scalar S>
void activation_backward_serial(activation act, const S* x0, const S* g0, S* d0, index m, bool accumulate) {
  S y[values_per_job], dy[values_per_job];
  activation_with_derivative_serial(act, x0, y, dy, m);
  const_array_map<S> g(g0, m), dx(dy, m);
  array_map<S> d(d0, m);
  if (accumulate) d += g * dx;
  else d = g * dx;
}

/// y = act(x) for n values.
template <Scalar S>
void activation_forward(activation act, const S* x, S* y, index n) {
  profile_scope profiled(profile_kind::activation);
  parallel_chunks(n, values_per_job, [&](index at, index m) { activation_serial(act, x + at, y + at, m); });
}

/// y16 = bf16(act(x)) and, unless dx16 is null, dx16 = bf16(act'(x)), for n values in one pass.
template <Scalar S>
void activation_forward_bf16(activation act, const S* x, std::uint16_t* dx16, std::uint16_t* y16, index n) {
  profile_scope profiled(profile_kind::activation);
  parallel_chunks(n, values_per_job, [&](index at, index m) {
    S y[values_per_job], dy[values_per_job];
    if (dx16 == nullptr) {
      activation_serial(act, x + at, y, m);
    } else {
      activation_with_derivative_serial(act, x + at, y, dy, m);
      detail::to_bf16_serial(dy, dx16 + at, static_cast<std::size_t>(m));
    }
    detail::to_bf16_serial(y, y16 + at, static_cast<std::size_t>(m));
  });
}

/// d += g * act'(x) for n values (d = with `accumulate` false; d may be g).
template <Scalar S>
void activation_backward(activation act, const S* x, const S* g, S* d, index n, bool accumulate = true) {
  profile_scope profiled(profile_kind::activation);
  parallel_chunks(n, values_per_job,
                  [&](index at, index m) { activation_backward_serial(act, x + at, g + at, d + at, m, accumulate); });
}

/// g *= act'(x) for n values, in place. With g16 set, the result is also written rounded to bf16 there
/// (the operand of the next bf16 product).
template <Scalar S>
void activation_backward_in_place(activation act, const S* x, S* g, index n, std::uint16_t* g16) {
  profile_scope profiled(profile_kind::activation);
  parallel_chunks(n, values_per_job, [&](index at, index m) {
    activation_backward_serial(act, x + at, g + at, g + at, m, false);
    if (g16 != nullptr) detail::to_bf16_serial(g + at, g16 + at, static_cast<std::size_t>(m));
  });
}

/// out16 = bf16(x * f16) for n values: x as S, f16 in bf16.
template <Scalar S>
void multiply_to_bf16(const S* x, const std::uint16_t* f16, std::uint16_t* out16, index n) {
  profile_scope profiled(profile_kind::activation);
  parallel_chunks(n, values_per_job, [&](index at, index m) {
    VPDARTS_SIMD
    for (index i = at; i < at + m; ++i)
      out16[i] = detail::to_bf16(static_cast<float>(x[i]) * detail::from_bf16(f16[i]));
  });
}

}  // namespace vpdarts::kernels::eigen
