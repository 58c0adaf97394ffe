#pragma once
/// @file text.hpp
/// Text helpers of the library that programs using it may share: strict
/// number parsing (every number vpdarts reads from text goes through
/// parse_number) and message building.

#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

namespace vpdarts::text {

/// The whole of `text` as a number of type T (an integer type or a floating
/// type), or nothing when it is not one: no leading or trailing junk, in
/// range, finite.
template <class T>
std::optional<T> parse_number(const std::string& text) {
  std::size_t used = 0;
  try {
    if constexpr (std::is_floating_point_v<T>) {
      const double v = std::stod(text, &used);
      if (used == text.size() && used > 0 && std::isfinite(v)) return static_cast<T>(v);
    } else {
      const long long v = std::stoll(text, &used);
      if (used == text.size() && used > 0 && v >= static_cast<long long>(std::numeric_limits<T>::min()) &&
          v <= static_cast<long long>(std::numeric_limits<T>::max()))
        return static_cast<T>(v);
    }
  } catch (const std::exception&) {
  }
  return std::nullopt;
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

}  // namespace vpdarts::text
