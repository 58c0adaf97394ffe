#pragma once
/// @file init.hpp
/// Parameter initialisers, seeded: zeros, ones, (truncated) normal, uniform.

#include <cmath>
#include <random>

#include "../autodiff/parameter.hpp"

namespace vpdarts::init {

/// The random engine every vpdarts initialiser takes.
using engine = std::mt19937_64;

/// Fills with a constant.
template <Scalar S>
void constant(parameter<S>& p, S value) {
  p.value().setConstant(value);
}

/// Normal(mean, std), truncated to [mean - 2 std, mean + 2 std] as timm's trunc_normal_.
template <Scalar S>
void trunc_normal(parameter<S>& p, double std, engine& rng, double mean = 0.0) {
  std::normal_distribution<double> n(0.0, 1.0);
  for (index i = 0; i < p.size(); ++i) {
    double z;
    do z = n(rng);
    while (std::abs(z) > 2.0);
    p.value().data()[i] = static_cast<S>(mean + std * z);
  }
}

/// Normal(mean, std).
template <Scalar S>
void normal(parameter<S>& p, double std, engine& rng, double mean = 0.0) {
  std::normal_distribution<double> n(mean, std);
  for (index i = 0; i < p.size(); ++i) p.value().data()[i] = static_cast<S>(n(rng));
}

/// Uniform(-bound, bound).
template <Scalar S>
void uniform(parameter<S>& p, double bound, engine& rng) {
  std::uniform_real_distribution<double> u(-bound, bound);
  for (index i = 0; i < p.size(); ++i) p.value().data()[i] = static_cast<S>(u(rng));
}

}  // namespace vpdarts::init
