#pragma once
/// @file ops_fused_mlp.hpp
/// A transformer block's MLP branch as one fused node (see ops_fused.hpp): layer_norm_mlp.

#include <optional>

#include "ops_fused.hpp"

namespace vpdarts {

/// residual + linear(act(linear(layer_norm(x, gamma, beta, eps), w1, b1)), w2, b2) * scale: a
/// transformer block's whole MLP branch and skip connection as one node. x is R x D, gamma and
/// beta 1 x D, w1 M x D, b1 1 x M (or empty), w2 out x M, b2 1 x out (or empty), scale 1 x out (or
/// empty), residual R x out (or empty). With every weight constant neither the LayerNorm output,
/// nor the activation's, nor the product before the residual is added are kept; of the R x M hidden
/// layer (the largest activation of a block), `memory` says (the tape's execution_config when not given):
/// - keep: it is kept before the activation, for backward's derivative; when both products run in
///   bf16 (a float tape configured for bf16) the activation's derivative is kept instead, in bf16
///   (half the memory), and backward multiplies by it in the second product's epilogue
///   (backend::times_weight_through);
/// - recompute: it is not kept; backward computes the LayerNorm and the first product again (one
///   more R x D x M product) from each row's LayerNorm statistics.
/// In float32 both give the same bits. In bf16 they do not: keep rounds the activation's derivative
/// to bf16, recompute takes it in float32, so the gradients differ by that rounding (about 1e-3
/// relative) and a search may end in another genotype where two operators are close.
/// Otherwise it is activation_linear(layer_norm_linear(...)). @throws shape_error as those do.
template <Scalar S>
var<S> layer_norm_mlp(const var<S>& x, const var<S>& gamma, const var<S>& beta, S eps, const var<S>& w1,
                      const var<S>& b1, activation act, const var<S>& w2, const var<S>& b2, const var<S>& scale = {},
                      const var<S>& residual = {}, std::optional<mlp_memory> memory = std::nullopt) {
  tape<S>& t = detail::same_tape("layer_norm_mlp", x, w1);
  detail::same_tape("layer_norm_mlp", x, w2);
  detail::check_layer_norm("layer_norm_mlp", x, gamma, beta);
  detail::check_linear("layer_norm_mlp", x.rows(), x.cols(), w1, b1);
  detail::check_linear("layer_norm_mlp", x.rows(), w1.rows(), w2, b2);
  detail::check_scale("layer_norm_mlp", scale, w2.rows());
  detail::check_residual("layer_norm_mlp", residual, x.rows(), w2.rows());
  if (residual.valid()) detail::same_tape("layer_norm_mlp", x, residual);
  if (!detail::all_constant<S>({&gamma, &beta, &w1, &b1, &w2, &b2, &scale}))
    return activation_linear(layer_norm_linear(x, gamma, beta, eps, w1, b1), act, w2, b2, scale, residual);
  const index r = x.rows(), d = x.cols(), m = w1.rows();
  var<S> out = t.make(r, w2.rows(), x.requires_grad() || (residual.valid() && residual.requires_grad()));
  const kernels::backend<S> be = t.backend();
  S* stats = x.requires_grad() ? t.template scratch<S>(static_cast<std::size_t>(2 * r)) : nullptr;
  // the second product's operand type; keep: the hidden layer before the activation as S, or, when
  // both products are bf16, the activation's derivative as bf16
  const kernels::element fc2_reads = be.operand_of(detail::weight_of(t, w2.id()));
  const bool keep = memory.value_or(t.config().mlp) == mlp_memory::keep && x.requires_grad();
  const bool half = keep && fc2_reads == kernels::element::bf16 &&
                    be.operand_of(detail::weight_of(t, w1.id())) == kernels::element::bf16;
  S* kept = keep && !half ? t.template scratch<S>(static_cast<std::size_t>(r * m)) : nullptr;
  std::uint16_t* kept16 = half ? t.template scratch<std::uint16_t>(static_cast<std::size_t>(r * m)) : nullptr;
  const kernels::rows<S> kept_rows = kept16 ? kernels::rows<S>::of(kept16, r, m) : kernels::rows<S>::of(kept, r, m);
  const std::uint32_t ib1 = detail::id_or_none(b1), is = detail::id_or_none(scale), ir = detail::id_or_none(residual);
  {
    // LayerNorm and the first product into pre, the activation into the second product's operand, then
    // that product with its epilogue; with kept16 the activation also writes its derivative there
    // (in place, over the hidden layer, when it is not kept and the second product reads S)
    typename tape<S>::borrowed h(t, kept ? 1 : r, kept ? 1 : m);
    const bool in_place = kept == nullptr && fc2_reads == kernels::element::value;
    kernels::operand_buffer<S> post(be.pool(), in_place ? 1 : r * m, fc2_reads);
    S* pre = kept ? kept : h.data();
    void* operand = in_place ? static_cast<void*>(pre) : static_cast<void*>(post.data());
    detail::layer_norm_linear_rows(t, x.value().data(), gamma.value().data(), beta.value().data(), r, d, eps, stats,
                                   w1.id(), ib1, pre);
    be.activation_forward(act, pre, operand, fc2_reads, r * m, kept16);
    detail::linear_rows(out.value().data(), kernels::rows<S>{operand, r, m, fc2_reads}, w2, b2, scale, residual);
  }
  t.on_backward(out, [ix = x.id(), ig = gamma.id(), ib = beta.id(), iw1 = w1.id(), ib1, iw2 = w2.id(), io = out.id(),
                      is, ir, act, eps, stats, kept = kept_rows.data, kept_type = kept_rows.type](tape<S>& tp) {
    detail::residual_backward(tp, io, ir);
    if (!tp.at(ix).requires_grad) return;
    const index r = tp.at(ix).rows, d = tp.at(ix).cols, m = tp.at(iw1).rows;
    const kernels::backend<S> be = tp.backend();
    const bool derivative_kept = kept_type == kernels::element::bf16;
    typename tape<S>::borrowed dh(tp, derivative_kept ? 1 : r, derivative_kept ? 1 : m);
    // the first product's operand, the gradient at the hidden layer: bf16 when that product reads bf16
    // (or when the derivative kept is bf16)
    const bool to16 = derivative_kept || be.operand_of(detail::weight_of(tp, iw1)) == kernels::element::bf16;
    kernels::buffer<std::uint16_t, S> dh16(be.pool(), to16 ? r * m : 1);
    std::uint16_t* const g16 = to16 ? dh16.data() : nullptr;
    {
      typename tape<S>::borrowed ds = detail::scale_buffer(tp, io, is);
      const kernels::rows<S> g = detail::unscaled_adjoint(tp, io, is, ds);
      if (derivative_kept) {  // both products in bf16: the derivative multiplies in the second's epilogue
        be.times_weight_through(detail::weight_of(tp, iw2), g, static_cast<const std::uint16_t*>(kept), g16);
      } else {
        const bool again = kept == nullptr;
        typename tape<S>::borrowed h(tp, again ? r : 1, again ? m : 1);
        if (again)  // the statistics are kept; recomputed, they are equal
          detail::layer_norm_linear_rows(tp, tp.value(ix).data(), tp.value(ig).data(), tp.value(ib).data(), r, d, eps,
                                         static_cast<S*>(nullptr), iw1, ib1, h.data());
        detail::times_weight(tp, iw2, g, dh.data(), false);
        be.activation_backward_in_place(act, again ? h.data() : static_cast<const S*>(kept), dh.data(), r * m, g16);
      }
    }
    typename tape<S>::borrowed dn(tp, r, d);
    detail::times_weight(tp, iw1, g16 ? kernels::rows<S>::of(g16, r, m) : detail::rows_of<S>(dh.map()), dn.data(), false);
    be.layer_norm_backward(tp.value(ix).data(), tp.value(ig).data(), stats, dn.data(), tp.adjoint(ix).data(), r, d);
  });
  return out;
}

}  // namespace vpdarts
