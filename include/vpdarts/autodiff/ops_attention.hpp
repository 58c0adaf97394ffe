#pragma once
/// @file ops_attention.hpp
/// The multi-head self-attention core as one op: softmax(Q K^T / sqrt(d_h)) V per image and head,
/// forward and backward on the Eigen kernels (kernels/eigen.hpp), parallel over (image, head). The
/// attention of a frozen block is part of its fused nodes (ops_fused_attention.hpp).

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../detail/memory.hpp"
#include "../kernels/eigen_attention.hpp"
#include "tape.hpp"

namespace vpdarts {
namespace detail {

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
  t.count_multiply_adds(static_cast<std::uint64_t>(2 * batch * seq * seq * d));  // Q K^T and P V
  if (rg) {
    detail::check_allocation(static_cast<double>(batch) * heads * static_cast<double>(tt) * sizeof(S), [&] {
      return detail::cat("attention: the kept probabilities of ", batch, " images x ", heads, " heads x ", seq, "^2 tokens");
    });
    S* probs = t.template scratch<S>(static_cast<std::size_t>(batch * heads * tt));
    const kernels::qkv<S> q{qkv.value().data(), batch, heads, seq, d, false};
    kernels::eigen::attention_forward(q, out.value().data(), probs, true);
    t.on_backward(out, [iq = qkv.id(), io = out.id(), probs, batch, heads, seq, d, tt](tape<S>& x) {
      typename tape<S>::borrowed work(x, detail::max_threads(), tt);
      kernels::eigen::attention_backward(kernels::qkv<S>{x.value(iq).data(), batch, heads, seq, d, false},
                                         x.adjoint(iq).data(), x.adjoint(io).data(), probs, work.data());
    });
  } else {
    typename tape<S>::borrowed probs(t, detail::max_threads(), tt);
    kernels::eigen::attention_forward(kernels::qkv<S>{qkv.value().data(), batch, heads, seq, d, false},
                                      out.value().data(), probs.data(), false);
  }
  return out;
}

}  // namespace vpdarts
