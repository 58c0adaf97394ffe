#pragma once
/// @file arena.hpp
/// The bump allocator behind the tape: values, adjoints and saved
/// intermediates of one step live here and are released together by reset().

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

namespace vpdarts {

/// A bump allocator of 64-byte aligned blocks. reset() keeps the memory: when
/// a step needed more than one chunk, the chunks are merged into one chunk of
/// the total size, so from the second identical step on nothing is allocated.
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
    if (chunks_.size() > 1) {
      std::size_t total = 0;
      for (auto& c : chunks_) total += c.size;
      chunks_.clear();
      chunks_.push_back(chunk::make(total));
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
    const std::size_t size = std::max(at_least, next_chunk_);
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

}  // namespace vpdarts
