#pragma once
/// @file ops_linalg.hpp
/// Matrix products: matmul with optional transposes and the fused linear
/// layer y = x W^T + b. Every product is a single Eigen GEMM (`noalias()`);
/// an operand that requires no gradient costs no backward product.

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
  auto A = a.value();
  auto B = b.value();
  auto C = out.value();
  if (!ta && !tb) C.noalias() = A * B;
  if (ta && !tb) C.noalias() = A.transpose() * B;
  if (!ta && tb) C.noalias() = A * B.transpose();
  if (ta && tb) C.noalias() = A.transpose() * B.transpose();
  tp.on_backward(out, [ia = a.id(), ib = b.id(), io = out.id(), ta, tb](tape<S>& x) {
    auto A = x.value(ia);
    auto B = x.value(ib);
    auto G = x.adjoint(io);
    if (x.requires_grad(ia)) {
      auto dA = x.adjoint(ia);
      if (!ta && !tb) dA.noalias() += G * B.transpose();
      if (ta && !tb) dA.noalias() += B * G.transpose();
      if (!ta && tb) dA.noalias() += G * B;
      if (ta && tb) dA.noalias() += B.transpose() * G.transpose();
    }
    if (x.requires_grad(ib)) {
      auto dB = x.adjoint(ib);
      if (!ta && !tb) dB.noalias() += A.transpose() * G;
      if (ta && !tb) dB.noalias() += A * G;
      if (!ta && tb) dB.noalias() += G.transpose() * A;
      if (ta && tb) dB.noalias() += G.transpose() * A.transpose();
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

/// out = x W^T (+ b when b is not empty), for x any rows x W.cols() matrix.
template <Scalar S, class X>
void linear_rows(matrix_map<S> out, const X& x, const var<S>& w, const var<S>& b) {
  out.noalias() = x * w.value().transpose();
  if (b.valid()) out.rowwise() += b.value().row(0);
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
  detail::linear_rows(out.value(), x.value(), w, b);
  const std::uint32_t ib = has_bias ? b.id() : std::uint32_t(-1);
  tp.on_backward(out, [ix = x.id(), iw = w.id(), ib, io = out.id()](tape<S>& t) {
    auto G = t.adjoint(io);
    if (t.requires_grad(ix)) t.adjoint(ix).noalias() += G * t.value(iw);
    if (t.requires_grad(iw)) t.adjoint(iw).noalias() += G.transpose() * t.value(ix);
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
