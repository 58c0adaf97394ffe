#pragma once
/// @file onednn.hpp
/// The kernels that run on oneDNN's matmul (onednn_matmul.hpp): a frozen weight's product (bf16 under
/// precision::bf16, with the weight laid out for the matrix unit; float32 where the float32 engine is
/// oneDNN) and attention's forward and backward as batched bf16 products over (image, head), around
/// vpdarts' own softmax and roundings (eigen.hpp). Without VPDARTS_WITH_DNNL they throw (the backend
/// never calls them then).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../error.hpp"
#include "../fwd.hpp"
#include "eigen_attention.hpp"
#include "onednn_matmul.hpp"
#include "operand.hpp"

namespace vpdarts::kernels::onednn {

/// Rows below which a forward bf16 product reads its weight packed for the matrix unit (the batch-1
/// inference of a small ViT: there oneDNN's repacking of a plain weight on every call costs as much as
/// the product). From this many rows on it reads the plain copy that its input gradient reads too, so
/// a search step holds one bf16 copy of each frozen weight, not two (ViT-B/16: 164 MiB less), and
/// on AMX runs 2-3 % faster (docs/performance.md).
inline constexpr index packed_weight_rows = 256;

/// Weights of at least this many values have their float32 input-gradient products (c = a W) run on
/// oneDNN's JIT GEMM (dnnl_sgemm) instead of its matmul primitive. At ViT-B/16's shapes (1576 rows,
/// 2 threads, an AMX Xeon) the matmul's kernel reads W in that orientation slowly: 152-156 GFLOP/s
/// for fc2 (768 x 3072) and 233-274 for qkv and fc1, where the GEMM runs 338-352 (docs/performance.md).
/// Smaller weights (a toy ViT's) stay on the matmul: no gain was measured there, and the GEMM's own
/// workspace costs about 7 MiB once. The forward products stay on the matmul, whose kernel applies
/// their epilogue.
inline constexpr index gemm_weight_values = index{1} << 20;

#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
/// c (rows x n) (+)= a * op(W) on oneDNN: op(W) = W^T (n = out) when `transposed` (a linear layer's
/// forward), else W (n = in: its input gradient). a is float32 (a float32 product; an input gradient
/// with a weight of at least gemm_weight_values values runs on oneDNN's GEMM) or bf16 (a bf16
/// product with W's cached bf16 copy: W must be frozen). A short forward bf16 product (fewer than
/// packed_weight_rows rows) reads W in the layout oneDNN prefers for its matrix unit, packed once per
/// parameter version; a longer one, and every input gradient, reads the plain row-major copy.
/// Without `accumulate`, the epilogue e is applied by the product's kernel where oneDNN can: returns
/// whether it was (the caller applies it otherwise).
inline bool weight_product(const weight<float>& w, const rows<float>& a, float* c, bool transposed, bool accumulate,
                           const epilogue<float>& e = {}) {
  const index n = transposed ? w.out : w.in, k = transposed ? w.in : w.out;
  matmuls& mm = matmuls::here();
  if (a.type == element::value) {
    if (!transposed && w.in * w.out >= gemm_weight_values) {
      mm.run_f32_gemm(a.count, n, k, a.values(), w.value, c, accumulate);
      return false;  // an input gradient: no epilogue
    }
    return mm.run_f32(a.count, n, k, a.values(), w.value, transposed, c, accumulate, e);
  }
  if (transposed && !accumulate && a.count < packed_weight_rows) {
    return mm.run_laid_out(a.count, n, k, a.halves(), [&](const dnnl::memory::desc& d) {
      return w.bf16.laid_out(reinterpret_cast<const std::byte*>(&d.data), sizeof(d.data), d.get_size(),
                             [&](std::byte* dst) { mm.pack(w.value, n, k, d, dst); });
    }, c, e);
  }
  return mm.run(a.count, n, k, a.halves(), w.bf16.plain(), transposed, c, accumulate, e);
}

/// c16 (a.count x W.in, bf16) = (a W) * factor16 elementwise, rounded to bf16 once: the input gradient of
/// a linear layer through the activation before it, with a in bf16 and W frozen, the multiplication in
/// the product's epilogue. False, with nothing computed, where oneDNN has no such kernel.
inline bool input_gradient_through(const weight<float>& w, const rows<float>& a, const std::uint16_t* factor16,
                                   std::uint16_t* c16) {
  return matmuls::here().run_times(a.count, w.in, w.out, a.halves(), w.bf16.plain(), factor16, c16);
}

/// Images per group of attention's products: about 2^19 T x T scores at most (2 MiB in float, so that
/// they stay in a core's cache between a product, the softmax and the next product: ViT-B/16 at 197
/// tokens, one image), at least one image, and the batch split into groups of equal size.
inline index attention_group(index batch, index heads, index seq) {
  const index most = std::clamp<index>((index{1} << 19) / (heads * seq * seq), 1, batch);
  const index groups = (batch + most - 1) / most;
  return (batch + groups - 1) / groups;
}

/// Attention forward in bf16: o ((batch*seq) x d rows, float or bf16 as o_type says) = softmax(Q K^T /
/// sqrt(d_h)) V, Q K^T and P V as batched products over (image, head), from q in bf16 by head. The
/// images go in groups (attention_group) through memory borrowed from `pool`.
inline void attention_forward(const qkv<float>& q, void* o, element o_type, block_pool<float>& pool) {
  detail::profile_scope profiled(detail::profile_kind::attention_rest);
  using dims4 = matmuls::dims4;
  const index batch = q.batch, heads = q.heads, seq = q.seq, d = q.d, dh = q.head_dim(), tt = seq * seq,
              part = batch * seq * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  const index group = attention_group(batch, heads, seq);
  buffer<float, float> scores(pool, group * heads * tt);
  buffer<std::uint16_t, float> p16(pool, group * heads * tt);
  const std::uint16_t* q16 = q.halves();
  auto& mm = matmuls::here();
  const dims4 dense{heads * seq * dh, seq * dh, dh, 1}, dense_t{heads * seq * dh, seq * dh, 1, dh},
      ps{heads * tt, tt, seq, 1}, os{seq * d, dh, d, 1};
  const bool o16 = o_type == element::bf16;
  for (index b0 = 0; b0 < batch; b0 += group) {
    const index g = std::min(group, batch - b0), off = b0 * heads * seq * dh;
    float* p = scores.data();
    mm.run_batched({g, heads, seq, dh}, dense, {g, heads, dh, seq}, dense_t, {g, heads, seq, seq}, ps, q16 + off,
                   q16 + part + off, p, false);  // S = Q K^T
    eigen::softmax_rows(p, g * heads * seq, seq, scale, p16.data(), false);  // P, in bf16 only
    mm.run_batched({g, heads, seq, seq}, ps, {g, heads, seq, dh}, dense, {g, heads, seq, dh}, os, p16.data(),
                   q16 + 2 * part + off, offset<float>(o, o_type, b0 * seq * d), false, o16);  // O = P V
  }
}

/// The backward of attention_forward: adds into gin ((batch*seq) x 3d rows; overwrites it with
/// `accumulate` false) the gradient for gout ((batch*seq) x d, float rows). gin is float, or (gin_type
/// bf16, not accumulating) bf16. The probabilities are computed again (the same bf16 products as the
/// forward's, so the same values).
inline void attention_backward(const qkv<float>& q, void* gin, element gin_type, bool accumulate, const float* gout,
                               block_pool<float>& pool) {
  detail::profile_scope profiled(detail::profile_kind::attention_rest);
  using dims4 = matmuls::dims4;
  const index batch = q.batch, heads = q.heads, seq = q.seq, d = q.d, dh = q.head_dim(), tt = seq * seq,
              part = batch * seq * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  // the images go in groups whose T x T matrices stay in cache between the products and the softmax
  const index group = attention_group(batch, heads, seq), n = group * heads * tt;
  buffer<std::uint16_t, float> go16(pool, part), a16(pool, n);
  const bool g16 = gin_type == element::bf16;
  buffer<float, float> probs(pool, n), ds(pool, n), dqkv(pool, g16 ? 3 * part / 2 + 1 : 3 * part);
  const std::uint16_t* qh = q.halves();
  std::uint16_t* dout = go16.data();
  std::uint16_t* a = a16.data();
  eigen::to_heads(gout, dout, batch, seq, 1, heads, dh, d);
  const dims4 dense{heads * seq * dh, seq * dh, dh, 1}, dense_t{heads * seq * dh, seq * dh, 1, dh},
      ps{heads * tt, tt, seq, 1}, pts{heads * tt, tt, 1, seq};
  auto& mm = matmuls::here();
  // dV, dQ, dK go to a head-major buffer (float, or bf16 for a bf16 gin), then into gin (a strided
  // destination with accumulation would get oneDNN's slow kernel)
  const auto at = [&](index n) { return offset<float>(dqkv.data(), gin_type, n); };
  for (index b0 = 0; b0 < batch; b0 += group) {
    const index g = std::min(group, batch - b0), off = b0 * heads * seq * dh;
    const dims4 bhtd{g, heads, seq, dh}, bhtt{g, heads, seq, seq}, bhdt{g, heads, dh, seq};
    const std::uint16_t *qg = qh + off, *dog = dout + off;
    mm.run_batched(bhtd, dense, bhdt, dense_t, bhtt, ps, qg, qg + part, probs.data(), false);           // S = Q K^T
    eigen::softmax_rows(probs.data(), g * heads * seq, seq, scale, a, true);                         // P, and A = bf16(P)
    mm.run_batched(bhtt, pts, bhtd, dense, bhtd, dense, a, dog, at(2 * part + off), false, g16);      // dV = A^T dO
    mm.run_batched(bhtd, dense, bhdt, dense_t, bhtt, ps, dog, qg + 2 * part, ds.data(), false);       // dA = dO V^T
    eigen::softmax_backward_rows(ds.data(), probs.data(), g * heads * seq, seq, scale, a);            // dS in bf16
    mm.run_batched(bhtt, ps, bhtd, dense, bhtd, dense, a, qg + part, at(off), false, g16);            // dQ = dS K
    mm.run_batched(bhtt, pts, bhtd, dense, bhtd, dense, a, qg, at(part + off), false, g16);           // dK = dS^T Q
  }
  if (g16)
    eigen::from_heads(reinterpret_cast<const std::uint16_t*>(dqkv.data()), static_cast<std::uint16_t*>(gin), false,
                      batch, seq, 3, heads, dh, 3 * d);
  else
    eigen::from_heads(dqkv.data(), static_cast<float*>(gin), accumulate, batch, seq, 3, heads, dh, 3 * d);
}

#else
[[noreturn]] inline void not_built() { throw state_error("vpdarts was built without oneDNN"); }
inline bool weight_product(const weight<float>&, const rows<float>&, float*, bool, bool, const epilogue<float>& = {}) {
  not_built();
}
inline bool input_gradient_through(const weight<float>&, const rows<float>&, const std::uint16_t*, std::uint16_t*) {
  not_built();
}
inline void attention_forward(const qkv<float>&, void*, element, block_pool<float>&) { not_built(); }
inline void attention_backward(const qkv<float>&, void*, element, bool, const float*, block_pool<float>&) { not_built(); }
#endif

}  // namespace vpdarts::kernels::onednn
