#pragma once
/// @file eigen_attention.hpp
/// The softmax rows and multi-head attention per (image, head), with Eigen (float and double), and the
/// softmax variants that write the bf16 operand of the next product as they go; the oneDNN backend
/// (onednn.hpp) uses the softmax and the layout changes (to_heads, from_heads) around its own products.

#include <cstdint>
#include <type_traits>

#include "eigen.hpp"

namespace vpdarts::kernels::eigen {

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

}  // namespace vpdarts::kernels::eigen
