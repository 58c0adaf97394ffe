#pragma once
/// @file gradcheck.hpp
/// A finite-difference gradient checker for any function recorded on a tape
/// (the analogue of torch.autograd.gradcheck). vpdarts tests every op with it;
/// users check their own ops and fusion operators the same way.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <functional>
#include <initializer_list>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "ops_elementwise.hpp"
#include "ops_reduce.hpp"
#include "tape.hpp"

namespace vpdarts {

/// Settings of gradcheck().
struct gradcheck_options {
  /// Central-difference step.
  double eps = 1e-6;
  /// An entry passes when |analytic - numeric| <= rtol * max(|analytic|, |numeric|, atol / rtol).
  double rtol = 1e-6;
  /// Absolute floor (below atol / rtol in magnitude, errors are compared absolutely to atol).
  double atol = 1e-8;
  /// Seed of the random projection that turns a non-scalar output into a scalar.
  std::uint64_t seed = 7;
  /// Check at most this many entries per parameter (evenly spaced); 0 checks all.
  index max_entries = 0;
};

/// What gradcheck() found.
struct gradcheck_result {
  /// True when every checked entry passed.
  bool passed = true;
  /// The largest error, relative as defined by gradcheck_options::rtol.
  double max_error = 0;
  /// Number of entries checked.
  index checked = 0;
  /// The worst entry: "name[r,c]: analytic a, numeric n".
  std::string worst;
  /// `passed`, so that `REQUIRE(gradcheck(...))` reads naturally.
  explicit operator bool() const noexcept { return passed; }
};

/// Checks the gradient of `f` with respect to `params` against central differences.
///
/// `f(tape&)` records a computation on the tape from leaves of the parameters
/// (`t.leaf(p)`) and returns its output, of any shape; the checker reduces it
/// to a scalar with a fixed random projection, sum(out * R). The parameters'
/// gradients are zeroed and left holding the analytic gradient. f must be
/// deterministic. Run it in double: float has too few digits for differences.
/// @throws state_error when a parameter does not require a gradient.
template <Scalar S, class F>
  requires std::invocable<F&, tape<S>&> && std::same_as<std::invoke_result_t<F&, tape<S>&>, var<S>>
gradcheck_result gradcheck(F&& f, std::span<parameter<S>* const> params, const gradcheck_options& opt = {}) {
  for (parameter<S>* p : params) {
    if (!p->requires_grad())
      throw state_error(detail::cat("gradcheck: parameter '", p->name(), "' is frozen; nothing to check"));
    p->zero_grad();
  }
  tape<S> t;
  matrix<S> proj;
  {
    var<S> out = f(t);
    std::mt19937_64 rng(opt.seed);
    std::uniform_real_distribution<double> u(0.5, 1.5);
    std::bernoulli_distribution sign(0.5);
    proj.resize(out.rows(), out.cols());
    for (index i = 0; i < proj.size(); ++i) proj.data()[i] = static_cast<S>(sign(rng) ? u(rng) : -u(rng));
    var<S> loss = sum(mul(out, t.constant(proj)));
    t.backward(loss);
  }
  auto objective = [&]() -> double {
    t.reset();
    no_grad<S> guard(t);
    var<S> out = f(t);
    return static_cast<double>((out.value().array() * proj.array()).sum());
  };
  gradcheck_result result;
  const double floor = opt.atol / opt.rtol;
  for (parameter<S>* p : params) {
    const index n = p->size();
    const index stride = (opt.max_entries > 0 && n > opt.max_entries) ? n / opt.max_entries : 1;
    for (index i = 0; i < n; i += stride) {
      S& x = p->value().data()[i];
      const S old = x;
      x = static_cast<S>(old + opt.eps);
      const double up = objective();
      x = static_cast<S>(old - opt.eps);
      const double down = objective();
      x = old;
      const double numeric = (up - down) / (2 * opt.eps);
      const double analytic = static_cast<double>(p->grad().data()[i]);
      const double err = std::abs(analytic - numeric) / std::max({std::abs(analytic), std::abs(numeric), floor});
      ++result.checked;
      if (!(err <= opt.rtol)) result.passed = false;
      if (!(err <= result.max_error)) {
        result.max_error = err;
        result.worst = detail::cat(p->name(), "[", i / p->cols(), ",", i % p->cols(), "]: analytic ", analytic,
                                   ", numeric ", numeric);
      }
    }
  }
  return result;
}

/// gradcheck() over a braced list of parameter pointers.
template <Scalar S, class F>
gradcheck_result gradcheck(F&& f, std::initializer_list<parameter<S>*> params, const gradcheck_options& opt = {}) {
  return gradcheck<S>(std::forward<F>(f), std::span<parameter<S>* const>(params.begin(), params.size()), opt);
}

}  // namespace vpdarts
