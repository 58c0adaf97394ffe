#pragma once
/// @file backend.hpp
/// The one interface the fused tape nodes compute through: a weight product with its epilogue, the
/// input-gradient product, attention forward and backward, LayerNorm and the activations. It reads
/// the tape's execution_config and the weight's state and sends each call to the Eigen kernels
/// (eigen.hpp) or the oneDNN ones (onednn.hpp):
///
/// | call | oneDNN, bf16 | oneDNN, float32 | Eigen |
/// |---|---|---|---|
/// | product with a weight | precision::bf16, a frozen parameter's weight, float | precision::fp32, engine oneDNN, a constant weight, float (a large weight's input gradient on its GEMM) | every other |
/// | attention's products | precision::bf16, float (qkv by head) | | every other |
/// | LayerNorm, activations, softmax, epilogue | | | always (vpdarts' own kernels) |
///
/// A producer asks what its consumer reads (operand_of, bf16_attention) and writes that: a
/// LayerNorm before a bf16 product writes bf16 rows; a value operand given to a bf16 product is
/// rounded on the way (into borrowed memory), a bf16 operand given to another product widened.

#include <type_traits>

#include "eigen_attention.hpp"
#include "execution.hpp"
#include "onednn.hpp"
#include "operand.hpp"

namespace vpdarts::kernels {

/// The kernels of one tape (see the file's comment): its configuration and its pool of working memory.
template <Scalar S>
class backend {
 public:
  /// oneDNN serves float models only.
  static constexpr bool onednn_here = onednn::built && std::is_same_v<S, float>;

  /// With `multiply_adds` set, linear() and attention_forward() add their products' multiply-adds to it.
  backend(const execution_config& config, block_pool<S>& pool, std::uint64_t* multiply_adds = nullptr) noexcept
      : config_(config), pool_(pool), macs_(multiply_adds) {}

  /// The working memory kernels borrow from.
  block_pool<S>& pool() const noexcept { return pool_; }

  /// What a product with w reads: bf16 for a frozen parameter's weight under precision::bf16 (a float
  /// model), else values.
  element operand_of(const weight<S>& w) const noexcept {
    return bf16_attention() && w.frozen() ? element::bf16 : element::value;
  }

  /// True when the frozen products run in bf16 (a float model under precision::bf16), attention's too:
  /// attention then reads qkv by head (attention_operand).
  bool bf16_attention() const noexcept { return onednn_here && config_.products == precision::bf16; }

  /// out (x.count x w.out) = x W^T, then the epilogue (in oneDNN's kernel where it runs the product).
  void linear(const weight<S>& w, const rows<S>& x, S* out, const epilogue<S>& e = {}) const {
    count(x.count * w.out * w.in);
    if (!product(w, x, out, true, false, e)) eigen::apply(e, out, x.count, w.out);
  }

  /// out (g.count x w.in) = g W (+= with `accumulate`): a linear layer's input gradient.
  void times_weight(const weight<S>& w, const rows<S>& g, S* out, bool accumulate) const {
    product(w, g, out, false, accumulate);
  }

  /// LayerNorm of the r x d rows of x into out, as S or bf16 as `type` says; each row's mean and
  /// 1/std to stats (unless null).
  void layer_norm(const S* x, const S* gamma, const S* beta, index r, index d, S eps, S* stats, void* out,
                  element type) const {
    eigen::layer_norm(x, out, type, gamma, beta, r, d, eps, stats);
  }

  /// dx += d LN(x)/dx applied to dy (stats from layer_norm).
  void layer_norm_backward(const S* x, const S* gamma, const S* stats, const S* dy, S* dx, index r, index d) const {
    eigen::layer_norm_backward(x, gamma, stats, dy, dx, r, d);
  }

  /// y = act(x) for n values, into y as S or bf16 as `type` says; with dx16 set (and type bf16) act'(x) is
  /// also written there rounded to bf16 (what a block keeps for its backward: times_weight_through), in
  /// the same pass.
  void activation_forward(activation act, const S* x, void* y, element type, index n,
                          std::uint16_t* dx16 = nullptr) const {
    if (type == element::bf16)
      eigen::activation_forward_bf16(act, x, dx16, static_cast<std::uint16_t*>(y), n);
    else
      eigen::activation_forward(act, x, static_cast<S*>(y), n);
  }

  /// d += g * act'(x) for n values (d = with `accumulate` false).
  void activation_backward(activation act, const S* x, const S* g, S* d, index n, bool accumulate) const {
    eigen::activation_backward(act, x, g, d, n, accumulate);
  }

  /// g *= act'(x) in place for n values; with g16 set the result is also written there rounded to bf16
  /// (the operand of a bf16 product).
  void activation_backward_in_place(activation act, const S* x, S* g, index n, std::uint16_t* g16) const {
    eigen::activation_backward_in_place(act, x, g, n, g16);
  }

  /// out16 (g.count x w.in, bf16) = (g W) * derivative16, elementwise, rounded to bf16 once: the input
  /// gradient of a linear layer through the activation before it, whose derivative its forward kept
  /// in bf16 (activation_forward's dx16; g.count x w.in). For a bf16 product (operand_of(w) bf16) it
  /// is oneDNN's product with the multiplication in its epilogue; otherwise, or where oneDNN has no
  /// such kernel, the product in S and then the multiplication.
  void times_weight_through(const weight<S>& w, const rows<S>& g, const std::uint16_t* derivative16,
                            std::uint16_t* out16) const {
    if constexpr (onednn_here)
      if (operand_of(w) == element::bf16 &&
          as_bf16(g, [&](const rows<S>& g16) { return onednn::input_gradient_through(w, g16, derivative16, out16); }))
        return;
    const index n = g.count * w.in;
    buffer<S, S> product_rows(pool_, n);
    product(w, g, product_rows.data(), false, false);
    eigen::multiply_to_bf16(product_rows.data(), derivative16, out16, n);
  }

  /// q, k, v of `rows` ((batch*seq) x 3d, S) as attention reads them: the rows themselves, or (bf16
  /// attention) rounded into `by_head` (3*batch*seq*d bf16 values) by head.
  qkv<S> attention_operand(const S* rows, index batch, index heads, index seq, index d, std::uint16_t* by_head) const {
    if constexpr (onednn_here)
      if (bf16_attention()) {
        eigen::to_heads(rows, by_head, batch, seq, 3, heads, d / heads, 3 * d);
        return {by_head, batch, heads, seq, d, true};
      }
    return {rows, batch, heads, seq, d, false};
  }

  /// The type attention writes its output (or, not accumulating, its input gradient) in for a product
  /// with w after it: bf16 when attention runs in bf16 (q by head) and that product reads bf16 (oneDNN
  /// rounds its float32 sums as the product would have).
  element attention_output(const qkv<S>& q, const weight<S>& w) const noexcept {
    return q.by_head && operand_of(w) == element::bf16 ? element::bf16 : element::value;
  }

  /// o ((batch*seq) x d rows, of the type attention_output says) = softmax(Q K^T / sqrt(d_h)) V for
  /// every image and head.
  void attention_forward(const qkv<S>& q, void* o, element type = element::value) const {
    count(2 * q.batch * q.seq * q.seq * q.d);  // Q K^T and P V: per head seq^2 d/heads each
    if constexpr (onednn_here)
      if (q.by_head) return onednn::attention_forward(q, o, type, pool_);
    buffer<S, S> per_thread(pool_, detail::max_threads() * q.seq * q.seq);
    eigen::attention_forward(q, static_cast<S*>(o), per_thread.data(), false);
  }

  /// gin ((batch*seq) x 3d rows) (+)= the gradient for gout ((batch*seq) x d); the probabilities are
  /// computed again (the same values as the forward's). gin is S, or bf16 (type bf16: q by head, not
  /// accumulating; for a bf16 product after it, whose rounding oneDNN then makes).
  void attention_backward(const qkv<S>& q, void* gin_out, bool accumulate, const S* gout,
                          element type = element::value) const {
    if constexpr (onednn_here)
      if (q.by_head) return onednn::attention_backward(q, gin_out, type, accumulate, gout, pool_);
    S* gin = static_cast<S*>(gin_out);
    const index n = q.batch * q.seq * 3 * q.d;
    if (!accumulate)
      detail::parallel_chunks(n, eigen::values_per_job, [&](index at, index m) { std::fill(gin + at, gin + at + m, S(0)); });
    buffer<S, S> work(pool_, detail::max_threads() * 2 * q.seq * q.seq);
    eigen::attention_backward(q, gin, gout, static_cast<const S*>(nullptr), work.data());
  }

 private:
  /// c (+)= a op(W) on the engine the file's table names; true when the epilogue e was applied with it.
  bool product(const weight<S>& w, const rows<S>& a, S* c, bool transposed, bool accumulate,
               const epilogue<S>& e = {}) const {
    if constexpr (onednn_here) {
      if (operand_of(w) == element::bf16)
        return as_bf16(a, [&](const rows<S>& a16) { return onednn::weight_product(w, a16, c, transposed, accumulate, e); });
      if (w.constant && config_.products == precision::fp32 && config_.fp32_engine() == fp32_gemm::onednn &&
          a.type == element::value)
        return onednn::weight_product(w, a, c, transposed, accumulate, e);
    }
    if (a.type == element::bf16) {  // a bf16 operand (made under another configuration), widened on the way
      const index n = a.count * a.cols;
      buffer<S, S> wide(pool_, n);
      detail::from_bf16(a.halves(), wide.data(), static_cast<std::size_t>(n));
      eigen::weight_product(w, wide.data(), a.count, c, transposed, accumulate);
      return false;
    }
    eigen::weight_product(w, a.values(), a.count, c, transposed, accumulate);
    return false;
  }

  /// f(a as bf16 rows): a itself, or a rounded into borrowed memory.
  template <class F>
  bool as_bf16(const rows<S>& a, F&& f) const {
    if (a.type == element::bf16) return f(a);
    const index n = a.count * a.cols;
    buffer<std::uint16_t, S> a16(pool_, n);
    detail::to_bf16(a.values(), a16.data(), static_cast<std::size_t>(n));
    return f(rows<S>::of(a16.data(), a.count, a.cols));
  }

  void count(index n) const noexcept {
    if (macs_ != nullptr) *macs_ += static_cast<std::uint64_t>(n);
  }

  execution_config config_;
  block_pool<S>& pool_;
  std::uint64_t* macs_;
};

}  // namespace vpdarts::kernels
