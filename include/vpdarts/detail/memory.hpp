#pragma once
// Refusing allocations the machine cannot hold, before they are attempted:
// a size that comes from a flag or a file is checked against the memory it
// implies, so the error names the setting instead of ending in std::bad_alloc.

#include <unistd.h>

#include <string>
#include <type_traits>

#include "../error.hpp"
#include "format.hpp"

namespace vpdarts::detail {

/// The machine's physical memory in bytes (a large fallback when unknown), read once.
inline double physical_memory_bytes() {
  static const double bytes = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && size > 0 ? static_cast<double>(pages) * static_cast<double>(size) : 1e15;
  }();
  return bytes;
}

/// @throws config_error naming `what` when `bytes` exceed the machine's physical memory.
/// `what` is a string, or a callable that makes one only when the check fails (for a check on a hot path,
/// which must not allocate).
template <class What>
void check_allocation(double bytes, const What& what) {
  const double have = physical_memory_bytes();
  if (bytes <= have) return;
  std::string name;
  if constexpr (std::is_invocable_v<const What&>)
    name = what();
  else
    name = what;
  throw config_error(cat(name, " needs ", bytes / (1u << 30), " GiB, more than this machine's ", have / (1u << 30),
                         " GiB of memory"));
}

}  // namespace vpdarts::detail
