#pragma once
/// @file json.hpp
/// JSON from outside (files, metadata) parsed safely: nesting deeper than a
/// limit is refused before the recursive parser sees it (100,000 levels would
/// overflow the stack). Lists of numbers, where NaN and Inf (a loss that was
/// not measured, or diverged) are written as null and read back as NaN; matrices
/// as arrays of rows.

#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../detail/format.hpp"
#include "../error.hpp"
#include "../fwd.hpp"

namespace vpdarts::io {

/// The deepest nesting parse_json() accepts by default: far more than any file vpdarts writes.
inline constexpr std::size_t max_json_depth = 64;

/// Parses JSON text from `origin` (a file, a metadata key). @throws io_error
/// naming `origin` for nesting deeper than `max_depth` (checked first, without
/// recursion) or text that is not JSON.
inline nlohmann::json parse_json(std::string_view text, const std::string& origin, std::size_t max_depth = max_json_depth) {
  std::size_t depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth)
        throw io_error(vpdarts::detail::cat(origin, ": JSON nested deeper than ", max_depth, " levels"));
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    throw io_error(vpdarts::detail::cat(origin, ": not valid JSON: ", e.what()));
  }
}

/// The numbers as a JSON array; a NaN or Inf becomes null.
inline nlohmann::json numbers_to_json(const std::vector<double>& v) {
  nlohmann::json out = nlohmann::json::array();
  for (double x : v) out.push_back(std::isfinite(x) ? nlohmann::json(x) : nlohmann::json());
  return out;
}

/// A JSON array of numbers and nulls (as NaN). @throws io_error naming `origin` for anything else.
inline std::vector<double> numbers_from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_array()) throw io_error(vpdarts::detail::cat(origin, ": expected an array of numbers, got ", j.type_name()));
  std::vector<double> out;
  out.reserve(j.size());
  for (const auto& x : j) {
    if (x.is_null()) out.push_back(std::numeric_limits<double>::quiet_NaN());
    else if (x.is_number()) out.push_back(x.get<double>());
    else throw io_error(vpdarts::detail::cat(origin, ": expected a number or null, got ", x.type_name()));
  }
  return out;
}

/// A matrix as a JSON array of rows.
inline nlohmann::json matrix_to_json(const matrix<double>& m) {
  nlohmann::json out = nlohmann::json::array();
  for (index r = 0; r < m.rows(); ++r) {
    nlohmann::json row = nlohmann::json::array();
    for (index c = 0; c < m.cols(); ++c) row.push_back(m(r, c));
    out.push_back(std::move(row));
  }
  return out;
}

/// A `rows` x `cols` matrix from a JSON array of rows of numbers. @throws io_error naming `origin`
/// for another shape or a value that is not a number.
inline matrix<double> matrix_from_json(const nlohmann::json& j, index rows, index cols, const std::string& origin) {
  if (!j.is_array() || j.size() != static_cast<std::size_t>(rows))
    throw io_error(vpdarts::detail::cat(origin, " has ", j.is_array() ? j.size() : 0, " rows, not ", rows));
  matrix<double> m(rows, cols);
  for (index r = 0; r < rows; ++r) {
    const nlohmann::json& row = j[static_cast<std::size_t>(r)];
    if (!row.is_array() || row.size() != static_cast<std::size_t>(cols))
      throw io_error(vpdarts::detail::cat(origin, ": row ", r, " has ", row.is_array() ? row.size() : 0, " values, not ", cols));
    for (index c = 0; c < cols; ++c) {
      const nlohmann::json& x = row[static_cast<std::size_t>(c)];
      if (!x.is_number()) throw io_error(vpdarts::detail::cat(origin, ": row ", r, " holds ", x.type_name(), ", not a number"));
      m(r, c) = x.get<double>();
    }
  }
  return m;
}

}  // namespace vpdarts::io
