#pragma once
/// @file ops_prompt.hpp
/// The built-in fusion operators' `pre` as one tape node each (fusion/builtin.hpp): a per-column scale
/// and shift (affine) and attention over a few prompt keys and values (cross_attention). Each is the
/// composition of the basic ops it replaces, to float rounding, but keeps only its output and (for
/// the attention) the R x p probabilities: the composition kept one more D-wide intermediate per call,
/// once per layer of every pass through the search space.

#include <algorithm>
#include <cmath>
#include <optional>

#include "../detail/gemm.hpp"
#include "../detail/parallel.hpp"
#include "../kernels/eigen_attention.hpp"
#include "ops_elementwise.hpp"
#include "tape.hpp"

namespace vpdarts {

/// y = x * scale + shift, row by row: x is R x D, scale and shift are 1 x D (each column scaled and
/// shifted alike in every row). The same as add(mul(x, scale), shift), as one node.
/// @throws shape_error when scale or shift is not 1 x D.
template <Scalar S>
var<S> scale_shift(const var<S>& x, const var<S>& scale, const var<S>& shift) {
  tape<S>& t = detail::same_tape("scale_shift", x, scale);
  t.check(shift, "scale_shift");
  const index r = x.rows(), d = x.cols();
  for (const var<S>* p : {&scale, &shift})
    if (p->rows() != 1 || p->cols() != d)
      throw shape_error(detail::cat("scale_shift: ", p == &scale ? "scale" : "shift", " is ",
                                    detail::shape_str(p->rows(), p->cols()), ", expected 1x", d, " for x of ",
                                    detail::shape_str(r, d)));
  var<S> out = t.make(r, d, x.requires_grad() || scale.requires_grad() || shift.requires_grad());
  const S* px = x.value().data();
  const S* a = scale.value().data();
  const S* b = shift.value().data();
  S* py = out.value().data();
  kernels::eigen::parallel_rows(r, d, [&](index i0, index m) {
    for (index i = i0; i < i0 + m; ++i)
      VPDARTS_SIMD for (index j = 0; j < d; ++j) py[i * d + j] = px[i * d + j] * a[j] + b[j];
  });
  t.on_backward(out, [ix = x.id(), ia = scale.id(), ib = shift.id(), io = out.id()](tape<S>& tp) {
    auto X = tp.value(ix);
    auto G = tp.adjoint(io);
    const index r = X.rows(), d = X.cols();
    if (tp.requires_grad(ix)) {
      const S* a = tp.value(ia).data();
      const S* g = G.data();
      S* gx = tp.adjoint(ix).data();
      kernels::eigen::parallel_rows(r, d, [&](index i0, index m) {
        for (index i = i0; i < i0 + m; ++i)
          VPDARTS_SIMD for (index j = 0; j < d; ++j) gx[i * d + j] += g[i * d + j] * a[j];
      });
    }
    if (tp.requires_grad(ia)) tp.adjoint(ia).row(0) += (G.array() * X.array()).colwise().sum().matrix();
    if (tp.requires_grad(ib)) tp.adjoint(ib).row(0) += G.colwise().sum();
  });
  return out;
}

/// y = x + softmax(x K^T * scale) V: every row of x (R x D) attends over the p rows of K and V (p x D).
/// The same as add(x, matmul(softmax_rows(scale(matmul(x, K, transpose::b), scale)), V)), as one node
/// that keeps the R x p probabilities; its multiply-adds are counted as the two products'.
/// @throws shape_error when K and V are not both p x D with p >= 1.
template <Scalar S>
var<S> prompt_attention(const var<S>& x, const var<S>& keys, const var<S>& values, S scale) {
  tape<S>& t = detail::same_tape("prompt_attention", x, keys);
  t.check(values, "prompt_attention");
  const index r = x.rows(), d = x.cols(), p = keys.rows();
  if (p < 1 || keys.cols() != d || values.rows() != p || values.cols() != d)
    throw shape_error(detail::cat("prompt_attention: K is ", detail::shape_str(keys.rows(), keys.cols()), " and V is ",
                                  detail::shape_str(values.rows(), values.cols()), ", expected both px", d,
                                  " for x of ", detail::shape_str(r, d)));
  const bool rg = x.requires_grad() || keys.requires_grad() || values.requires_grad();
  var<S> out = t.make(r, d, rg);
  t.count_multiply_adds(static_cast<std::uint64_t>(2 * r * p * d));
  // the probabilities: kept for backward, or working memory when nothing needs a gradient
  std::optional<typename tape<S>::borrowed> held;
  if (!rg) held.emplace(t, r, p);
  S* probs = rg ? t.template scratch<S>(static_cast<std::size_t>(r * p)) : held->data();
  matrix_map<S> P(probs, r, p);
  detail::gemm(P, x.value(), keys.value().transpose());
  P *= scale;  // of either sign: the softmax below takes the scores as they are
  kernels::eigen::softmax_rows(probs, r, p, S(1));
  auto Y = out.value();
  Y = x.value();
  detail::gemm(Y, P, values.value(), true);
  if (!rg) return out;
  t.on_backward(out, [ix = x.id(), ik = keys.id(), iv = values.id(), io = out.id(), probs, scale](tape<S>& tp) {
    auto X = tp.value(ix);
    auto G = tp.adjoint(io);
    const index r = X.rows(), p = tp.value(ik).rows();
    const_matrix_map<S> P(probs, r, p);
    if (tp.requires_grad(iv)) detail::gemm(tp.adjoint(iv), P.transpose(), G, true);
    if (!tp.requires_grad(ix) && !tp.requires_grad(ik)) return;
    // dZ = scale * P (dP - rowsum(dP P)), dP = G V^T
    typename tape<S>::borrowed dz(tp, r, p);
    auto dZ = dz.map();
    detail::gemm(dZ, G, tp.value(iv).transpose());
    kernels::eigen::softmax_backward_rows(dZ.data(), probs, r, p, scale);
    if (tp.requires_grad(ix)) {
      auto dX = tp.adjoint(ix);
      dX += G;
      detail::gemm(dX, dZ, tp.value(ik), true);
    }
    if (tp.requires_grad(ik)) detail::gemm(tp.adjoint(ik), dZ.transpose(), X, true);
  });
  return out;
}

}  // namespace vpdarts
