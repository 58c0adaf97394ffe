#pragma once
/// @file ops_reduce.hpp
/// Reductions to a scalar, and the weighted sum sum_k w_k X_k whose weights
/// are themselves differentiable (the MixedOp of the search space).

#include <span>

#include "tape.hpp"

namespace vpdarts {

/// The sum of all elements, as a 1x1 variable.
template <Scalar S>
var<S> sum(const var<S>& a) {
  tape<S>& t = detail::tape_of("sum", a);
  var<S> out = t.make(1, 1, a.requires_grad());
  out.value()(0, 0) = a.value().sum();
  t.on_backward(out, [ia = a.id(), io = out.id()](tape<S>& x) {
    x.adjoint(ia).array() += x.adjoint(io)(0, 0);
  });
  return out;
}

/// The mean of all elements, as a 1x1 variable.
template <Scalar S>
var<S> mean(const var<S>& a) {
  tape<S>& t = detail::tape_of("mean", a);
  var<S> out = t.make(1, 1, a.requires_grad());
  const S inv = S(1) / static_cast<S>(a.size());
  out.value()(0, 0) = a.value().sum() * inv;
  t.on_backward(out, [ia = a.id(), io = out.id(), inv](tape<S>& x) {
    x.adjoint(ia).array() += x.adjoint(io)(0, 0) * inv;
  });
  return out;
}

/// sum_k w_k X_k: the weights w are a 1xK or Kx1 variable, the K operands
/// share one shape. Gradients flow to the weights and to every operand.
/// @throws shape_error for K = 0, a weight count that differs from K, or operands of different shapes.
template <Scalar S>
var<S> weighted_sum(const var<S>& w, std::span<const var<S>> xs) {
  tape<S>& t = detail::tape_of("weighted_sum", w);
  const index k = static_cast<index>(xs.size());
  if (k == 0) throw shape_error("weighted_sum: no operands");
  if (w.size() != k || (w.rows() != 1 && w.cols() != 1))
    throw shape_error(detail::cat("weighted_sum: weights are ", detail::shape_str(w.rows(), w.cols()), " but there are ",
                                  k, " operands (expected 1x", k, " or ", k, "x1)"));
  bool rg = w.requires_grad();
  for (index i = 0; i < k; ++i) {
    t.check(xs[i], "weighted_sum");
    if (xs[i].rows() != xs[0].rows() || xs[i].cols() != xs[0].cols())
      throw shape_error(detail::cat("weighted_sum: operand ", i, " is ", detail::shape_str(xs[i].rows(), xs[i].cols()),
                                    " but operand 0 is ", detail::shape_str(xs[0].rows(), xs[0].cols())));
    rg = rg || xs[i].requires_grad();
  }
  var<S> out = t.make(xs[0].rows(), xs[0].cols(), rg);
  std::uint32_t* ids = t.template scratch<std::uint32_t>(static_cast<std::size_t>(k));
  const S* wv = w.value().data();
  auto Y = out.value();
  Y = wv[0] * xs[0].value();
  ids[0] = xs[0].id();
  for (index i = 1; i < k; ++i) {
    Y += wv[i] * xs[i].value();
    ids[i] = xs[i].id();
  }
  t.on_backward(out, [iw = w.id(), io = out.id(), ids, k](tape<S>& x) {
    auto G = x.adjoint(io);
    const S* wv = x.value(iw).data();
    const bool gw = x.requires_grad(iw);
    for (index i = 0; i < k; ++i) {
      if (x.requires_grad(ids[i])) x.adjoint(ids[i]) += wv[i] * G;
      if (gw) x.adjoint(iw).data()[i] += (G.array() * x.value(ids[i]).array()).sum();
    }
  });
  return out;
}

/// weighted_sum over an initializer list of operands.
template <Scalar S>
var<S> weighted_sum(const var<S>& w, std::initializer_list<var<S>> xs) {
  return weighted_sum(w, std::span<const var<S>>(xs.begin(), xs.size()));
}

}  // namespace vpdarts
