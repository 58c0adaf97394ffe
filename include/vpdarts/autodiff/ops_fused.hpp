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

#include "activation.hpp"
#include "ops_attention.hpp"
#include "ops_elementwise.hpp"
#include "ops_linalg.hpp"
#include "ops_nn.hpp"
#include "../detail/profile.hpp"

namespace vpdarts {
namespace detail {

/// True when none of the operands needs a gradient (an empty var counts as none).
template <Scalar S>
bool all_constant(std::initializer_list<const var<S>*> vs) {
  for (const var<S>* v : vs)
    if (v->valid() && v->requires_grad()) return false;
  return true;
}

/// The gradient reaching the product before a LayerScale: g * scale (into `buffer`), or g itself.
template <Scalar S>
matrix_map<S> unscaled_adjoint(tape<S>& tp, std::uint32_t io, std::uint32_t is, typename tape<S>::borrowed& buffer) {
  if (is == std::uint32_t(-1)) return tp.adjoint(io);
  const index cols = tp.at(io).cols;
  const S* g = tp.adjoint(io).data();
  const S* scale = tp.value(is).data();
  S* out = buffer.data();
  parallel_rows(tp.at(io).rows, cols, [&](index first, index count) {
    Eigen::Map<Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(out + first * cols, count, cols) =
        Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(g + first * cols, count, cols)
            .rowwise() * Eigen::Map<const Eigen::Array<S, 1, Eigen::Dynamic>>(scale, cols);
  });
  return buffer.map();
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
  parallel_chunks(tp.at(io).rows * tp.at(io).cols, values_per_job, [&](index at, index m) {
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

/// y = act(x) for m values, on the calling thread.
template <Scalar S>
void activation_forward_serial(activation act, const S* x, S* y, index m) {
  if (act == activation::gelu) gelu_forward_serial(x, y, m);
  else quick_gelu_forward_serial(x, y, m);
}

/// dx += g * act'(x) for m values, on the calling thread (dx = with `accumulate` false; d may be g).
template <Scalar S>
void activation_backward_serial(activation act, const S* x, const S* g, S* d, index m, bool accumulate) {
  if (act == activation::gelu) gelu_backward_serial(x, g, d, m, accumulate);
  else quick_gelu_backward_serial(x, g, d, m, accumulate);
}

/// y = act(x) for n values.
template <Scalar S>
void activation_forward(activation act, const S* x, S* y, index n) {
  detail::profile_scope profiled(detail::profile_kind::activation);
  parallel_chunks(n, values_per_job, [&](index at, index m) { activation_forward_serial(act, x + at, y + at, m); });
}

/// dx += g * act'(x) for n values (dx = with `accumulate` false; d may be g).
template <Scalar S>
void activation_backward(activation act, const S* x, const S* g, S* d, index n, bool accumulate = true) {
  detail::profile_scope profiled(detail::profile_kind::activation);
  parallel_chunks(n, values_per_job,
                  [&](index at, index m) { activation_backward_serial(act, x + at, g + at, d + at, m, accumulate); });
}

/// g *= act'(x) for n values, in place; x given as S, or as bf16 in x16 (x null). With g16 set, the
/// result is also written rounded to bf16 there (the operand of the next bf16 product).
template <Scalar S>
void activation_backward_in_place(activation act, const S* x, const std::uint16_t* x16, S* g, index n,
                                  std::uint16_t* g16 = nullptr) {
  detail::profile_scope profiled(detail::profile_kind::activation);
  parallel_chunks(n, values_per_job, [&](index at, index m) {
    if (x != nullptr) {
      activation_backward_serial(act, x + at, g + at, g + at, m, false);
    } else {
      S widened[values_per_job];  // the bf16 values of this chunk, as S
      for (index i = 0; i < m; ++i) widened[i] = static_cast<S>(from_bf16(x16[at + i]));
      activation_backward_serial(act, widened, g + at, g + at, m, false);
    }
    if (g16 != nullptr)
      for (index i = 0; i < m; ++i) g16[at + i] = to_bf16(static_cast<float>(g[at + i]));
  });
}

/// y16 = bf16(act(x)) and x16 = bf16(x) for n values, in one pass (chunks of the activation on the stack).
template <Scalar S>
void activation_forward_bf16(activation act, const S* x, std::uint16_t* x16, std::uint16_t* y16, index n) {
  detail::profile_scope profiled(detail::profile_kind::activation);
  parallel_chunks(n, values_per_job, [&](index at, index m) {
    S y[values_per_job];
    activation_forward_serial(act, x + at, y, m);
    for (index i = 0; i < m; ++i) {
      x16[at + i] = to_bf16(static_cast<float>(x[at + i]));
      y16[at + i] = to_bf16(static_cast<float>(y[i]));
    }
  });
}

/// out = layer_norm(x) W^T (+ b): x r x d, W node iw, b node ib (or -1), each row's mean and 1/std
/// into stats (or not: null). For a bf16 product the LayerNorm is written in bf16 directly.
template <Scalar S>
void layer_norm_linear_rows(tape<S>& t, const S* x, const S* gamma, const S* beta, index r, index d, S eps, S* stats,
                            std::uint32_t iw, std::uint32_t ib, matrix_map<S> out) {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
  if constexpr (std::is_same_v<S, float>)
    if (bf16_weight(t, iw)) {
      borrowed_bf16<S> n16(t, r * d);
      layer_norm_rows_bf16(x, n16.data(), gamma, beta, r, d, eps, stats);
      linear_rows_from16(t, out, n16.data(), iw, ib);
      return;
    }
#endif
  typename tape<S>::borrowed n(t, r, d);
  layer_norm_rows(x, n.data(), gamma, beta, r, d, eps, stats);
  linear_rows(t, out, n.map(), iw, ib);
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
                                 detail::id_or_none(b), out.value());
  t.on_backward(out, [ix = x.id(), ig = gamma.id(), iw = w.id(), io = out.id(), stats, r, d](tape<S>& tp) {
    typename tape<S>::borrowed dh(tp, r, d);
    detail::times_weight(tp, iw, tp.adjoint(io), dh.map(), false);
    detail::layer_norm_backward_rows(tp.value(ix).data(), tp.value(ig).data(), stats, dh.data(),
                                     tp.adjoint(ix).data(), r, d);
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
    typename tape<S>::borrowed g(t, r, m);
    detail::activation_forward(act, h.value().data(), g.data(), r * m);
    detail::linear_rows(out.value(), g.map(), w, b, scale, residual);
  }
  const std::uint32_t is = detail::id_or_none(scale), ir = detail::id_or_none(residual);
  t.on_backward(out, [ih = h.id(), iw = w.id(), io = out.id(), is, ir, act, r, m](tape<S>& tp) {
    detail::residual_backward(tp, io, ir);
    if (!tp.at(ih).requires_grad) return;
    typename tape<S>::borrowed dg(tp, r, m), ds(tp, is == std::uint32_t(-1) ? 1 : r, tp.at(io).cols);
    detail::times_weight(tp, iw, detail::unscaled_adjoint(tp, io, is, ds), dg.map(), false);
    detail::activation_backward(act, tp.value(ih).data(), dg.data(), tp.adjoint(ih).data(), r * m);
  });
  return out;
}

/// What layer_norm_mlp keeps of the MLP's hidden layer for backward, when every weight is constant.
enum class mlp_memory {
  keep,       ///< the hidden layer before the activation (R x M values; in bf16 when the products run in bf16): the fastest step, vit_block's default
  recompute,  ///< only the LayerNorm statistics; backward computes LayerNorm and fc1 again (docs/performance.md); layer_norm_mlp's default
};

/// residual + linear(act(linear(layer_norm(x, gamma, beta, eps), w1, b1)), w2, b2) * scale: a
/// transformer block's whole MLP branch and skip connection as one node. x is R x D, gamma and
/// beta 1 x D, w1 M x D, b1 1 x M (or empty), w2 out x M, b2 1 x out (or empty), scale 1 x out (or
/// empty), residual R x out (or empty). With every weight constant neither the LayerNorm output,
/// nor the activation's, nor the product before the residual is added are kept; of the R x M hidden
/// layer (the largest activation of a block), `memory` says:
/// - keep: it is kept before the activation, for backward's derivative (in bf16, half the memory,
///   when both products run in bf16: precision::bf16 on a float model);
/// - recompute: it is not kept; backward computes the LayerNorm and the first product again (one
///   more R x D x M product) from each row's LayerNorm statistics.
/// In float32 both give the same bits. In bf16 they do not: keep takes the activation's derivative
/// at the bf16-rounded hidden layer, recompute at the float32 one, so the gradients differ by that
/// rounding (about 1e-3 relative) and a search may end in another genotype where two operators are close.
/// Otherwise it is activation_linear(layer_norm_linear(...)). @throws shape_error as those do.
template <Scalar S>
var<S> layer_norm_mlp(const var<S>& x, const var<S>& gamma, const var<S>& beta, S eps, const var<S>& w1,
                      const var<S>& b1, activation act, const var<S>& w2, const var<S>& b2, const var<S>& scale = {},
                      const var<S>& residual = {}, mlp_memory memory = mlp_memory::recompute) {
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
  S* stats = x.requires_grad() ? t.template scratch<S>(static_cast<std::size_t>(2 * r)) : nullptr;
  // keep: the hidden layer before the activation, as S, or as bf16 when the products are bf16 (they
  // round their operands to bf16 anyway)
  const bool keep = memory == mlp_memory::keep && x.requires_grad();
  const bool half = keep && detail::bf16_weight(t, w1.id()) && detail::bf16_weight(t, w2.id());
  S* kept = keep && !half ? t.template scratch<S>(static_cast<std::size_t>(r * m)) : nullptr;
  std::uint16_t* kept16 = half ? t.template scratch<std::uint16_t>(static_cast<std::size_t>(r * m)) : nullptr;
  // LayerNorm and the first product into h
  const auto hidden = [](tape<S>& tp, std::uint32_t ix, std::uint32_t ig, std::uint32_t ib, std::uint32_t iw1,
                         std::uint32_t ib1, S e, S* st, matrix_map<S> h) {
    detail::layer_norm_linear_rows(tp, tp.value(ix).data(), tp.value(ig).data(), tp.value(ib).data(), h.rows(),
                                   tp.at(ix).cols, e, st, iw1, ib1, h);
  };
  const std::uint32_t ib1 = detail::id_or_none(b1), is = detail::id_or_none(scale), ir = detail::id_or_none(residual);
  {
    typename tape<S>::borrowed h(t, kept ? 1 : r, kept ? 1 : m), a(t, kept ? r : 1, kept ? m : 1);
    S* pre = kept ? kept : h.data();  // before the activation
    S* post = kept ? a.data() : h.data();  // after it (in place unless the hidden layer is kept as S)
    hidden(t, x.id(), gamma.id(), beta.id(), w1.id(), ib1, eps, stats, matrix_map<S>(pre, r, m));
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
    if constexpr (std::is_same_v<S, float>)
      if (half) {  // the kept hidden layer and the second product's operand, both in bf16, in one pass
        detail::borrowed_bf16<S> post16(t, r * m);
        detail::activation_forward_bf16(act, pre, kept16, post16.data(), r * m);
        detail::linear_rows_from16(t, out.value(), post16.data(), w2.id(), detail::id_or_none(b2),
                                   scale.valid() ? scale.value().data() : nullptr,
                                   residual.valid() ? residual.value().data() : nullptr);
      }
#endif
    if (!half) {
      detail::activation_forward(act, pre, post, r * m);
      detail::linear_rows(out.value(), matrix_map<S>(post, r, m), w2, b2, scale, residual);
    }
  }
  t.on_backward(out, [ix = x.id(), ig = gamma.id(), ib = beta.id(), iw1 = w1.id(), ib1, iw2 = w2.id(), io = out.id(),
                      is, ir, act, eps, stats, saved = kept16 ? static_cast<void*>(kept16) : static_cast<void*>(kept), half,
                      hidden, r, d, m](tape<S>& tp) {
    S* const kept = half ? nullptr : static_cast<S*>(saved);
    const std::uint16_t* const kept16 = half ? static_cast<const std::uint16_t*>(saved) : nullptr;
    detail::residual_backward(tp, io, ir);
    if (!tp.at(ix).requires_grad) return;
    typename tape<S>::borrowed dh(tp, r, m);
    // the first product's operand written in bf16 by the activation's derivative, when that product is bf16
    const bool fc1_bf16 = detail::bf16_weight(tp, iw1);
    detail::borrowed_bf16<S> dh16(tp, fc1_bf16 ? r * m : 1);
    std::uint16_t* const g16 = fc1_bf16 ? dh16.data() : nullptr;
    {
      const bool again = kept == nullptr && kept16 == nullptr;
      typename tape<S>::borrowed h(tp, again ? r : 1, again ? m : 1), ds(tp, is == std::uint32_t(-1) ? 1 : r, tp.at(io).cols);
      if (again) hidden(tp, ix, ig, ib, iw1, ib1, eps, nullptr, h.map());  // the statistics are kept; recomputed, they are equal
      detail::times_weight(tp, iw2, detail::unscaled_adjoint(tp, io, is, ds), dh.map(), false);
      detail::activation_backward_in_place(act, again ? h.data() : kept, kept16, dh.data(), r * m, g16);
    }
    typename tape<S>::borrowed dn(tp, r, d);
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
    if constexpr (std::is_same_v<S, float>)
      if (g16 != nullptr) detail::times_weight_from16(tp, iw1, g16, dn.map(), false);
#endif
    if (g16 == nullptr) detail::times_weight(tp, iw1, dh.map(), dn.map(), false);
    detail::layer_norm_backward_rows(tp.value(ix).data(), tp.value(ig).data(), stats, dn.data(), tp.adjoint(ix).data(), r, d);
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

/// residual + linear(attention(qkv, batch, heads), w, b) * scale: qkv is (B*T) x 3D, w out x D,
/// b 1 x out (or empty), scale a LayerScale vector 1 x out (or empty), residual (B*T) x out (or
/// empty: none). With w, b and scale constant neither the attention output, nor its probabilities
/// (backward computes them again), nor the product before the residual is added are kept.
/// @throws shape_error as attention and linear do, or for a scale or residual of the wrong shape.
template <Scalar S>
var<S> attention_linear(const var<S>& qkv, index batch, index heads, const var<S>& w, const var<S>& b,
                        const var<S>& scale = {}, const var<S>& residual = {}) {
  tape<S>& t = detail::same_tape("attention_linear", qkv, w);
  const index rows = qkv.rows(), c3 = qkv.cols();
  detail::check_attention("attention_linear", rows, c3, batch, heads);
  const index d = c3 / 3, seq = rows / batch, tt = seq * seq;
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
  // In bf16 mode the attention products of a frozen block run in bf16 too (as they were when recorded).
  const bool bf16 = detail::bf16_attention<S>();
  {
    typename tape<S>::borrowed o(t, rows, d);
    if (bf16) {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
      if constexpr (std::is_same_v<S, float>)
        detail::attention_forward_bf16(t, qkv.value().data(), o.data(), nullptr, false, batch, heads, seq, d);
#endif
    } else {
      typename tape<S>::borrowed per_thread(t, detail::max_threads(), tt);
      detail::attention_forward(qkv.value().data(), o.data(), per_thread.data(), false, batch, heads, seq, d);
    }
    detail::linear_rows(out.value(), o.map(), w, b, scale, residual);
  }
  const std::uint32_t is = detail::id_or_none(scale), ir = detail::id_or_none(residual);
  t.on_backward(out, [iq = qkv.id(), iw = w.id(), io = out.id(), is, ir, batch, heads, seq, d, tt, bf16](tape<S>& tp) {
    detail::residual_backward(tp, io, ir);
    if (!tp.at(iq).requires_grad) return;
    typename tape<S>::borrowed d_o(tp, batch * seq, d), ds(tp, is == std::uint32_t(-1) ? 1 : batch * seq, tp.at(io).cols);
    detail::times_weight(tp, iw, detail::unscaled_adjoint(tp, io, is, ds), d_o.map(), false);
    if (bf16) {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
      if constexpr (std::is_same_v<S, float>)
        detail::attention_backward_bf16(tp, tp.value(iq).data(), tp.adjoint(iq).data(), d_o.data(), nullptr, batch,
                                        heads, seq, d);
#endif
      return;
    }
    typename tape<S>::borrowed work(tp, detail::max_threads(), 2 * tt);
    detail::attention_backward(tp.value(iq).data(), tp.adjoint(iq).data(), d_o.data(), static_cast<const S*>(nullptr), work.data(), batch,
                               heads, seq, d);
  });
  return out;
}

/// What layer_norm_attention keeps of qkv for backward, when every weight is constant.
enum class attention_memory {
  keep,       ///< qkv ((B*T) x 3E values; in bf16 when attention's products run in bf16): the fastest step, the default
  recompute,  ///< only the LayerNorm statistics; backward computes LayerNorm and the qkv product again (docs/performance.md)
};

/// residual + linear(attention(layer_norm_linear(x, gamma, beta, eps, wqkv, bqkv), batch, heads), w, b)
/// * scale: a transformer block's whole attention branch and skip connection as one node. x is
/// (B*T) x D, gamma and beta 1 x D, wqkv 3E x D, bqkv 1 x 3E (or empty), w out x E, b 1 x out (or
/// empty), scale 1 x out (or empty), residual (B*T) x out (or empty). With every weight constant the
/// branch keeps, for backward, only each row's LayerNorm statistics and, as `memory` says:
/// - keep: qkv, in bf16 (half the memory, and laid out for the attention products) when those
///   products run in bf16 (precision::bf16 on a float model);
/// - recompute: nothing more; backward computes the LayerNorm and the qkv product again (one more
///   (B*T) x D x 3E product, the same as the forward's, so the same values).
/// Backward computes the attention probabilities again, as attention_linear does.
/// Otherwise it is attention_linear(layer_norm_linear(...)). @throws shape_error as those do.
template <Scalar S>
var<S> layer_norm_attention(const var<S>& x, const var<S>& gamma, const var<S>& beta, S eps, const var<S>& wqkv,
                            const var<S>& bqkv, index batch, index heads, const var<S>& w, const var<S>& b,
                            const var<S>& scale = {}, const var<S>& residual = {},
                            attention_memory memory = attention_memory::keep) {
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
  const bool grad = x.requires_grad(), keep = grad && memory == attention_memory::keep,
             bf16 = detail::bf16_attention<S>();
  S* stats = grad ? t.template scratch<S>(static_cast<std::size_t>(2 * rows)) : nullptr;
  S* kept = keep && !bf16 ? t.template scratch<S>(static_cast<std::size_t>(rows * c3)) : nullptr;
  std::uint16_t* kept16 = keep && bf16 ? t.template scratch<std::uint16_t>(static_cast<std::size_t>(rows * c3)) : nullptr;
  {
    typename tape<S>::borrowed q(t, kept ? 1 : rows, kept ? 1 : c3);
    S* qkv = kept ? kept : q.data();
    detail::layer_norm_linear_rows(t, x.value().data(), gamma.value().data(), beta.value().data(), rows, width, eps,
                                   stats, wqkv.id(), detail::id_or_none(bqkv), matrix_map<S>(qkv, rows, c3));
    typename tape<S>::borrowed o(t, rows, d);
    if (bf16) {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
      if constexpr (std::is_same_v<S, float>) {
        if (kept16 != nullptr) {  // rounded into the kept copy, which backward reads
          detail::to_bf16_heads(qkv, kept16, batch, seq, 3, heads, d / heads, c3);
          detail::attention_forward_bf16_heads(t, kept16, o.data(), nullptr, false, batch, heads, seq, d);
        } else {
          detail::attention_forward_bf16(t, qkv, o.data(), nullptr, false, batch, heads, seq, d);
        }
      }
#endif
    } else {
      typename tape<S>::borrowed per_thread(t, detail::max_threads(), seq * seq);
      detail::attention_forward(qkv, o.data(), per_thread.data(), false, batch, heads, seq, d);
    }
    detail::linear_rows(out.value(), o.map(), w, b, scale, residual);
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
    typename tape<S>::borrowed dq(tp, rows, c3);
    {
      // recompute: qkv again from x and the kept statistics, as the forward made it (and rounded it)
      const bool again = saved == nullptr;
      typename tape<S>::borrowed q(tp, again ? rows : 1, again ? c3 : 1);
      detail::borrowed_bf16<S> q16(tp, again && bf16 ? rows * c3 : 1);
      const void* qkv = saved;
      if (again) {
        detail::layer_norm_linear_rows(tp, tp.value(ix).data(), tp.value(ig).data(), tp.value(ib).data(), rows, width,
                                       eps, static_cast<S*>(nullptr), iqkv, ibq, q.map());
        qkv = q.data();
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
        if constexpr (std::is_same_v<S, float>)
          if (bf16) {
            detail::to_bf16_heads(q.data(), q16.data(), batch, seq, 3, heads, d / heads, c3);
            qkv = q16.data();
          }
#endif
      }
      typename tape<S>::borrowed d_o(tp, rows, d), ds(tp, is == std::uint32_t(-1) ? 1 : rows, tp.at(io).cols);
      detail::times_weight(tp, iw, detail::unscaled_adjoint(tp, io, is, ds), d_o.map(), false);
      if (bf16) {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
        if constexpr (std::is_same_v<S, float>)
          detail::attention_backward_bf16_heads(tp, static_cast<const std::uint16_t*>(qkv), dq.data(), false,
                                                d_o.data(), nullptr, batch, heads, seq, d);
#endif
      } else {
        S* g = dq.data();
        detail::parallel_chunks(rows * c3, detail::values_per_job,
                                [&](index at, index m) { std::fill(g + at, g + at + m, S(0)); });
        typename tape<S>::borrowed work(tp, detail::max_threads(), 2 * seq * seq);
        detail::attention_backward(static_cast<const S*>(qkv), g, d_o.data(), static_cast<const S*>(nullptr),
                                   work.data(), batch, heads, seq, d);
      }
    }
    typename tape<S>::borrowed dn(tp, rows, width);
    detail::times_weight(tp, iqkv, dq.map(), dn.map(), false);
    detail::layer_norm_backward_rows(tp.value(ix).data(), tp.value(ig).data(), stats, dn.data(), tp.adjoint(ix).data(),
                                     rows, width);
  });
  return out;
}

}  // namespace vpdarts
