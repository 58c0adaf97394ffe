#pragma once
/// @file ops_nn.hpp
/// Neural-network kernels, each fused with its own backward: row softmax,
/// row log-softmax, LayerNorm with affine, and cross-entropy with integer labels.

#include <algorithm>
#include <cmath>
#include <span>

#include "../detail/parallel.hpp"
#include "../kernels/eigen_attention.hpp"
#include "tape.hpp"

namespace vpdarts {

/// softmax over each row.
template <Scalar S>
var<S> softmax_rows(const var<S>& a) {
  tape<S>& t = detail::tape_of("softmax_rows", a);
  var<S> out = t.make(a.rows(), a.cols(), a.requires_grad());
  auto X = a.value();
  auto Y = out.value();
  for (index i = 0; i < X.rows(); ++i) {
    Y.row(i) = (X.row(i).array() - X.row(i).maxCoeff()).exp();
    Y.row(i) /= Y.row(i).sum();
  }
  t.on_backward(out, [ia = a.id(), io = out.id()](tape<S>& x) {
    auto Y = x.value(io);
    auto G = x.adjoint(io);
    auto dX = x.adjoint(ia);
    for (index i = 0; i < Y.rows(); ++i) {
      const S dot = G.row(i).dot(Y.row(i));
      dX.row(i).array() += Y.row(i).array() * (G.row(i).array() - dot);
    }
  });
  return out;
}

/// log(softmax) over each row, computed stably.
template <Scalar S>
var<S> log_softmax_rows(const var<S>& a) {
  tape<S>& t = detail::tape_of("log_softmax_rows", a);
  var<S> out = t.make(a.rows(), a.cols(), a.requires_grad());
  auto X = a.value();
  auto Y = out.value();
  for (index i = 0; i < X.rows(); ++i) {
    const S m = X.row(i).maxCoeff();
    const S lse = m + std::log((X.row(i).array() - m).exp().sum());
    Y.row(i).array() = X.row(i).array() - lse;
  }
  t.on_backward(out, [ia = a.id(), io = out.id()](tape<S>& x) {
    auto Y = x.value(io);
    auto G = x.adjoint(io);
    auto dX = x.adjoint(ia);
    for (index i = 0; i < Y.rows(); ++i) dX.row(i).array() += G.row(i).array() - Y.row(i).array().exp() * G.row(i).sum();
  });
  return out;
}

namespace detail {

/// Checks LayerNorm's operands. @throws shape_error naming `fn`; state_error for another tape.
template <Scalar S>
void check_layer_norm(const char* fn, const var<S>& x, const var<S>& gamma, const var<S>& beta) {
  x.owner().check(beta, fn);
  x.owner().check(gamma, fn);
  const index r = x.rows(), d = x.cols();
  for (const var<S>* p : {&gamma, &beta})
    if (p->rows() != 1 || p->cols() != d)
      throw shape_error(cat(fn, ": ", p == &gamma ? "gamma" : "beta", " is ", shape_str(p->rows(), p->cols()),
                            ", expected 1x", d, " for an input of ", shape_str(r, d)));
}

}  // namespace detail

/// LayerNorm over each row with affine: (x - mean) / sqrt(var + eps) * gamma + beta.
/// x is R x D, gamma and beta are 1 x D. Mean and inverse deviation per row are saved for backward.
/// @throws shape_error when gamma or beta is not 1 x D.
template <Scalar S>
var<S> layer_norm(const var<S>& x, const var<S>& gamma, const var<S>& beta, S eps = S(1e-6)) {
  tape<S>& t = detail::same_tape("layer_norm", x, gamma);
  detail::check_layer_norm("layer_norm", x, gamma, beta);
  const index r = x.rows(), d = x.cols();
  const bool rg = x.requires_grad() || gamma.requires_grad() || beta.requires_grad();
  var<S> out = t.make(r, d, rg);
  S* stats = rg ? t.template scratch<S>(static_cast<std::size_t>(2 * r)) : nullptr;  // mean, rstd
  kernels::eigen::layer_norm(x.value().data(), out.value().data(), kernels::element::value, gamma.value().data(),
                             beta.value().data(), r, d, eps, stats);
  t.on_backward(out, [ix = x.id(), ig = gamma.id(), ib = beta.id(), io = out.id(), stats](tape<S>& tp) {
    auto X = tp.value(ix);
    auto G = tp.adjoint(io);
    const bool gx = tp.requires_grad(ix), gg = tp.requires_grad(ig), gb = tp.requires_grad(ib);
    const index r = X.rows(), d = X.cols();
    if (gg || gb)
      for (index i = 0; i < r; ++i) {
        const S mu = stats[2 * i], rstd = stats[2 * i + 1];
        if (gg) tp.adjoint(ig).row(0).array() += G.row(i).array() * (X.row(i).array() - mu) * rstd;
        if (gb) tp.adjoint(ib).row(0) += G.row(i);
      }
    if (gx) kernels::eigen::layer_norm_backward(X.data(), tp.value(ig).data(), stats, G.data(), tp.adjoint(ix).data(), r, d);
  });
  return out;
}

/// Mean cross-entropy of logits (B x C) against integer labels (B of them, each in [0, C)),
/// fused with log-softmax. Returns a 1x1 variable.
/// @throws shape_error when the label count differs from B; value_error for a label out of
/// range or a loss that is not finite (NaN or Inf in the logits).
template <Scalar S>
var<S> cross_entropy(const var<S>& logits, std::span<const int> labels) {
  tape<S>& t = detail::tape_of("cross_entropy", logits);
  const index b = logits.rows(), c = logits.cols();
  if (static_cast<index>(labels.size()) != b)
    throw shape_error(detail::cat("cross_entropy: logits are ", detail::shape_str(b, c), " but there are ",
                                  labels.size(), " labels"));
  int* saved = t.template scratch<int>(labels.size());
  for (index i = 0; i < b; ++i) {
    if (labels[i] < 0 || labels[i] >= c)
      throw value_error(detail::cat("cross_entropy: label ", i, " is ", labels[i], ", out of range for ", c,
                                    " classes (logits ", detail::shape_str(b, c), ")"));
    saved[i] = labels[i];
  }
  const bool rg = logits.requires_grad();
  var<S> out = t.make(1, 1, rg);
  S* probs = rg ? t.template scratch<S>(static_cast<std::size_t>(b * c)) : nullptr;
  auto X = logits.value();
  S total = 0;
  for (index i = 0; i < b; ++i) {
    const S m = X.row(i).maxCoeff();
    const S z = (X.row(i).array() - m).exp().sum();
    total += std::log(z) + m - X(i, saved[i]);
    if (probs) {
      Eigen::Map<Eigen::Array<S, 1, Eigen::Dynamic>> p(probs + i * c, c);
      p = (X.row(i).array() - m).exp() / z;
    }
  }
  const S loss = total / S(b);
  if (!std::isfinite(loss))
    throw value_error(detail::cat("cross_entropy: the loss is ", loss, " (logits ", detail::shape_str(b, c),
                                  " hold NaN or Inf)"));
  out.value()(0, 0) = loss;
  t.on_backward(out, [il = logits.id(), io = out.id(), probs, saved, b, c](tape<S>& x) {
    const S g = x.adjoint(io)(0, 0) / S(b);
    auto dX = x.adjoint(il);
    const_matrix_map<S> p(probs, b, c);
    dX += g * p;
    for (index i = 0; i < b; ++i) dX(i, saved[i]) -= g;
  });
  return out;
}

}  // namespace vpdarts
