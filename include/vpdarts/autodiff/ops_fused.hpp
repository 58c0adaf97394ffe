#pragma once
/// @file ops_fused.hpp
/// Two ops as one node, for the frozen layers of a transformer block. When the
/// layer's weights need no gradient (frozen, untracked, or under no_grad), the
/// intermediate result (a LayerNorm output, a GELU output, an attention output)
/// is only needed to compute this node's value, never by backward: it lives in
/// memory borrowed for the call instead of the arena, and backward recomputes
/// only the product with the weight. The attention and MLP products also take
/// the block's skip connection (a residual added to the output), so the product
/// before the addition is not a node of its own. This keeps 9 of the 18 D-wide
/// activations of a block out of memory during a search step. With a trainable
/// weight each op is exactly the composition of the basic ops it names.
///
/// The nodes compute through the tape's kernels (kernels/backend.hpp), which
/// choose Eigen or oneDNN, float32 or bf16, as the tape's execution_config says;
/// a producer writes the operand type its consumer reads. This file holds the
/// helpers, layer_norm_linear and activation_linear; ops_fused_attention.hpp and
/// ops_fused_mlp.hpp hold the two branches of a block.

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

/// The gradient reaching the product before a LayerScale, as an operand: g * scale (into `buffer`), or g itself.
template <Scalar S>
kernels::rows<S> unscaled_adjoint(tape<S>& tp, std::uint32_t io, std::uint32_t is, typename tape<S>::borrowed& buffer) {
  const index rows = tp.at(io).rows, cols = tp.at(io).cols;
  if (is == std::uint32_t(-1)) return rows_of<S>(tp.adjoint(io));
  const S* g = tp.adjoint(io).data();
  const S* scale = tp.value(is).data();
  S* out = buffer.data();
  kernels::eigen::parallel_rows(rows, cols, [&](index first, index count) {
    Eigen::Map<Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(out + first * cols, count, cols) =
        Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(g + first * cols, count, cols)
            .rowwise() * Eigen::Map<const Eigen::Array<S, 1, Eigen::Dynamic>>(scale, cols);
  });
  return kernels::rows<S>::of(out, rows, cols);
}

/// Checks a LayerScale vector against the width of a product's output.
template <Scalar S>
void check_scale(const char* fn, const var<S>& scale, index out) {
  if (scale.valid() && (scale.rows() != 1 || scale.cols() != out))
    throw shape_error(cat(fn, ": the LayerScale vector is ", shape_str(scale.rows(), scale.cols()), ", expected 1x", out));
}

/// Checks a residual against a product's output (rows x out), when it is set.
template <Scalar S>
void check_residual(const char* fn, const var<S>& residual, index rows, index out) {
  if (residual.valid() && (residual.rows() != rows || residual.cols() != out))
    throw shape_error(cat(fn, ": the residual is ", shape_str(residual.rows(), residual.cols()), ", expected ",
                          shape_str(rows, out)));
}

/// The residual's gradient: adjoint(ir) += adjoint(io), when the residual is set and needs one.
template <Scalar S>
void residual_backward(tape<S>& tp, std::uint32_t io, std::uint32_t ir) {
  if (ir == std::uint32_t(-1) || !tp.at(ir).requires_grad) return;
  S* gr = tp.adjoint(ir).data();
  const S* go = tp.adjoint(io).data();
  parallel_chunks(tp.at(io).rows * tp.at(io).cols, kernels::eigen::values_per_job, [&](index at, index m) {
    Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>(gr + at, m) += Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>(go + at, m);
  });
}

/// add(residual, y) when residual is set (the composed form of a fused residual).
template <Scalar S>
var<S> maybe_residual(const var<S>& y, const var<S>& residual) {
  return residual.valid() ? add(residual, y) : y;
}

/// The id of v, or -1 for an empty var.
template <Scalar S>
std::uint32_t id_or_none(const var<S>& v) {
  return v.valid() ? v.id() : std::uint32_t(-1);
}

/// mul(y, scale) when scale is set (the composed form of a LayerScale).
template <Scalar S>
var<S> maybe_scale(const var<S>& y, const var<S>& scale) {
  return scale.valid() ? mul(y, scale) : y;
}

/// The unscaled gradient's buffer: rows x cols when a LayerScale is set (node is), else one value.
template <Scalar S>
typename tape<S>::borrowed scale_buffer(tape<S>& tp, std::uint32_t io, std::uint32_t is) {
  return typename tape<S>::borrowed(tp, is == std::uint32_t(-1) ? 1 : tp.at(io).rows, tp.at(io).cols);
}

/// out = layer_norm(x) W^T (+ b): x r x d, W node iw, b node ib (or -1), each row's mean and 1/std
/// into stats (or not: null). The LayerNorm is written in the type the product reads (bf16 for a bf16 product).
template <Scalar S>
void layer_norm_linear_rows(tape<S>& t, const S* x, const S* gamma, const S* beta, index r, index d, S eps, S* stats,
                            std::uint32_t iw, std::uint32_t ib, S* out) {
  const kernels::backend<S> be = t.backend();
  const kernels::weight<S> w = weight_of(t, iw);
  kernels::operand_buffer<S> n(be.pool(), r * d, be.operand_of(w));
  be.layer_norm(x, gamma, beta, r, d, eps, stats, n.data(), n.type());
  be.linear(w, n.as_rows(r, d), out, {ib != std::uint32_t(-1) ? t.value(ib).data() : static_cast<const S*>(nullptr)});
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
  detail::layer_norm_linear_rows(t, x.value().data(), gamma.value().data(), beta.value().data(), r, d, eps, stats, w.id(),
                                 detail::id_or_none(b), out.value().data());
  t.on_backward(out, [ix = x.id(), ig = gamma.id(), iw = w.id(), io = out.id(), stats, r, d](tape<S>& tp) {
    typename tape<S>::borrowed dh(tp, r, d);
    detail::times_weight(tp, iw, detail::rows_of<S>(tp.adjoint(io)), dh.data(), false);
    tp.backend().layer_norm_backward(tp.value(ix).data(), tp.value(ig).data(), stats, dh.data(), tp.adjoint(ix).data(),
                                     r, d);
  });
  return out;
}

/// residual + linear(act(h), w, b) * scale: h is R x M, w out x M, b 1 x out (or empty),
/// act GELU or QuickGELU, scale a LayerScale vector 1 x out (or empty), residual R x out (or
/// empty: none). With w, b and scale constant the activation's output is not kept, nor is the
/// product before the residual is added (a transformer block's MLP branch and skip connection
/// are one node). @throws shape_error as linear does, or for a scale or residual of the wrong shape.
template <Scalar S>
var<S> activation_linear(const var<S>& h, activation act, const var<S>& w, const var<S>& b, const var<S>& scale = {},
                         const var<S>& residual = {}) {
  tape<S>& t = detail::same_tape("activation_linear", h, w);
  detail::check_linear("activation_linear", h.rows(), h.cols(), w, b);
  detail::check_scale("activation_linear", scale, w.rows());
  detail::check_residual("activation_linear", residual, h.rows(), w.rows());
  if (residual.valid()) detail::same_tape("activation_linear", h, residual);
  if (!detail::all_constant<S>({&w, &b, &scale}))
    return detail::maybe_residual(
        detail::maybe_scale(linear(act == activation::gelu ? gelu(h) : quick_gelu(h), w, b), scale), residual);
  const index r = h.rows(), m = h.cols();
  var<S> out = t.make(r, w.rows(), h.requires_grad() || (residual.valid() && residual.requires_grad()));
  {
    const kernels::backend<S> be = t.backend();
    kernels::operand_buffer<S> g(be.pool(), r * m, be.operand_of(detail::weight_of(t, w.id())));
    be.activation_forward(act, h.value().data(), g.data(), g.type(), r * m);
    detail::linear_rows(out.value().data(), g.as_rows(r, m), w, b, scale, residual);
  }
  const std::uint32_t is = detail::id_or_none(scale), ir = detail::id_or_none(residual);
  t.on_backward(out, [ih = h.id(), iw = w.id(), io = out.id(), is, ir, act, r, m](tape<S>& tp) {
    detail::residual_backward(tp, io, ir);
    if (!tp.at(ih).requires_grad) return;
    typename tape<S>::borrowed dg(tp, r, m), ds = detail::scale_buffer(tp, io, is);
    detail::times_weight(tp, iw, detail::unscaled_adjoint(tp, io, is, ds), dg.data(), false);
    tp.backend().activation_backward(act, tp.value(ih).data(), dg.data(), tp.adjoint(ih).data(), r * m, true);
  });
  return out;
}

/// linear(gelu(h), w, b): activation_linear with the exact GELU and no LayerScale.
template <Scalar S>
var<S> gelu_linear(const var<S>& h, const var<S>& w, const var<S>& b) {
  detail::same_tape("gelu_linear", h, w);
  detail::check_linear("gelu_linear", h.rows(), h.cols(), w, b);
  return activation_linear(h, activation::gelu, w, b);
}

}  // namespace vpdarts
