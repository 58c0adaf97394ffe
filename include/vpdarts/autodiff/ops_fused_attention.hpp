#pragma once
/// @file ops_fused_attention.hpp
/// A transformer block's attention branch as fused nodes (see ops_fused.hpp): attention_linear and
/// layer_norm_attention.

#include <optional>

#include "ops_fused.hpp"

namespace vpdarts {

/// residual + linear(attention(qkv, batch, heads), w, b) * scale: qkv is (B*T) x 3D, w out x D,
/// b 1 x out (or empty), scale a LayerScale vector 1 x out (or empty), residual (B*T) x out (or
/// empty: none). With w, b and scale constant neither the attention output, nor its probabilities
/// (backward computes them again), nor the product before the residual is added are kept. The
/// attention products run in bf16 on a tape configured for bf16 (as they were when recorded).
/// @throws shape_error as attention and linear do, or for a scale or residual of the wrong shape.
template <Scalar S>
var<S> attention_linear(const var<S>& qkv, index batch, index heads, const var<S>& w, const var<S>& b,
                        const var<S>& scale = {}, const var<S>& residual = {}) {
  tape<S>& t = detail::same_tape("attention_linear", qkv, w);
  const index rows = qkv.rows(), c3 = qkv.cols();
  detail::check_attention("attention_linear", rows, c3, batch, heads);
  const index d = c3 / 3, seq = rows / batch;
  detail::check_linear("attention_linear", rows, d, w, b);
  detail::check_scale("attention_linear", scale, w.rows());
  detail::check_residual("attention_linear", residual, rows, w.rows());
  if (residual.valid()) detail::same_tape("attention_linear", qkv, residual);
  if (!detail::all_constant<S>({&w, &b, &scale}))
    return detail::maybe_residual(detail::maybe_scale(linear(attention(qkv, batch, heads), w, b), scale), residual);
  var<S> out = t.make(rows, w.rows(), qkv.requires_grad() || (residual.valid() && residual.requires_grad()));
  // The probabilities are not kept: backward computes them again from qkv (a T x T product per
  // image and head, small beside the block's linear products), which keeps batch * heads * T^2
  // values per block out of memory.
  const kernels::backend<S> be = t.backend();
  const bool bf16 = be.bf16_attention();
  {
    kernels::buffer<std::uint16_t, S> q16(be.pool(), bf16 ? rows * c3 : 1);
    const kernels::qkv<S> q = be.attention_operand(qkv.value().data(), batch, heads, seq, d, q16.data());
    kernels::operand_buffer<S> o(be.pool(), rows * d, be.attention_output(q, detail::weight_of(t, w.id())));
    be.attention_forward(q, o.data(), o.type());
    detail::linear_rows(out.value().data(), o.as_rows(rows, d), w, b, scale, residual);
  }
  const std::uint32_t is = detail::id_or_none(scale), ir = detail::id_or_none(residual);
  t.on_backward(out, [iq = qkv.id(), iw = w.id(), io = out.id(), is, ir, batch, heads, seq, d, bf16](tape<S>& tp) {
    detail::residual_backward(tp, io, ir);
    if (!tp.at(iq).requires_grad) return;
    const kernels::backend<S> be = tp.backend();
    typename tape<S>::borrowed d_o(tp, batch * seq, d), ds = detail::scale_buffer(tp, io, is);
    detail::times_weight(tp, iw, detail::unscaled_adjoint(tp, io, is, ds), d_o.data(), false);
    kernels::buffer<std::uint16_t, S> q16(be.pool(), bf16 ? 3 * batch * seq * d : 1);
    const kernels::qkv<S> q = bf16 ? be.attention_operand(tp.value(iq).data(), batch, heads, seq, d, q16.data())
                                   : kernels::qkv<S>{tp.value(iq).data(), batch, heads, seq, d, false};
    be.attention_backward(q, tp.adjoint(iq).data(), true, d_o.data());
  });
  return out;
}

/// residual + linear(attention(layer_norm_linear(x, gamma, beta, eps, wqkv, bqkv), batch, heads), w, b)
/// * scale: a transformer block's whole attention branch and skip connection as one node. x is
/// (B*T) x D, gamma and beta 1 x D, wqkv 3E x D, bqkv 1 x 3E (or empty), w out x E, b 1 x out (or
/// empty), scale 1 x out (or empty), residual (B*T) x out (or empty). With every weight constant the
/// branch keeps, for backward, only each row's LayerNorm statistics and, as `memory` says (the
/// tape's execution_config when not given):
/// - keep: qkv, in bf16 by head (half the memory, and laid out for the attention products) when
///   those products run in bf16 (a float tape configured for bf16);
/// - recompute: nothing more; backward computes the LayerNorm and the qkv product again (one more
///   (B*T) x D x 3E product, the same as the forward's, so the same values).
/// Backward computes the attention probabilities again, as attention_linear does.
/// Otherwise it is attention_linear(layer_norm_linear(...)). @throws shape_error as those do.
template <Scalar S>
var<S> layer_norm_attention(const var<S>& x, const var<S>& gamma, const var<S>& beta, S eps, const var<S>& wqkv,
                            const var<S>& bqkv, index batch, index heads, const var<S>& w, const var<S>& b,
                            const var<S>& scale = {}, const var<S>& residual = {},
                            std::optional<attention_memory> memory = std::nullopt) {
  tape<S>& t = detail::same_tape("layer_norm_attention", x, wqkv);
  detail::same_tape("layer_norm_attention", x, w);
  detail::check_layer_norm("layer_norm_attention", x, gamma, beta);
  detail::check_linear("layer_norm_attention", x.rows(), x.cols(), wqkv, bqkv);
  const index rows = x.rows(), width = x.cols(), c3 = wqkv.rows();
  detail::check_attention("layer_norm_attention", rows, c3, batch, heads);
  const index d = c3 / 3, seq = rows / batch;
  detail::check_linear("layer_norm_attention", rows, d, w, b);
  detail::check_scale("layer_norm_attention", scale, w.rows());
  detail::check_residual("layer_norm_attention", residual, rows, w.rows());
  if (residual.valid()) detail::same_tape("layer_norm_attention", x, residual);
  if (!detail::all_constant<S>({&gamma, &beta, &wqkv, &bqkv, &w, &b, &scale}))
    return attention_linear(layer_norm_linear(x, gamma, beta, eps, wqkv, bqkv), batch, heads, w, b, scale, residual);
  var<S> out = t.make(rows, w.rows(), x.requires_grad() || (residual.valid() && residual.requires_grad()));
  const kernels::backend<S> be = t.backend();
  const bool grad = x.requires_grad(), bf16 = be.bf16_attention(),
             keep = grad && memory.value_or(t.config().attention) == attention_memory::keep;
  S* stats = grad ? t.template scratch<S>(static_cast<std::size_t>(2 * rows)) : nullptr;
  // kept for backward: qkv as attention reads it (rows of S, or bf16 by head)
  S* kept = keep && !bf16 ? t.template scratch<S>(static_cast<std::size_t>(rows * c3)) : nullptr;
  std::uint16_t* kept16 = keep && bf16 ? t.template scratch<std::uint16_t>(static_cast<std::size_t>(rows * c3)) : nullptr;
  {
    typename tape<S>::borrowed q(t, kept ? 1 : rows, kept ? 1 : c3);
    kernels::buffer<std::uint16_t, S> q16(be.pool(), bf16 && kept16 == nullptr ? rows * c3 : 1);
    S* qkv = kept ? kept : q.data();
    detail::layer_norm_linear_rows(t, x.value().data(), gamma.value().data(), beta.value().data(), rows, width, eps,
                                   stats, wqkv.id(), detail::id_or_none(bqkv), qkv);
    const kernels::qkv<S> qh = be.attention_operand(qkv, batch, heads, seq, d, kept16 ? kept16 : q16.data());
    kernels::operand_buffer<S> o(be.pool(), rows * d, be.attention_output(qh, detail::weight_of(t, w.id())));
    be.attention_forward(qh, o.data(), o.type());
    detail::linear_rows(out.value().data(), o.as_rows(rows, d), w, b, scale, residual);
  }
  const std::uint32_t is = detail::id_or_none(scale), ir = detail::id_or_none(residual);
  t.on_backward(out, [ix = x.id(), ig = gamma.id(), ib = beta.id(), iqkv = wqkv.id(), ibq = detail::id_or_none(bqkv),
                      iw = w.id(), io = out.id(), is, ir, stats, eps,
                      saved = kept16 ? static_cast<const void*>(kept16) : static_cast<const void*>(kept), bf16, batch,
                      heads](tape<S>& tp) {
    detail::residual_backward(tp, io, ir);
    if (!tp.at(ix).requires_grad) return;
    // the shapes from the nodes (the step's capture has room for indices only)
    const index rows = tp.at(ix).rows, width = tp.at(ix).cols, c3 = tp.at(iqkv).rows, d = c3 / 3, seq = rows / batch;
    const kernels::backend<S> be = tp.backend();
    // qkv's gradient, in the type the qkv product's backward reads
    const kernels::weight<S> wq = detail::weight_of(tp, iqkv);
    kernels::operand_buffer<S> dq(be.pool(), rows * c3, be.attention_output({saved, batch, heads, seq, d, bf16}, wq));
    {
      // recompute: qkv again from x and the kept statistics, as the forward made it (and rounded it)
      const bool again = saved == nullptr;
      typename tape<S>::borrowed q(tp, again ? rows : 1, again ? c3 : 1);
      kernels::buffer<std::uint16_t, S> q16(be.pool(), again && bf16 ? rows * c3 : 1);
      kernels::qkv<S> qkv{saved, batch, heads, seq, d, bf16};
      if (again) {
        detail::layer_norm_linear_rows(tp, tp.value(ix).data(), tp.value(ig).data(), tp.value(ib).data(), rows, width,
                                       eps, static_cast<S*>(nullptr), iqkv, ibq, q.data());
        qkv = be.attention_operand(q.data(), batch, heads, seq, d, q16.data());
      }
      typename tape<S>::borrowed d_o(tp, rows, d), ds = detail::scale_buffer(tp, io, is);
      detail::times_weight(tp, iw, detail::unscaled_adjoint(tp, io, is, ds), d_o.data(), false);
      be.attention_backward(qkv, dq.data(), false, d_o.data(), dq.type());
    }
    typename tape<S>::borrowed dn(tp, rows, width);
    tp.backend().times_weight(wq, dq.as_rows(rows, c3), dn.data(), false);
    be.layer_norm_backward(tp.value(ix).data(), tp.value(ig).data(), stats, dn.data(), tp.adjoint(ix).data(), rows, width);
  });
  return out;
}

}  // namespace vpdarts
