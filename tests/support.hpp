#pragma once
// Helpers shared by the tests.
#include <cstddef>
#include <random>

#include <vpdarts/vpdarts.hpp>

namespace vpdarts_test {

/// Heap allocations (malloc calls, every thread) made by this process so far; see main.cpp.
std::size_t allocations();
/// False in sanitizer builds, whose allocator cannot be counted.
bool counting_allocations();

/// A parameter of seeded random normal values.
template <class S>
vpdarts::parameter<S> random_parameter(std::string name, vpdarts::index rows, vpdarts::index cols, unsigned seed,
                                       double scale = 1.0, double mean = 0.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(mean, scale);
  vpdarts::matrix<S> m(rows, cols);
  for (vpdarts::index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<S>(n(rng));
  return vpdarts::parameter<S>(std::move(name), std::move(m));
}

/// A random matrix.
template <class S>
vpdarts::matrix<S> random_matrix(vpdarts::index rows, vpdarts::index cols, unsigned seed, double scale = 1.0) {
  return random_parameter<S>("m", rows, cols, seed, scale).value();
}

}  // namespace vpdarts_test
