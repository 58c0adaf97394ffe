#pragma once
// Refusing allocations the machine cannot hold, before they are attempted:
// a size that comes from a flag or a file is checked against the memory it
// implies, so the error names the setting instead of ending in std::bad_alloc.

#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <type_traits>

#include "../error.hpp"
#include "format.hpp"

namespace vpdarts::detail {

/// The memory this process may use: the least of the machine's physical memory, the process's
/// address-space limit (`ulimit -v`) and its cgroup's memory limit, with which one it is. Read once.
struct memory_budget {
  double bytes = 1e15;                       ///< a large fallback when nothing is known
  const char* what = "this machine's memory";
};

inline const memory_budget& usable_memory() {
  static const memory_budget budget = [] {
    memory_budget b;
    const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && size > 0) b.bytes = static_cast<double>(pages) * static_cast<double>(size);
    rlimit limit{};
    if (getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && static_cast<double>(limit.rlim_cur) < b.bytes)
      b = {static_cast<double>(limit.rlim_cur), "the address space this process may use (ulimit -v)"};
    // cgroup v2, then v1 ("max" or a huge number when unlimited)
    for (const char* file : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
      std::ifstream in(file);
      std::string text;
      if (in >> text)
        if (const auto v = parse_number<double>(text); v && *v > 0 && *v < b.bytes) b = {*v, "this process's cgroup memory limit"};
    }
    return b;
  }();
  return budget;
}

/// The bytes usable_memory() allows.
inline double usable_memory_bytes() { return usable_memory().bytes; }

/// @throws config_error naming `what` when `bytes` exceed the memory this process may use (usable_memory()).
/// `what` is a string, or a callable that makes one only when the check fails (for a check on a hot path,
/// which must not allocate).
template <class What>
void check_allocation(double bytes, const What& what) {
  const memory_budget& have = usable_memory();
  if (bytes <= have.bytes) return;
  std::string name;
  if constexpr (std::is_invocable_v<const What&>)
    name = what();
  else
    name = what;
  throw config_error(cat(name, " needs ", bytes / (1u << 30), " GiB, more than the ", have.bytes / (1u << 30), " GiB of ",
                         have.what));
}

}  // namespace vpdarts::detail
