#pragma once
// Private helpers that build error messages (the text helpers are public, in text.hpp).

#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

#include "../fwd.hpp"
#include "../text.hpp"

namespace vpdarts::detail {

using text::cat;
using text::join;
using text::parse_number;

/// "RxC" for a shape.
inline std::string shape_str(index rows, index cols) {
  return std::to_string(rows) + "x" + std::to_string(cols);
}

}  // namespace vpdarts::detail
