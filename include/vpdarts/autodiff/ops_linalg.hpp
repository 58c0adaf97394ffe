#pragma once
/// @file ops_linalg.hpp
/// Matrix products: matmul with optional transposes and the fused linear
/// layer y = x W^T + b. Every product is Eigen's GEMM (`noalias()`), split over the threads by
/// detail::gemm (not by Eigen, whose threads spin while they wait);
/// an operand that requires no gradient costs no backward product. Under
/// precision::bf16 the products of a frozen parameter's weight go through
/// oneDNN in bf16 instead, and in float32 through oneDNN's float32 matmul
/// where fp32_gemm_in_use() says so (precision.hpp).

#include <type_traits>

#include "../detail/gemm.hpp"
#include "../detail/onednn_gemm.hpp"
#include "../precision.hpp"
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

/// True when the products with weight node `iw` run in bf16: a float model,
/// precision::bf16, and the weight a frozen parameter's leaf.
template <Scalar S>
bool bf16_weight(const tape<S>& t, std::uint32_t iw) {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
  if constexpr (std::is_same_v<S, float>) {
    const parameter<S>* p = t.at(iw).source;
    return p != nullptr && !p->requires_grad() && matmul_precision() == precision::bf16;
  }
#endif
  (void)t, (void)iw;
  return false;
}

/// True when the float32 products with weight node `iw` run on oneDNN: a float model,
/// precision::fp32, fp32_gemm_in_use() oneDNN, and the weight needing no gradient.
template <Scalar S>
bool onednn_f32_weight(const tape<S>& t, std::uint32_t iw) {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
  if constexpr (std::is_same_v<S, float>)
    return !t.requires_grad(iw) && matmul_precision() == precision::fp32 && fp32_gemm_in_use() == fp32_gemm::onednn;
#endif
  (void)t, (void)iw;
  return false;
}

#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
/// c (rows x n) (+)= a16 * op(W), as bf16_weight_product, for an operand already in bf16.
inline void bf16_weight_product_from(tape<float>& t, std::uint32_t iw, const std::uint16_t* a16, index rows, float* c,
                                     bool transposed, bool accumulate) {
  const parameter<float>& p = *t.at(iw).source;
  const index n = transposed ? p.rows() : p.cols(), k = transposed ? p.cols() : p.rows();
  onednn_matmuls& mm = onednn_matmuls::here();
  if (transposed && !accumulate) {
    // the forward product reads the weight in oneDNN's own layout, packed once per parameter version
    mm.run_laid_out(rows, n, k, a16, [&](const dnnl::memory::desc& d) {
      return p.bf16_laid_out(reinterpret_cast<const std::byte*>(&d.data), sizeof(d.data), d.get_size(),
                             [&](std::byte* dst) { mm.pack(p.value().data(), n, k, d, dst); });
    }, c);
    return;
  }
  mm.run(rows, n, k, a16, p.bf16_value(), transposed, c, accumulate);
}

/// c (rows x n) (+)= a (rows x k, float) * op(W) in bf16, W the frozen weight of node iw (out x in):
/// op(W) = W^T (n = out, k = in) when `transposed`, else W (n = in, k = out).
inline void bf16_weight_product(tape<float>& t, std::uint32_t iw, const float* a, index rows, float* c,
                                bool transposed, bool accumulate) {
  const parameter<float>& p = *t.at(iw).source;
  const index k = transposed ? p.cols() : p.rows();
  borrowed_bf16<float> a16(t, rows * k);
  to_bf16(a, a16.data(), static_cast<std::size_t>(rows * k));
  bf16_weight_product_from(t, iw, a16.data(), rows, c, transposed, accumulate);
}
#endif

/// Calls f(first, count) over the rows [0, rows) of a matrix `cols` wide, in pieces of about
/// values_per_job values split over the threads (one thread for a small matrix).
template <class F>
void parallel_rows(index rows, index cols, F&& f) {
  parallel_chunks(rows, std::max<index>(1, (index{1} << 14) / std::max<index>(cols, 1)), std::forward<F>(f));
}

/// The end of a product, in one pass over the rows: out = (out + b) * scale + residual, each part
/// only when given (b, scale: 1 x out.cols(); residual: out's shape).
template <Scalar S>
void linear_epilogue(matrix_map<S> out, const S* b, const S* scale, const S* residual) {
  if (b == nullptr && scale == nullptr && residual == nullptr) return;
  const index cols = out.cols();
  parallel_rows(out.rows(), cols, [&](index first, index count) {
    Eigen::Map<matrix<S>> o(out.data() + first * cols, count, cols);
    if (b != nullptr) o.rowwise() += Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>>(b, cols);
    if (scale != nullptr) o.array().rowwise() *= Eigen::Map<const Eigen::Array<S, 1, Eigen::Dynamic>>(scale, cols);
    if (residual != nullptr) o.noalias() += Eigen::Map<const matrix<S>>(residual + first * cols, count, cols);
  });
}

/// out = x W^T (+ b unless ib is -1), W and b nodes iw and ib of t, for x a rows x W.cols() row-major map;
/// then out *= scale and out += residual where those are given (linear_epilogue).
template <Scalar S>
void linear_rows(tape<S>& t, matrix_map<S> out, const matrix_map<S>& x, std::uint32_t iw, std::uint32_t ib,
                 const S* scale = nullptr, const S* residual = nullptr) {
  if (bf16_weight(t, iw)) {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
    if constexpr (std::is_same_v<S, float>) bf16_weight_product(t, iw, x.data(), x.rows(), out.data(), true, false);
#endif
  } else if (onednn_f32_weight(t, iw)) {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
    if constexpr (std::is_same_v<S, float>) {
      const auto w = t.value(iw);  // out x in: x W^T reads it as n x k
      onednn_matmuls::here().run_f32(x.rows(), w.rows(), w.cols(), x.data(), w.data(), true, out.data(), false);
    }
#endif
  } else {
    gemm(out, x, t.value(iw).transpose());
  }
  linear_epilogue(out, ib != std::uint32_t(-1) ? t.value(ib).data() : static_cast<const S*>(nullptr), scale, residual);
}

#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
/// linear_rows for an operand x16 already in bf16 (out.rows() x W.cols()), where bf16_weight(t, iw).
inline void linear_rows_from16(tape<float>& t, matrix_map<float> out, const std::uint16_t* x16, std::uint32_t iw,
                               std::uint32_t ib, const float* scale = nullptr, const float* residual = nullptr) {
  bf16_weight_product_from(t, iw, x16, out.rows(), out.data(), true, false);
  linear_epilogue(out, ib != std::uint32_t(-1) ? t.value(ib).data() : static_cast<const float*>(nullptr), scale, residual);
}
#endif

/// out = x W^T (+ b when b is not empty), for x a rows x W.cols() row-major map; then * scale and
/// + residual when those are not empty (a LayerScale vector and a skip connection).
template <Scalar S>
void linear_rows(matrix_map<S> out, const matrix_map<S>& x, const var<S>& w, const var<S>& b,
                 const var<S>& scale = {}, const var<S>& residual = {}) {
  linear_rows(w.owner(), out, x, w.id(), b.valid() ? b.id() : std::uint32_t(-1),
              scale.valid() ? scale.value().data() : static_cast<const S*>(nullptr),
              residual.valid() ? residual.value().data() : static_cast<const S*>(nullptr));
}

/// out = g W (or out += g W with `accumulate`): the input gradient of a linear
/// layer whose weight is node iw, g rows x out; bf16 as linear_rows.
template <Scalar S>
void times_weight(tape<S>& t, std::uint32_t iw, const matrix_map<S>& g, matrix_map<S> out, bool accumulate) {
  if (bf16_weight(t, iw)) {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
    if constexpr (std::is_same_v<S, float>) bf16_weight_product(t, iw, g.data(), g.rows(), out.data(), false, accumulate);
#endif
  } else if (onednn_f32_weight(t, iw)) {
#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
    if constexpr (std::is_same_v<S, float>) {
      const auto w = t.value(iw);  // out x in: g W reads it as k x n
      onednn_matmuls::here().run_f32(g.rows(), w.cols(), w.rows(), g.data(), w.data(), false, out.data(), accumulate);
    }
#endif
  } else {
    gemm(out, g, t.value(iw), accumulate);
  }
}

#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
/// times_weight for g16 already in bf16 (rows x W.rows()), where bf16_weight(t, iw).
inline void times_weight_from16(tape<float>& t, std::uint32_t iw, const std::uint16_t* g16, matrix_map<float> out,
                                bool accumulate) {
  bf16_weight_product_from(t, iw, g16, out.rows(), out.data(), false, accumulate);
}
#endif

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
    if (t.requires_grad(ix)) detail::times_weight(t, iw, G, t.adjoint(ix), true);
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
