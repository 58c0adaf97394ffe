#pragma once
/// @file split.hpp
/// The seeded split of a training set into search-train and search-val
/// (VTAB-1k: 800 and 200 of 1000 images), shared by the search, the lr grid
/// and every method that is tuned on search-val.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "../detail/format.hpp"
#include "../error.hpp"

namespace vpdarts::data {

/// Rows of a training set split into search-train and search-val.
struct row_split {
  std::vector<index> train;  ///< search-train rows
  std::vector<index> val;    ///< search-val rows
};

/// The number of search-val rows of `n` under `val_fraction`, after checking that
/// a batch of `batch` fits both splits. @throws config_error naming `who` otherwise.
inline index val_count(index n, double val_fraction, index batch, const char* who) {
  if (!(val_fraction > 0 && val_fraction < 1))
    throw config_error(detail::cat(who, ": val_fraction ", val_fraction, " is not in (0, 1)"));
  const index n_val = static_cast<index>(std::llround(static_cast<double>(n) * val_fraction));
  if (batch <= 0 || batch > std::min(n - n_val, n_val))
    throw config_error(detail::cat(who, ": batch ", batch, " does not fit the splits (", n - n_val, " search-train, ",
                                   n_val, " search-val images)"));
  return n_val;
}

/// A seeded split of rows 0..n-1 into n - n_val search-train rows and n_val
/// search-val rows (one shuffle of `rng`).
inline row_split split_rows(index n, index n_val, std::mt19937_64& rng) {
  std::vector<index> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  return {std::vector<index>(order.begin(), order.end() - n_val), std::vector<index>(order.end() - n_val, order.end())};
}

}  // namespace vpdarts::data
