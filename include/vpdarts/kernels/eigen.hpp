#pragma once
/// @file eigen.hpp
/// The kernels vpdarts computes itself, with Eigen: weight products on Eigen's GEMM (split over the
/// threads by detail::gemm), multi-head attention per (image, head), LayerNorm, GELU and QuickGELU,
/// the softmax rows, a product's epilogue and the rounding of operands to bf16. They serve float and
/// double; the oneDNN backend (onednn.hpp) uses the element-wise ones around its own products.

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

// ---- softmax and attention --------------------------------------------------------------------

/// The first passes of a softmax over rows [first, first + count) of `p` (rows of `seq` scores): each
/// row minus its largest score, times `scale`, then the exponentials. These run over the rows as one
/// array, so that only the last values, not every row's, fall outside a whole vector (a row of 197 or
/// 73 scores leaves 5 or 9 values to scalar code, which took half the time of a softmax by rows).
template <Scalar S>
void softmax_exponentials(S* p, index first, index count, index seq, S scale) {
  for (index r = first; r < first + count; ++r) {
    Eigen::Map<Eigen::Array<S, 1, Eigen::Dynamic>> a(p + r * seq, seq);
    a = scale * (a - a.maxCoeff());
  }
  Eigen::Map<Eigen::Array<S, 1, Eigen::Dynamic>> all(p + first * seq, count * seq);
  all = all.exp();
}

/// Softmax of every row of `p` (`rows` rows of `seq` scores), the scores scaled by `scale` (> 0) first,
/// in place.
template <Scalar S>
void softmax_rows(S* p, index rows, index seq, S scale) {
  parallel_chunks(rows, 64, [&](index first, index count) {
    softmax_exponentials(p, first, count, seq, scale);
    for (index r = first; r < first + count; ++r) {
      Eigen::Map<Eigen::Array<S, 1, Eigen::Dynamic>> a(p + r * seq, seq);
      a /= a.sum();
    }
  });
}

/// softmax_rows, with the probabilities also written rounded to bf16 into p16 (the operand of a bf16
/// product) in the same pass: the same values as softmax_rows then to_bf16, without a pass of its own.
/// With `keep_float` false, p holds only the exponentials afterwards (when nothing reads it again).
inline void softmax_rows(float* p, index rows, index seq, float scale, std::uint16_t* p16, bool keep_float) {
  parallel_chunks(rows, 64, [&](index first, index count) {
    softmax_exponentials(p, first, count, seq, scale);
    for (index r = first; r < first + count; ++r) {
      float* a = p + r * seq;
      std::uint16_t* a16 = p16 + r * seq;
      const float sum = Eigen::Map<const Eigen::Array<float, 1, Eigen::Dynamic>>(a, seq).sum();
      if (keep_float) {
        VPDARTS_SIMD
        for (index j = 0; j < seq; ++j) {
          a[j] /= sum;
          a16[j] = detail::to_bf16(a[j]);
        }
      } else {
        VPDARTS_SIMD
        for (index j = 0; j < seq; ++j) a16[j] = detail::to_bf16(a[j] / sum);
      }
    }
  });
}

/// The gradient through softmax rows of probabilities `probs`: g = p * (g - <g, p>) * scale, row by row
/// (g holds the gradient of the probabilities on entry, of the scaled scores on exit).
template <Scalar S>
void softmax_backward_rows(S* g, const S* probs, index rows, index seq, S scale) {
  parallel_chunks(rows, 64, [&](index first, index count) {
    for (index r = first; r < first + count; ++r) {
      Eigen::Map<Eigen::Matrix<S, 1, Eigen::Dynamic>> dr(g + r * seq, seq);
      Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>> pr(probs + r * seq, seq);
      const S dot = dr.dot(pr);
      dr.array() = pr.array() * (dr.array() - dot) * scale;
    }
  });
}

/// softmax_backward_rows with the result written rounded to bf16 into g16 instead of into g (the operand
/// of a bf16 product): the same values as softmax_backward_rows then to_bf16, in one pass.
inline void softmax_backward_rows(const float* g, const float* probs, index rows, index seq, float scale,
                                  std::uint16_t* g16) {
  parallel_chunks(rows, 64, [&](index first, index count) {
    for (index r = first; r < first + count; ++r) {
      const float* gr = g + r * seq;
      const float* pr = probs + r * seq;
      std::uint16_t* o = g16 + r * seq;
      const float dot = Eigen::Map<const Eigen::Matrix<float, 1, Eigen::Dynamic>>(gr, seq).dot(
          Eigen::Map<const Eigen::Matrix<float, 1, Eigen::Dynamic>>(pr, seq));
      VPDARTS_SIMD
      for (index j = 0; j < seq; ++j) o[j] = detail::to_bf16(pr[j] * (gr[j] - dot) * scale);
    }
  });
}

/// Attention forward: o ((batch*seq) x d) = softmax(Q K^T / sqrt(d_h)) V per image and head, for q in
/// rows of S. With `keep` the probabilities of job (image, head) go to probs + job*seq*seq; otherwise
/// probs holds one seq x seq buffer per thread.
template <Scalar S>
void attention_forward(const qkv<S>& q, S* o, S* probs, bool keep) {
  profile_scope profiled(profile_kind::attention_rest);
  const index d = q.d, seq = q.seq, heads = q.heads, c3 = 3 * d, dh = q.head_dim(), tt = seq * seq;
  const S scale = S(1) / std::sqrt(static_cast<S>(dh));
  parallel_for(q.batch * heads, [&](index job) {
    const index b = job / heads, h = job % heads;
    S* base = const_cast<S*>(q.values()) + b * seq * c3;
    strided_map<S> Q(base + h * dh, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> K(base + d + h * dh, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> V(base + 2 * d + h * dh, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> O(o + b * seq * d + h * dh, seq, dh, Eigen::OuterStride<>(d));
    matrix_map<S> A(probs + (keep ? job : detail::thread_id()) * tt, seq, seq);
    A.noalias() = scale * (Q * K.transpose());
    softmax_rows(A.data(), seq, seq, S(1));  // already scaled
    O.noalias() = A * V;
  });
}

/// Attention backward: adds into gin ((batch*seq) x 3d) the gradient for the output gradient gout
/// ((batch*seq) x d), from the kept probabilities; `work` holds seq*seq values per thread. With probs
/// null the probabilities are computed again, as attention_forward did (the same products, so the same
/// values), and `work` holds 2*seq*seq values per thread.
template <Scalar S>
void attention_backward(const qkv<S>& q, S* gin, const S* gout, const S* probs, S* work) {
  profile_scope profiled(profile_kind::attention_rest);
  const index d = q.d, seq = q.seq, heads = q.heads, c3 = 3 * d, dh = q.head_dim(), tt = seq * seq;
  const S scale = S(1) / std::sqrt(static_cast<S>(dh));
  parallel_for(q.batch * heads, [&](index job) {
    const index b = job / heads, h = job % heads;
    const index off = b * seq * c3 + h * dh;
    S* base = const_cast<S*>(q.values()) + off;
    strided_map<S> Q(base, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> K(base + d, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> V(base + 2 * d, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> dQ(gin + off, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> dK(gin + off + d, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> dV(gin + off + 2 * d, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> dO(const_cast<S*>(gout) + b * seq * d + h * dh, seq, dh, Eigen::OuterStride<>(d));
    const bool again = probs == nullptr;
    S* mine = work + detail::thread_id() * (again ? 2 : 1) * tt;
    matrix_map<S> A(again ? mine + tt : const_cast<S*>(probs) + job * tt, seq, seq);
    if (again) {
      A.noalias() = scale * (Q * K.transpose());
      softmax_rows(A.data(), seq, seq, S(1));
    }
    matrix_map<S> dS(mine, seq, seq);
    dV.noalias() += A.transpose() * dO;
    dS.noalias() = dO * V.transpose();  // dA
    softmax_backward_rows(dS.data(), A.data(), seq, seq, scale);
    dQ.noalias() += dS * K;
    dK.noalias() += dS.transpose() * Q;
  });
}

/// Rounds `parts` blocks of `heads` x dh columns of every row of `in` ((batch*seq) rows of `stride`
/// values) into bf16 by head: out[part][b][h][t][c] (the layout of qkv::by_head). oneDNN's fast
/// (brgemm) kernels want each (image, head) matrix dense.
inline void to_heads(const float* in, std::uint16_t* out, index batch, index seq, index parts, index heads, index dh,
                     index stride) {
  profile_scope profiled(profile_kind::conversion);
  const index part = batch * heads * seq * dh;
  parallel_for(batch * seq, [&](index r) {
    const index b = r / seq, t = r % seq;
    for (index p = 0; p < parts; ++p)
      for (index h = 0; h < heads; ++h) {
        const float* src = in + r * stride + (p * heads + h) * dh;
        std::uint16_t* dst = out + p * part + ((b * heads + h) * seq + t) * dh;
        detail::to_bf16_serial(src, dst, static_cast<std::size_t>(dh));
      }
  });
}

/// The inverse of to_heads: gin (rows of `stride`) (+)= the `parts` head-major blocks of src, float or
/// (T std::uint16_t, not accumulating) bf16.
template <class T>
void from_heads(const T* src, T* gin, bool accumulate, index batch, index seq, index parts, index heads, index dh,
                index stride) {
  const index part = batch * heads * seq * dh;
  parallel_for(batch * seq, [&](index r) {
    const index b = r / seq, t = r % seq;
    for (index p = 0; p < parts; ++p)
      for (index h = 0; h < heads; ++h) {
        T* dst = gin + r * stride + (p * heads + h) * dh;
        const T* from = src + p * part + ((b * heads + h) * seq + t) * dh;
        if constexpr (std::is_same_v<T, float>)
          if (accumulate) {
            VPDARTS_SIMD
            for (index c = 0; c < dh; ++c) dst[c] += from[c];
          }
        if (!accumulate) std::copy(from, from + dh, dst);
      }
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
