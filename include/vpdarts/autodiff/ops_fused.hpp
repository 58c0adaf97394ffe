#pragma once
/// @file ops_fused.hpp
/// Two ops as one node, for the frozen layers of a transformer block. When the
/// layer's weights need no gradient (frozen, untracked, or under no_grad), the
/// intermediate result (a LayerNorm output, a GELU output, an attention output)
/// is only needed to compute this node's value, never by backward: it lives in
/// memory borrowed for the call instead of the arena, and backward recomputes
/// only the product with the weight. This keeps 7 of the 18 D-wide activations
/// of a block out of memory during a search step. With a trainable weight each
/// op is exactly the composition of the basic ops it names.

#include "ops_attention.hpp"
#include "ops_elementwise.hpp"
#include "ops_linalg.hpp"
#include "ops_nn.hpp"

namespace vpdarts {
namespace detail {

/// True when none of the operands needs a gradient (an empty var counts as none).
template <Scalar S>
bool all_constant(std::initializer_list<const var<S>*> vs) {
  for (const var<S>* v : vs)
    if (v->valid() && v->requires_grad()) return false;
  return true;
}

}  // namespace detail

/// linear(layer_norm(x, gamma, beta, eps), w, b): x is R x D, gamma and beta
/// 1 x D, w out x D, b 1 x out (or empty); the result is R x out. With gamma,
/// beta, w and b constant the LayerNorm output is not kept (only each row's
/// mean and 1/std). @throws shape_error as layer_norm and linear do.
template <Scalar S>
var<S> layer_norm_linear(const var<S>& x, const var<S>& gamma, const var<S>& beta, S eps, const var<S>& w,
                         const var<S>& b) {
  tape<S>& t = detail::same_tape("layer_norm_linear", x, w);
  detail::check_layer_norm("layer_norm_linear", x, gamma, beta);
  detail::check_linear("layer_norm_linear", x.rows(), x.cols(), w, b);
  if (!detail::all_constant<S>({&gamma, &beta, &w, &b})) return linear(layer_norm(x, gamma, beta, eps), w, b);
  const index r = x.rows(), d = x.cols();
  var<S> out = t.make(r, w.rows(), x.requires_grad());
  S* stats = out.requires_grad() ? t.template scratch<S>(static_cast<std::size_t>(2 * r)) : nullptr;
  {
    typename tape<S>::borrowed h(t, r, d);
    detail::layer_norm_rows(x.value().data(), h.data(), gamma.value().data(), beta.value().data(), r, d, eps, stats);
    detail::linear_rows(out.value(), h.map(), w, b);
  }
  t.on_backward(out, [ix = x.id(), ig = gamma.id(), iw = w.id(), io = out.id(), stats, r, d](tape<S>& tp) {
    typename tape<S>::borrowed dh(tp, r, d);
    dh.map().noalias() = tp.adjoint(io) * tp.value(iw);
    detail::layer_norm_backward_rows(tp.value(ix).data(), tp.value(ig).data(), stats, dh.data(),
                                     tp.adjoint(ix).data(), r, d);
  });
  return out;
}

/// linear(gelu(h), w, b): h is R x M, w out x M, b 1 x out (or empty). With w
/// and b constant the GELU output is not kept. @throws shape_error as linear does.
template <Scalar S>
var<S> gelu_linear(const var<S>& h, const var<S>& w, const var<S>& b) {
  tape<S>& t = detail::same_tape("gelu_linear", h, w);
  detail::check_linear("gelu_linear", h.rows(), h.cols(), w, b);
  if (!detail::all_constant<S>({&w, &b})) return linear(gelu(h), w, b);
  const index r = h.rows(), m = h.cols();
  var<S> out = t.make(r, w.rows(), h.requires_grad());
  {
    typename tape<S>::borrowed g(t, r, m);
    detail::gelu_forward(h.value().data(), g.data(), r * m);
    detail::linear_rows(out.value(), g.map(), w, b);
  }
  t.on_backward(out, [ih = h.id(), iw = w.id(), io = out.id(), r, m](tape<S>& tp) {
    typename tape<S>::borrowed dg(tp, r, m);
    dg.map().noalias() = tp.adjoint(io) * tp.value(iw);
    detail::gelu_backward(tp.value(ih).data(), dg.data(), tp.adjoint(ih).data(), r * m);
  });
  return out;
}

/// linear(attention(qkv, batch, heads), w, b): qkv is (B*T) x 3D, w out x D,
/// b 1 x out (or empty). With w and b constant the attention output is not
/// kept (the probabilities are, when a gradient is needed).
/// @throws shape_error as attention and linear do.
template <Scalar S>
var<S> attention_linear(const var<S>& qkv, index batch, index heads, const var<S>& w, const var<S>& b) {
  tape<S>& t = detail::same_tape("attention_linear", qkv, w);
  const index rows = qkv.rows(), c3 = qkv.cols();
  detail::check_attention("attention_linear", rows, c3, batch, heads);
  const index d = c3 / 3, seq = rows / batch, tt = seq * seq;
  detail::check_linear("attention_linear", rows, d, w, b);
  if (!detail::all_constant<S>({&w, &b})) return linear(attention(qkv, batch, heads), w, b);
  var<S> out = t.make(rows, w.rows(), qkv.requires_grad());
  const bool keep = out.requires_grad();
  S* probs = keep ? t.template scratch<S>(static_cast<std::size_t>(batch * heads * tt)) : nullptr;
  {
    typename tape<S>::borrowed o(t, rows, d);
    typename tape<S>::borrowed per_thread(t, keep ? 1 : detail::max_threads(), keep ? 1 : tt);
    detail::attention_forward(qkv.value().data(), o.data(), keep ? probs : per_thread.data(), keep, batch, heads,
                              seq, d);
    detail::linear_rows(out.value(), o.map(), w, b);
  }
  t.on_backward(out, [iq = qkv.id(), iw = w.id(), io = out.id(), probs, batch, heads, seq, d, tt](tape<S>& tp) {
    typename tape<S>::borrowed d_o(tp, batch * seq, d);
    d_o.map().noalias() = tp.adjoint(io) * tp.value(iw);
    typename tape<S>::borrowed work(tp, detail::max_threads(), tt);
    detail::attention_backward(tp.value(iq).data(), tp.adjoint(iq).data(), d_o.data(), probs, work.data(), batch,
                               heads, seq, d);
  });
  return out;
}

}  // namespace vpdarts
