#pragma once
/// @file operand.hpp
/// What the kernels read and write, each saying its element type and layout, so that a producer
/// writes the operand its consumer reads (a LayerNorm writes bf16 rows when the product after it
/// runs in bf16) and no kernel is named after its operand's type:
/// - rows<S>: a row-major rows x cols matrix of S or of bf16 values;
/// - qkv<S>: a transformer block's q, k and v for batch x seq tokens of width d in `heads` heads,
///   either as (batch*seq) x 3d rows of S (timm's layout) or in bf16 by head
///   ([part][image][head][token][channel], part q, k, v: what oneDNN's batched products read);
/// - weight<S>: a weight W (out x in, row-major), whether it needs a gradient, and its bf16 copies;
/// - epilogue<S>: what a weight product adds to its result (bias, LayerScale, residual);
/// - buffer<T, S>: working memory borrowed from a tape's pool, given back at the end of the scope.

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../detail/arena.hpp"
#include "../detail/bf16.hpp"
#include "../fwd.hpp"

namespace vpdarts::kernels {

/// The element type of an operand.
enum class element : std::uint8_t {
  value,  ///< the model's scalar S
  bf16,   ///< bf16 (uint16 storage)
};

/// p advanced by n values of the given element type (S or bf16).
template <Scalar S>
void* offset(void* p, element type, index n) noexcept {
  return type == element::bf16 ? static_cast<void*>(static_cast<std::uint16_t*>(p) + n)
                               : static_cast<void*>(static_cast<S*>(p) + n);
}

/// A row-major rows x cols matrix of S or bf16 values.
template <Scalar S>
struct rows {
  const void* data = nullptr;  ///< the first value
  index count = 0;             ///< rows
  index cols = 0;              ///< columns
  element type = element::value;  ///< S or bf16

  /// S values.
  static rows of(const S* p, index r, index c) { return {p, r, c, element::value}; }
  /// bf16 values.
  static rows of(const std::uint16_t* p, index r, index c) { return {p, r, c, element::bf16}; }
  /// The values as S (type value).
  const S* values() const noexcept { return static_cast<const S*>(data); }
  /// The values as bf16 (type bf16).
  const std::uint16_t* halves() const noexcept { return static_cast<const std::uint16_t*>(data); }
};

/// q, k and v of batch x seq tokens, width d, `heads` heads (see the file's comment).
template <Scalar S>
struct qkv {
  const void* data = nullptr;  ///< the first value
  index batch = 0, heads = 0, seq = 0, d = 0;  ///< images, heads, tokens per image, width of each of q, k, v
  bool by_head = false;        ///< bf16 by head; else (batch*seq) x 3d rows of S

  /// The rows layout.
  const S* values() const noexcept { return static_cast<const S*>(data); }
  /// The bf16-by-head layout.
  const std::uint16_t* halves() const noexcept { return static_cast<const std::uint16_t*>(data); }
  /// Channels per head.
  index head_dim() const noexcept { return d / heads; }
};

/// A weight W (out x in, row-major) as a product reads it.
template <Scalar S>
struct weight {
  const S* value = nullptr;  ///< W
  index out = 0, in = 0;     ///< its shape
  bool constant = false;     ///< needs no gradient (frozen, untracked, or under no_grad)
  detail::bf16_copies bf16;  ///< its cached bf16 copies when it is a frozen parameter (cache null otherwise)

  /// True when W is a frozen parameter whose bf16 copies are kept (the weights bf16 products read).
  bool frozen() const noexcept { return bf16.cache != nullptr; }
};

/// What a weight product adds to its result, in this order: + bias (1 x out), * scale (1 x out, a
/// LayerScale), + residual (rows x out), * factor (rows x out, bf16: an activation's derivative); each
/// one only when set. The factor is for oneDNN's bf16 products only (backend::times_weight_through).
template <Scalar S>
struct epilogue {
  const S* bias = nullptr;      ///< the bias
  const S* scale = nullptr;     ///< the LayerScale vector
  const S* residual = nullptr;  ///< the skip connection
  const std::uint16_t* factor = nullptr;  ///< an elementwise factor, in bf16
};

/// Working memory borrowed from a pool of S (bf16 values go two to an S slot) and given back when it
/// goes out of scope: `count` values of T, or of the element type of an operand.
template <class T, Scalar S>
class buffer {
 public:
  /// `count` values of T (at least one slot).
  buffer(block_pool<S>& pool, index count) : buffer(pool, slots_for(count * index(sizeof(T)))) {}
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  ~buffer() { pool_.release(p_, slots_); }
  /// The first value.
  T* data() const noexcept { return reinterpret_cast<T*>(p_); }

 protected:
  struct slots {
    std::size_t n;
  };
  buffer(block_pool<S>& pool, slots n) : pool_(pool), slots_(n.n), p_(pool.acquire(n.n)) {}
  static slots slots_for(index bytes) {
    return {static_cast<std::size_t>(std::max<index>(1, (bytes + index(sizeof(S)) - 1) / index(sizeof(S))))};
  }

 private:
  block_pool<S>& pool_;
  std::size_t slots_;
  S* p_;
};

/// Borrowed room for an operand of `count` values of S or of bf16, as `type` says.
template <Scalar S>
class operand_buffer : public buffer<unsigned char, S> {
 public:
  operand_buffer(block_pool<S>& pool, index count, element type)
      : buffer<unsigned char, S>(pool, buffer<unsigned char, S>::slots_for(count * (type == element::bf16 ? 2 : index(sizeof(S))))),
        type_(type) {}
  /// The element type.
  element type() const noexcept { return type_; }
  /// The first value as T (S or std::uint16_t, as type() says).
  template <class T>
  T* data_as() const noexcept {
    return reinterpret_cast<T*>(this->data());
  }
  /// The buffer as an r x c operand.
  rows<S> as_rows(index r, index c) const noexcept { return {this->data(), r, c, type_}; }

 private:
  element type_;
};

}  // namespace vpdarts::kernels
