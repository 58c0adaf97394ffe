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
  if (batch <= 0 || rows % batch != 0)
    throw shape_error(detail::cat("attention: qkv is ", detail::shape_str(rows, c3), " but batch ", batch,
                                  " does not divide its ", rows, " rows"));
  if (c3 % 3 != 0)
    throw shape_error(detail::cat("attention: qkv is ", detail::shape_str(rows, c3),
                                  ", its columns are not [q | k | v] (not a multiple of 3)"));
  const index d = c3 / 3;
  if (heads <= 0 || d % heads != 0)
    throw shape_error(detail::cat("attention: qkv is ", detail::shape_str(rows, c3), " (D = ", d, ") but ", heads,
                                  " heads do not divide D"));
  const index seq = rows / batch, dh = d / heads;
  const S scale = S(1) / std::sqrt(static_cast<S>(dh));
  const bool rg = qkv.requires_grad() && t.grad_enabled();
  var<S> out = t.make(rows, d, rg);
  const index tt = seq * seq;
  const int nthreads = detail::max_threads();
  S* probs = t.template scratch<S>(static_cast<std::size_t>(rg ? batch * heads * tt : nthreads * tt));
  S* in = qkv.value().data();
  S* o = out.value().data();
  const index jobs = batch * heads;
  detail::parallel_for(jobs, [&](index job) {
    const index b = job / heads, h = job % heads;
    S* base = in + b * seq * c3;
    detail::strided_map<S> Q(base + h * dh, seq, dh, Eigen::OuterStride<>(c3));
    detail::strided_map<S> K(base + d + h * dh, seq, dh, Eigen::OuterStride<>(c3));
    detail::strided_map<S> V(base + 2 * d + h * dh, seq, dh, Eigen::OuterStride<>(c3));
    detail::strided_map<S> O(o + b * seq * d + h * dh, seq, dh, Eigen::OuterStride<>(d));
    matrix_map<S> A(probs + (rg ? job : detail::thread_id()) * tt, seq, seq);
    A.noalias() = scale * (Q * K.transpose());
    for (index i = 0; i < seq; ++i) {
      A.row(i).array() = (A.row(i).array() - A.row(i).maxCoeff()).exp();
      A.row(i) /= A.row(i).sum();
    }
    O.noalias() = A * V;
  });
  t.on_backward(out, [iq = qkv.id(), io = out.id(), probs, batch, heads, seq, d, dh, scale](tape<S>& x) {
    const index c3 = 3 * d, tt = seq * seq, jobs = batch * heads;
    S* in = x.value(iq).data();
    S* gin = x.adjoint(iq).data();
    S* gout = x.adjoint(io).data();
    S* work = x.template scratch<S>(static_cast<std::size_t>(detail::max_threads() * tt));
    detail::parallel_for(jobs, [&](index job) {
      const index b = job / heads, h = job % heads;
      const index off = b * seq * c3 + h * dh;
      detail::strided_map<S> Q(in + off, seq, dh, Eigen::OuterStride<>(c3));
      detail::strided_map<S> K(in + off + d, seq, dh, Eigen::OuterStride<>(c3));
      detail::strided_map<S> V(in + off + 2 * d, seq, dh, Eigen::OuterStride<>(c3));
      detail::strided_map<S> dQ(gin + off, seq, dh, Eigen::OuterStride<>(c3));
      detail::strided_map<S> dK(gin + off + d, seq, dh, Eigen::OuterStride<>(c3));
      detail::strided_map<S> dV(gin + off + 2 * d, seq, dh, Eigen::OuterStride<>(c3));
      detail::strided_map<S> dO(gout + b * seq * d + h * dh, seq, dh, Eigen::OuterStride<>(d));
      matrix_map<S> A(probs + job * tt, seq, seq);
      matrix_map<S> dS(work + detail::thread_id() * tt, seq, seq);
      dV.noalias() += A.transpose() * dO;
      dS.noalias() = dO * V.transpose();  // dA
      for (index i = 0; i < seq; ++i) {
        const S dot = dS.row(i).dot(A.row(i));
        dS.row(i).array() = A.row(i).array() * (dS.row(i).array() - dot) * scale;
      }
      dQ.noalias() += dS * K;
      dK.noalias() += dS.transpose() * Q;
    });
  });
  return out;
}

}  // namespace vpdarts
