#pragma once
/// @file ops_linalg.hpp
/// Matrix products: matmul with optional transposes and the fused linear
/// layer y = x W^T + b. matmul is Eigen's GEMM (`noalias()`), split over the threads by
/// detail::gemm (not by Eigen, whose threads spin while they wait); a linear layer's products
/// go through the tape's kernels (kernels/backend.hpp: a frozen weight's products in bf16 or
/// on oneDNN as the tape's execution_config says). An operand that requires no gradient costs
/// no backward product.

#include <type_traits>

#include "../detail/gemm.hpp"
#include "tape.hpp"

namespace vpdarts {

/// op(a) * op(b), where op transposes the operand named by `t`.
/// @throws shape_error when the inner dimensions differ.
template <Scalar S>
var<S> matmul(const var<S>& a, const var<S>& b, transpose t = transpose::none) {
  tape<S>& tp = detail::same_tape("matmul", a, b);
  const bool ta = t == transpose::a || t == transpose::both;
  const bool tb = t == transpose::b || t == transpose::both;
  const index m = ta ? a.cols() : a.rows(), ka = ta ? a.rows() : a.cols();
  const index kb = tb ? b.cols() : b.rows(), n = tb ? b.rows() : b.cols();
  if (ka != kb)
    throw shape_error(detail::cat("matmul: op(a) is ", detail::shape_str(m, ka), " (a is ",
                                  detail::shape_str(a.rows(), a.cols()), ") and op(b) is ", detail::shape_str(kb, n),
                                  " (b is ", detail::shape_str(b.rows(), b.cols()), "): inner dimensions differ (",
                                  ka, " vs ", kb, ")"));
  var<S> out = tp.make(m, n, a.requires_grad() || b.requires_grad());
  tp.count_multiply_adds(static_cast<std::uint64_t>(m * n * ka));
  auto A = a.value();
  auto B = b.value();
  auto C = out.value();
  if (!ta && !tb) detail::gemm(C, A, B);
  if (ta && !tb) detail::gemm(C, A.transpose(), B);
  if (!ta && tb) detail::gemm(C, A, B.transpose());
  if (ta && tb) detail::gemm(C, A.transpose(), B.transpose());
  tp.on_backward(out, [ia = a.id(), ib = b.id(), io = out.id(), ta, tb](tape<S>& x) {
    auto A = x.value(ia);
    auto B = x.value(ib);
    auto G = x.adjoint(io);
    if (x.requires_grad(ia)) {
      auto dA = x.adjoint(ia);
      if (!ta && !tb) detail::gemm(dA, G, B.transpose(), true);
      if (ta && !tb) detail::gemm(dA, B, G.transpose(), true);
      if (!ta && tb) detail::gemm(dA, G, B, true);
      if (ta && tb) detail::gemm(dA, B.transpose(), G.transpose(), true);
    }
    if (x.requires_grad(ib)) {
      auto dB = x.adjoint(ib);
      if (!ta && !tb) detail::gemm(dB, A.transpose(), G, true);
      if (ta && !tb) detail::gemm(dB, A, G, true);
      if (!ta && tb) detail::gemm(dB, G.transpose(), A, true);
      if (ta && tb) detail::gemm(dB, G.transpose(), A.transpose(), true);
    }
  });
  return out;
}

namespace detail {

/// Checks a linear layer's operands for an input of xr x xc (b may be empty).
/// @throws shape_error naming `fn`; state_error when b is of another tape.
template <Scalar S>
void check_linear(const char* fn, index xr, index xc, const var<S>& w, const var<S>& b) {
  if (b.valid()) w.owner().check(b, fn);
  if (xc != w.cols())
    throw shape_error(cat(fn, ": input is ", shape_str(xr, xc), " but weight is ", shape_str(w.rows(), w.cols()),
                          " (out x in): in-features differ (", xc, " vs ", w.cols(), ")"));
  if (b.valid() && (b.rows() != 1 || b.cols() != w.rows()))
    throw shape_error(cat(fn, ": bias is ", shape_str(b.rows(), b.cols()), ", expected 1x", w.rows(),
                          " for a weight of ", shape_str(w.rows(), w.cols())));
}

/// Node iw of t as a weight the kernels read (with its bf16 copies when it is a frozen parameter's leaf).
template <Scalar S>
kernels::weight<S> weight_of(const tape<S>& t, std::uint32_t iw) {
  const auto& n = t.at(iw);
  kernels::weight<S> w{n.value, n.rows, n.cols, !n.requires_grad, {}};
  if constexpr (std::is_same_v<S, float>)
    if (n.source != nullptr && !n.source->requires_grad()) w.bf16 = n.source->bf16_copies();
  return w;
}

/// Row-major rows of S as a kernel operand.
template <Scalar S, class M>
kernels::rows<S> rows_of(const M& m) {
  return kernels::rows<S>::of(static_cast<const S*>(m.data()), m.rows(), m.cols());
}

/// out = x W^T (+ b unless ib is -1), then * scale and + residual where those are given, for the weight
/// and bias nodes iw and ib of t, through the tape's kernels (bf16 or oneDNN or Eigen, as they choose).
template <Scalar S>
void linear_rows(tape<S>& t, S* out, const kernels::rows<S>& x, std::uint32_t iw, std::uint32_t ib,
                 const S* scale = nullptr, const S* residual = nullptr) {
  t.backend().linear(weight_of(t, iw), x, out,
                     {ib != std::uint32_t(-1) ? t.value(ib).data() : static_cast<const S*>(nullptr), scale, residual});
}

/// linear_rows for the vars w, b, scale and residual (b, scale and residual may be empty).
template <Scalar S>
void linear_rows(S* out, const kernels::rows<S>& x, const var<S>& w, const var<S>& b, const var<S>& scale = {},
                 const var<S>& residual = {}) {
  linear_rows(w.owner(), out, x, w.id(), b.valid() ? b.id() : std::uint32_t(-1),
              scale.valid() ? scale.value().data() : static_cast<const S*>(nullptr),
              residual.valid() ? residual.value().data() : static_cast<const S*>(nullptr));
}

/// out = g W (out += g W with `accumulate`): the input gradient of a linear layer whose weight is node iw.
template <Scalar S>
void times_weight(tape<S>& t, std::uint32_t iw, const kernels::rows<S>& g, S* out, bool accumulate) {
  t.backend().times_weight(weight_of(t, iw), g, out, accumulate);
}

}  // namespace detail

/// The linear layer y = x W^T + b (PyTorch's convention: W is out x in).
/// x is R x in, W is out x in, b is 1 x out; the result is R x out.
/// A frozen W (or b) gets no gradient product.
/// @throws shape_error when x's columns differ from W's, or b is not 1 x out.
template <Scalar S>
var<S> linear(const var<S>& x, const var<S>& w, const var<S>& b) {
  tape<S>& tp = detail::same_tape("linear", x, w);
  const bool has_bias = b.valid();
  detail::check_linear("linear", x.rows(), x.cols(), w, b);
  const bool rg = x.requires_grad() || w.requires_grad() || (has_bias && b.requires_grad());
  var<S> out = tp.make(x.rows(), w.rows(), rg);
  detail::linear_rows(out.value().data(), detail::rows_of<S>(x.value()), w, b);
  const std::uint32_t ib = has_bias ? b.id() : std::uint32_t(-1);
  tp.on_backward(out, [ix = x.id(), iw = w.id(), ib, io = out.id()](tape<S>& t) {
    auto G = t.adjoint(io);
    if (t.requires_grad(ix)) detail::times_weight(t, iw, detail::rows_of<S>(G), t.adjoint(ix).data(), true);
    if (t.requires_grad(iw)) detail::gemm(t.adjoint(iw), G.transpose(), t.value(ix), true);
    if (ib != std::uint32_t(-1) && t.requires_grad(ib)) t.adjoint(ib).row(0) += G.colwise().sum();
  });
  return out;
}

/// The linear layer without bias: y = x W^T.
template <Scalar S>
var<S> linear(const var<S>& x, const var<S>& w) {
  return linear(x, w, var<S>());
}

}  // namespace vpdarts
