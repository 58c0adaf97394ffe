#pragma once
/// @file json.hpp
/// Lists of numbers in JSON, where NaN and Inf (a loss that was not measured,
/// or diverged) are written as null and read back as NaN.

#include <cmath>
#include <limits>
#include <vector>

#include <nlohmann/json.hpp>

#include "../detail/format.hpp"
#include "../error.hpp"

namespace vpdarts::io {

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

}  // namespace vpdarts::io
