#pragma once
/// @file ops_attention.hpp
/// The multi-head self-attention core, fused: softmax(Q K^T / sqrt(d_h)) V per
/// image and head, forward and backward, parallel over (image, head) with OpenMP.

#include <cmath>

#include "../detail/parallel.hpp"
#include "tape.hpp"

namespace vpdarts {
namespace detail {

template <Scalar S>
using strided_map = Eigen::Map<matrix<S>, 0, Eigen::OuterStride<>>;

/// The forward kernel: `in` is (batch*seq) x 3d, `o` (batch*seq) x d. With
/// `keep` the probabilities of job (image, head) go to probs + job*seq*seq;
/// otherwise probs holds one seq x seq buffer per thread.
template <Scalar S>
void attention_forward(const S* in, S* o, S* probs, bool keep, index batch, index heads, index seq, index d) {
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
    for (index i = 0; i < seq; ++i) {
      A.row(i).array() = (A.row(i).array() - A.row(i).maxCoeff()).exp();
      A.row(i) /= A.row(i).sum();
    }
    O.noalias() = A * V;
  });
}

/// The backward kernel: adds into gin ((batch*seq) x 3d) the gradient for the
/// output gradient gout ((batch*seq) x d), from the kept probabilities;
/// `work` holds seq*seq values per thread.
template <Scalar S>
void attention_backward(const S* in, S* gin, const S* gout, const S* probs, S* work, index batch, index heads,
                        index seq, index d) {
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
    matrix_map<S> A(const_cast<S*>(probs) + job * tt, seq, seq);
    matrix_map<S> dS(work + thread_id() * tt, seq, seq);
    dV.noalias() += A.transpose() * dO;
    dS.noalias() = dO * V.transpose();  // dA
    for (index i = 0; i < seq; ++i) {
      const S dot = dS.row(i).dot(A.row(i));
      dS.row(i).array() = A.row(i).array() * (dS.row(i).array() - dot) * scale;
    }
    dQ.noalias() += dS * K;
    dK.noalias() += dS.transpose() * Q;
  });
}

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
