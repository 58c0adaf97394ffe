#pragma once
/// @file text.hpp
/// Text helpers of the library that programs using it may share: strict
/// number parsing (every number vpdarts reads from text goes through
/// parse_number) and message building.

#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <cstdint>
#include <string>
#include <string_view>
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
    } else if constexpr (std::is_unsigned_v<T>) {
      // stoull would take "-1" as its largest value
      const auto start = text.find_first_not_of(" \t\n\v\f\r");
      if (start == std::string::npos || text[start] == '-') return std::nullopt;
      const unsigned long long v = std::stoull(text, &used);
      if (used == text.size() && used > 0 && v <= static_cast<unsigned long long>(std::numeric_limits<T>::max()))
        return static_cast<T>(v);
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

/// Whether `text` is well-formed UTF-8 (what JSON files and safetensors headers must hold).
inline bool valid_utf8(std::string_view text) noexcept {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) n = 0, cp = c;
    else if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1Fu;
    else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0Fu;
    else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07u;
    else return false;
    if (i + n >= text.size()) return false;  // a sequence cut short
    for (std::size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(text[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3Fu);
    }
    // overlong forms, UTF-16 surrogates and values past U+10FFFF are not UTF-8
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
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
