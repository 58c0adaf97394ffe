#pragma once
/// @file ops_attention.hpp
/// The multi-head self-attention core, fused: softmax(Q K^T / sqrt(d_h)) V per
/// image and head, forward and backward, parallel over (image, head) with OpenMP.

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../detail/bf16.hpp"
#include "../detail/onednn_gemm.hpp"
#include "../detail/memory.hpp"
#include "../detail/parallel.hpp"
#include "../precision.hpp"
#include "tape.hpp"
#include "../detail/profile.hpp"

namespace vpdarts {
namespace detail {

template <Scalar S>
using strided_map = Eigen::Map<matrix<S>, 0, Eigen::OuterStride<>>;

/// Softmax of every row of `p` (`rows` rows of `seq` scores), the scores scaled by `scale` first.
template <Scalar S>
void softmax_rows(S* p, index rows, index seq, S scale) {
  parallel_chunks(rows, 64, [&](index first, index count) {
    for (index r = first; r < first + count; ++r) {
      Eigen::Map<Eigen::Array<S, 1, Eigen::Dynamic>> a(p + r * seq, seq);
      a = (scale * (a - a.maxCoeff())).exp();
      a /= a.sum();
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

/// The forward kernel: `in` is (batch*seq) x 3d, `o` (batch*seq) x d. With
/// `keep` the probabilities of job (image, head) go to probs + job*seq*seq;
/// otherwise probs holds one seq x seq buffer per thread.
template <Scalar S>
void attention_forward(const S* in, S* o, S* probs, bool keep, index batch, index heads, index seq, index d) {
  detail::profile_scope profiled(detail::profile_kind::attention_rest);
  const index c3 = 3 * d, dh = d / heads, tt = seq * seq;
  const S scale = S(1) / std::sqrt(static_cast<S>(dh));
  parallel_for(batch * heads, [&](index job) {
    const index b = job / heads, h = job % heads;
    S* base = const_cast<S*>(in) + b * seq * c3;
    strided_map<S> Q(base + h * dh, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> K(base + d + h * dh, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> V(base + 2 * d + h * dh, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> O(o + b * seq * d + h * dh, seq, dh, Eigen::OuterStride<>(d));
    matrix_map<S> A(probs + (keep ? job : thread_id()) * tt, seq, seq);
    A.noalias() = scale * (Q * K.transpose());
    softmax_rows(A.data(), seq, seq, S(1));  // already scaled
    O.noalias() = A * V;
  });
}

/// The backward kernel: adds into gin ((batch*seq) x 3d) the gradient for the
/// output gradient gout ((batch*seq) x d), from the kept probabilities;
/// `work` holds seq*seq values per thread. With probs null the probabilities
/// are computed again, as attention_forward did (the same products, so the
/// same values), and `work` holds 2*seq*seq values per thread.
template <Scalar S>
void attention_backward(const S* in, S* gin, const S* gout, const S* probs, S* work, index batch, index heads,
                        index seq, index d) {
  detail::profile_scope profiled(detail::profile_kind::attention_rest);
  const index c3 = 3 * d, dh = d / heads, tt = seq * seq;
  const S scale = S(1) / std::sqrt(static_cast<S>(dh));
  parallel_for(batch * heads, [&](index job) {
    const index b = job / heads, h = job % heads;
    const index off = b * seq * c3 + h * dh;
    S* base = const_cast<S*>(in) + off;
    strided_map<S> Q(base, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> K(base + d, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> V(base + 2 * d, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> dQ(gin + off, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> dK(gin + off + d, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> dV(gin + off + 2 * d, seq, dh, Eigen::OuterStride<>(c3));
    strided_map<S> dO(const_cast<S*>(gout) + b * seq * d + h * dh, seq, dh, Eigen::OuterStride<>(d));
    const bool again = probs == nullptr;
    S* mine = work + thread_id() * (again ? 2 : 1) * tt;
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

/// True when attention's products run in bf16 (a float model under precision::bf16, with oneDNN).
template <Scalar S>
bool bf16_attention() {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
  if constexpr (std::is_same_v<S, float>) return matmul_precision() == precision::bf16;
#endif
  return false;
}

#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
/// Rounds `parts` blocks of `heads` x dh columns of every row of `in` ((batch*seq) rows of `stride`
/// values) into bf16, head-major: out[part][b][h][t][c]. oneDNN's fast (brgemm) kernels want
/// each (image, head) matrix dense; a strided view of qkv would get a slower one that allocates per matrix.
inline void to_bf16_heads(const float* in, std::uint16_t* out, index batch, index seq, index parts, index heads,
                          index dh, index stride) {
  detail::profile_scope profiled(detail::profile_kind::conversion);
  const index part = batch * heads * seq * dh;
  parallel_for(batch * seq, [&](index r) {
    const index b = r / seq, t = r % seq;
    for (index p = 0; p < parts; ++p)
      for (index h = 0; h < heads; ++h) {
        const float* src = in + r * stride + (p * heads + h) * dh;
        std::uint16_t* dst = out + p * part + ((b * heads + h) * seq + t) * dh;
        for (index c = 0; c < dh; ++c) dst[c] = to_bf16(src[c]);
      }
  });
}

/// The bf16 forward: attention_forward with Q K^T and P V as batched oneDNN products over
/// (image, head), from q16, qkv in bf16 heads (to_bf16_heads). With `keep` the probabilities of
/// every (image, head) go to probs; otherwise the images go in groups of about 4M scores through
/// borrowed memory.
inline void attention_forward_bf16_heads(tape<float>& t, const std::uint16_t* q16, float* o, float* probs, bool keep,
                                         index batch, index heads, index seq, index d) {
  detail::profile_scope profiled(detail::profile_kind::attention_rest);
  using dims4 = onednn_matmuls::dims4;
  const index dh = d / heads, tt = seq * seq, rows = batch * seq, part = rows * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  const index group = keep ? batch : std::clamp<index>((index{1} << 22) / (heads * tt), 1, batch);
  typename tape<float>::borrowed scores(t, 1, keep ? 1 : group * heads * tt);
  borrowed_bf16<float> p16(t, group * heads * tt);
  std::uint16_t* pb = p16.data();
  auto& mm = onednn_matmuls::here();
  const dims4 dense{heads * seq * dh, seq * dh, dh, 1}, dense_t{heads * seq * dh, seq * dh, 1, dh},
      ps{heads * tt, tt, seq, 1}, os{seq * d, dh, d, 1};
  for (index b0 = 0; b0 < batch; b0 += group) {
    const index g = std::min(group, batch - b0), off = b0 * heads * seq * dh;
    float* p = keep ? probs + b0 * heads * tt : scores.data();
    mm.run_batched({g, heads, seq, dh}, dense, {g, heads, dh, seq}, dense_t, {g, heads, seq, seq}, ps, q16 + off,
                   q16 + part + off, p, false);                                                     // S = Q K^T
    softmax_rows(p, g * heads * seq, seq, scale);
    to_bf16(p, pb, static_cast<std::size_t>(g * heads * tt));
    mm.run_batched({g, heads, seq, seq}, ps, {g, heads, seq, dh}, dense, {g, heads, seq, dh}, os, pb,
                   q16 + 2 * part + off, o + b0 * seq * d, false);                                  // O = P V
  }
}

/// attention_forward_bf16_heads for qkv in its row layout ((batch*seq) x 3d, float): rounds it to
/// bf16 heads first (to_bf16_heads).
inline void attention_forward_bf16(tape<float>& t, const float* in, float* o, float* probs, bool keep, index batch,
                                   index heads, index seq, index d) {
  borrowed_bf16<float> q16(t, 3 * batch * seq * d);
  to_bf16_heads(in, q16.data(), batch, seq, 3, heads, d / heads, 3 * d);
  attention_forward_bf16_heads(t, q16.data(), o, probs, keep, batch, heads, seq, d);
}

/// The bf16 backward of attention_forward_bf16_heads, from q, qkv in bf16 heads (to_bf16_heads): adds
/// into gin ((batch*seq) x 3d, row layout), or with `accumulate` false overwrites it. With probs null
/// the probabilities are computed again (the same bf16 products as the forward's, so the same values).
inline void attention_backward_bf16_heads(tape<float>& t, const std::uint16_t* q, float* gin, bool accumulate,
                                          const float* gout, const float* probs, index batch, index heads, index seq,
                                          index d) {
  detail::profile_scope profiled(detail::profile_kind::attention_rest);
  using dims4 = onednn_matmuls::dims4;
  const index c3 = 3 * d, dh = d / heads, tt = seq * seq, rows = batch * seq, part = rows * d, n = batch * heads * tt;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  borrowed_bf16<float> go16(t, part), a16(t, n);
  typename tape<float>::borrowed ds(t, 1, n), dqkv(t, 1, 3 * part);
  std::uint16_t* dout = go16.data();
  std::uint16_t* a = a16.data();
  to_bf16_heads(gout, dout, batch, seq, 1, heads, dh, d);
  const dims4 dense{heads * seq * dh, seq * dh, dh, 1}, dense_t{heads * seq * dh, seq * dh, 1, dh},
      ps{heads * tt, tt, seq, 1}, pts{heads * tt, tt, 1, seq};
  const dims4 bhtd{batch, heads, seq, dh}, bhtt{batch, heads, seq, seq};
  auto& mm = onednn_matmuls::here();
  typename tape<float>::borrowed again(t, 1, probs == nullptr ? n : 1);
  if (probs == nullptr) {
    mm.run_batched(bhtd, dense, {batch, heads, dh, seq}, dense_t, bhtt, ps, q, q + part, again.data(), false);  // S = Q K^T
    softmax_rows(again.data(), batch * heads * seq, seq, scale);
    probs = again.data();
  }
  to_bf16(probs, a, static_cast<std::size_t>(n));
  // dV, dQ, dK go to a head-major buffer, then are added into gin (a strided destination with
  // accumulation would get oneDNN's slow kernel)
  float* dh3 = dqkv.data();
  mm.run_batched(bhtt, pts, bhtd, dense, bhtd, dense, a, dout, dh3 + 2 * part, false);                   // dV = A^T dO
  mm.run_batched(bhtd, dense, {batch, heads, dh, seq}, dense_t, bhtt, ps, dout, q + 2 * part, ds.data(),
                 false);                                                                                 // dA = dO V^T
  float* g = ds.data();
  softmax_backward_rows(g, probs, batch * heads * seq, seq, scale);
  to_bf16(g, a, static_cast<std::size_t>(n));                                                           // dS in bf16
  mm.run_batched(bhtt, ps, bhtd, dense, bhtd, dense, a, q + part, dh3, false);                          // dQ = dS K
  mm.run_batched(bhtt, pts, bhtd, dense, bhtd, dense, a, q, dh3 + part, false);                         // dK = dS^T Q
  parallel_for(rows, [&](index r) {
    const index b = r / seq, tk = r % seq;
    for (index p = 0; p < 3; ++p)
      for (index h = 0; h < heads; ++h) {
        float* dst = gin + r * c3 + (p * heads + h) * dh;
        const float* src = dh3 + p * part + ((b * heads + h) * seq + tk) * dh;
        if (accumulate)
          for (index c = 0; c < dh; ++c) dst[c] += src[c];
        else
          std::copy(src, src + dh, dst);
      }
  });
}

/// The bf16 backward of attention_forward_bf16: adds into gin. With probs null the probabilities
/// are computed again (the same bf16 products as the forward's, so the same values).
inline void attention_backward_bf16(tape<float>& t, const float* in, float* gin, const float* gout, const float* probs,
                                    index batch, index heads, index seq, index d) {
  borrowed_bf16<float> q(t, 3 * batch * seq * d);
  to_bf16_heads(in, q.data(), batch, seq, 3, heads, d / heads, 3 * d);
  attention_backward_bf16_heads(t, q.data(), gin, true, gout, probs, batch, heads, seq, d);
}
#endif

/// Checks attention's shapes. @throws shape_error naming `fn`.
inline void check_attention(const char* fn, index rows, index c3, index batch, index heads) {
  if (batch <= 0 || rows % batch != 0)
    throw shape_error(cat(fn, ": qkv is ", shape_str(rows, c3), " but batch ", batch, " does not divide its ", rows,
                          " rows"));
  if (c3 % 3 != 0)
    throw shape_error(cat(fn, ": qkv is ", shape_str(rows, c3), ", its columns are not [q | k | v] (not a multiple of 3)"));
  const index d = c3 / 3;
  if (heads <= 0 || d % heads != 0)
    throw shape_error(cat(fn, ": qkv is ", shape_str(rows, c3), " (D = ", d, ") but ", heads, " heads do not divide D"));
  // a backward holds two T x T float buffers per thread (the probabilities and their gradient), a forward one:
  // the check asks for the backward's, so an inference pass is refused up to 2x before it would run out
  const double seq = static_cast<double>(rows / batch);
  check_allocation(2.0 * max_threads() * seq * seq * sizeof(float), [&] {
    return cat(fn, ": attention over ", rows / batch, " tokens (", batch, " images, ", heads, " heads)");
  });
}

}  // namespace detail

/// Multi-head self-attention core over a batch of sequences.
///
/// `qkv` is (B*T) x 3D in the tape's batch layout (image b in rows [bT, (b+1)T)),
/// each row [q | k | v], and each of q, k, v split into `heads` consecutive
/// blocks of D/heads channels (timm's qkv layout). The result is (B*T) x D:
/// for every image and head, softmax(Q K^T / sqrt(D/heads)) V, heads side by
/// side. The T x T attention probabilities of every (image, head) are kept for
/// backward only when a gradient is needed; under no_grad one T x T buffer per
/// thread is used.
/// @throws shape_error when batch does not divide the rows, the columns are not
/// a multiple of 3, or heads does not divide D.
template <Scalar S>
var<S> attention(const var<S>& qkv, index batch, index heads) {
  tape<S>& t = detail::tape_of("attention", qkv);
  const index rows = qkv.rows(), c3 = qkv.cols();
  detail::check_attention("attention", rows, c3, batch, heads);
  const index d = c3 / 3, seq = rows / batch, tt = seq * seq;
  const bool rg = qkv.requires_grad() && t.grad_enabled();
  var<S> out = t.make(rows, d, rg);
  if (rg) {
    detail::check_allocation(static_cast<double>(batch) * heads * static_cast<double>(tt) * sizeof(S), [&] {
      return detail::cat("attention: the kept probabilities of ", batch, " images x ", heads, " heads x ", seq, "^2 tokens");
    });
    S* probs = t.template scratch<S>(static_cast<std::size_t>(batch * heads * tt));
    detail::attention_forward(qkv.value().data(), out.value().data(), probs, true, batch, heads, seq, d);
    t.on_backward(out, [iq = qkv.id(), io = out.id(), probs, batch, heads, seq, d, tt](tape<S>& x) {
      typename tape<S>::borrowed work(x, detail::max_threads(), tt);
      detail::attention_backward(x.value(iq).data(), x.adjoint(iq).data(), x.adjoint(io).data(), probs, work.data(),
                                 batch, heads, seq, d);
    });
  } else {
    typename tape<S>::borrowed probs(t, detail::max_threads(), tt);
    detail::attention_forward(qkv.value().data(), out.value().data(), probs.data(), false, batch, heads, seq, d);
  }
  return out;
}

}  // namespace vpdarts
