#pragma once
// Private helpers that build error messages.

#include <sstream>
#include <string>
#include <utility>

#include "../fwd.hpp"

namespace vpdarts::detail {

/// "RxC" for a shape.
inline std::string shape_str(index rows, index cols) {
  return std::to_string(rows) + "x" + std::to_string(cols);
}

/// Concatenates the arguments with operator<< into one string.
template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream s;
  (s << ... << std::forward<Args>(args));
  return s.str();
}

/// The items joined by `separator` (", " by default).
template <class Range>
std::string join(const Range& items, const char* separator = ", ") {
  std::ostringstream s;
  bool first = true;
  for (const auto& x : items) {
    s << (first ? "" : separator) << x;
    first = false;
  }
  return s.str();
}

}  // namespace vpdarts::detail
