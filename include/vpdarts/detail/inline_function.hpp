#pragma once
// A callable with fixed inline storage: the tape stores one per node, so
// recording a backward step never touches the heap (std::function may).

#include <cstddef>
#include <new>
#include <type_traits>

namespace vpdarts::detail {

template <class Arg, std::size_t Capacity = 64>
class inline_function {
 public:
  inline_function() = default;

  template <class F>
    requires(!std::is_same_v<std::decay_t<F>, inline_function>)
  inline_function(F f) {  // NOLINT: implicit on purpose, like std::function
    static_assert(sizeof(F) <= Capacity,
                  "vpdarts: a backward step captures too much; capture node indices, not matrices");
    static_assert(alignof(F) <= alignof(std::max_align_t), "vpdarts: over-aligned backward capture");
    static_assert(std::is_trivially_copyable_v<F> && std::is_trivially_destructible_v<F>,
                  "vpdarts: a backward step must capture only trivially copyable values");
    ::new (static_cast<void*>(storage_)) F(f);
    call_ = [](const void* self, Arg arg) { (*static_cast<const F*>(self))(arg); };
  }

  explicit operator bool() const noexcept { return call_ != nullptr; }
  void operator()(Arg arg) const { call_(storage_, arg); }

 private:
  alignas(std::max_align_t) std::byte storage_[Capacity]{};
  void (*call_)(const void*, Arg) = nullptr;
};

}  // namespace vpdarts::detail
