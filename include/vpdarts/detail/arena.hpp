#pragma once
/// @file arena.hpp
/// The allocators behind the tape. Values and saved intermediates of one step
/// live in a bump arena and are released together by reset(); adjoints come
/// from a block pool, because backward() frees each one as soon as the sweep
/// has passed its node.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "memory.hpp"

namespace vpdarts {

/// A bump allocator of 64-byte aligned blocks. reset() keeps the memory: when
/// a step needed more than one chunk, the chunks are replaced by one chunk of
/// the most bytes ever in use, so from the second identical step on nothing is
/// allocated.
class arena {
 public:
  static constexpr std::size_t alignment = 64;  ///< Every block starts on a 64-byte boundary.

  /// @param first_chunk_bytes size of the first chunk, allocated on first use.
  explicit arena(std::size_t first_chunk_bytes = std::size_t{1} << 20) : next_chunk_(first_chunk_bytes) {}

  arena(const arena&) = delete;
  arena& operator=(const arena&) = delete;
  /// Takes over the other arena's chunks.
  arena(arena&&) noexcept = default;
  /// Takes over the other arena's chunks, freeing this one's.
  arena& operator=(arena&&) noexcept = default;

  /// Uninitialised storage for `count` objects of trivial type T, 64-byte aligned.
  template <class T>
  T* allocate(std::size_t count) {
    static_assert(std::is_trivially_destructible_v<T>);
    const std::size_t bytes = round_up(std::max<std::size_t>(count, 1) * sizeof(T));
    if (chunks_.empty() || used_ + bytes > chunks_.back().size) add_chunk(bytes);
    std::byte* p = chunks_.back().data.get() + used_;
    used_ += bytes;
    in_use_ += bytes;
    peak_ = std::max(peak_, in_use_);
    return reinterpret_cast<T*>(p);
  }

  /// Forgets every allocation; keeps (and if needed merges) the memory.
  void reset() {
    if (chunks_.size() > 1) {  // one chunk of the most ever in use: the doubling's spare tails are not kept
      chunks_.clear();
      chunks_.push_back(chunk::make(peak_));
    }
    used_ = 0;
    in_use_ = 0;
  }

  /// Gives all memory back to the system.
  void release() {
    chunks_.clear();
    used_ = 0;
    in_use_ = 0;
  }

  /// Bytes handed out since the last reset.
  std::size_t bytes_in_use() const noexcept { return in_use_; }
  /// The most bytes ever in use between two resets.
  std::size_t peak_bytes() const noexcept { return peak_; }
  /// Bytes held from the system.
  std::size_t capacity_bytes() const noexcept {
    std::size_t total = 0;
    for (auto& c : chunks_) total += c.size;
    return total;
  }
  /// Number of chunks held (1 once warm).
  std::size_t chunk_count() const noexcept { return chunks_.size(); }

 private:
  struct deleter {
    void operator()(std::byte* p) const noexcept { ::operator delete[](p, std::align_val_t{alignment}); }
  };
  struct chunk {
    std::unique_ptr<std::byte[], deleter> data;
    std::size_t size = 0;
    static chunk make(std::size_t bytes) {
      return chunk{std::unique_ptr<std::byte[], deleter>(
                       static_cast<std::byte*>(::operator new[](bytes, std::align_val_t{alignment}))),
                   bytes};
    }
  };

  static std::size_t round_up(std::size_t bytes) { return (bytes + alignment - 1) / alignment * alignment; }

  void add_chunk(std::size_t at_least) {
    detail::check_allocation(static_cast<double>(at_least), "the tape: one step's values and saved intermediates");
    std::size_t size = std::max(at_least, next_chunk_);
    if (static_cast<double>(size) > detail::usable_memory_bytes()) size = at_least;  // the doubling, not the need
    chunks_.push_back(chunk::make(size));
    next_chunk_ = std::max(next_chunk_, size) * 2;
    used_ = 0;
  }

  std::vector<chunk> chunks_;
  std::size_t used_ = 0;
  std::size_t in_use_ = 0;
  std::size_t peak_ = 0;
  std::size_t next_chunk_;
};

/// Recycled 64-byte aligned blocks of T. A request is rounded up to its size
/// class (four classes per power of two, so at most 25 % more than asked for)
/// and served by the smallest free block of that class up to twice its size, so
/// requests of nearly the same size (the rows of a prompted and an unprompted
/// sequence, say) and of neighbouring classes share blocks; only when none is
/// free is a block of the class allocated. Blocks are kept until the pool dies,
/// so a step that makes the same requests as the steps before it finds them
/// served (after the first step or two) and allocates nothing.
template <class T>
class block_pool {
 public:
  block_pool() = default;
  block_pool(const block_pool&) = delete;
  block_pool& operator=(const block_pool&) = delete;
  /// Takes over the other pool's blocks.
  block_pool(block_pool&&) noexcept = default;
  /// Takes over the other pool's blocks, freeing this one's.
  block_pool& operator=(block_pool&&) noexcept = default;

  /// A block of at least `count` (>= 1) uninitialised values: the smallest free one of its size class
  /// up to twice that, else a new one of the class.
  T* acquire(std::size_t count) {
    count = size_class(count);
    block b = take_free(count);
    if (b.data == nullptr) {
      detail::check_allocation(static_cast<double>(count) * sizeof(T), "the tape: one block of gradients or working memory");
      all_.push_back({std::unique_ptr<T[], deleter>(static_cast<T*>(::operator new[](
                          std::max<std::size_t>(count, 1) * sizeof(T), std::align_val_t{alignment}))),
                      count});
      free_.reserve(all_.size());
      b = {all_.back().data.get(), count};
    }
    in_use_ += b.count * sizeof(T);
    peak_ = std::max(peak_, in_use_);
    return b.data;
  }
  /// Returns a block from acquire(count).
  void release(T* p, std::size_t count) noexcept {
    (void)count;
    std::size_t real = 0;
    for (std::size_t i = all_.size(); i-- > 0;)
      if (all_[i].data.get() == p) {
        real = all_[i].count;
        break;
      }
    free_.push_back({p, real});  // never reallocates: capacity >= number of blocks
    in_use_ -= real * sizeof(T);
  }
  /// Marks every block free (after a step, whatever was not released).
  void release_all() noexcept {
    free_.clear();
    for (auto& b : all_) free_.push_back({b.data.get(), b.count});
    in_use_ = 0;
  }

  /// The size of the blocks that serve a request of `count` values: count rounded up to
  /// m * 2^e with m in {4, 5, 6, 7} (counts up to 8 stay as they are).
  static constexpr std::size_t size_class(std::size_t count) noexcept {
    if (count <= 8) return std::max<std::size_t>(count, 1);
    const int e = std::bit_width(count - 1) - 3;  // 2^(e+2) < count <= 2^(e+3)
    const std::size_t step = std::size_t{1} << e;
    return (count + step - 1) / step * step;
  }

  /// Bytes in blocks handed out and not yet released.
  std::size_t bytes_in_use() const noexcept { return in_use_; }
  /// The most bytes ever handed out at once.
  std::size_t peak_bytes() const noexcept { return peak_; }
  /// Bytes held from the system.
  std::size_t capacity_bytes() const noexcept {
    std::size_t total = 0;
    for (auto& b : all_) total += b.count * sizeof(T);
    return total;
  }

 private:
  static constexpr std::size_t alignment = 64;
  struct deleter {
    void operator()(T* p) const noexcept { ::operator delete[](p, std::align_val_t{alignment}); }
  };
  struct owned {
    std::unique_ptr<T[], deleter> data;
    std::size_t count = 0;
  };
  struct block {
    T* data = nullptr;
    std::size_t count = 0;
  };
  /// The smallest free block of `count` to 2 * count values, taken off the free list; null data when
  /// there is none.
  block take_free(std::size_t count) noexcept {
    std::size_t best = free_.size();
    for (std::size_t i = free_.size(); i-- > 0;)
      if (free_[i].count >= count && free_[i].count <= 2 * count &&
          (best == free_.size() || free_[i].count < free_[best].count)) {
        best = i;
        if (free_[i].count == count) break;
      }
    if (best == free_.size()) return {};
    const block b = free_[best];
    free_[best] = free_.back();
    free_.pop_back();
    return b;
  }

  std::vector<owned> all_;
  std::vector<block> free_;
  std::size_t in_use_ = 0;
  std::size_t peak_ = 0;
};

}  // namespace vpdarts
