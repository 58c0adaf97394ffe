#pragma once
// Two user-defined fusion operators, added by specialising the trait alone:
// a gated additive prompt (identity at init) and `none` (the plain block).
#include <vpdarts/vpdarts.hpp>

namespace vpdarts_test {
struct gated_add {};
struct none {};
}  // namespace vpdarts_test

template <>
struct vpdarts::fusion_traits<vpdarts_test::gated_add> {
  static constexpr std::string_view name = "gated_add";
  static std::vector<param_spec> params(const fusion_context& c) {
    return {{"A", c.tokens(), c.dim(), param_init::normal(0.02)}, {"g", 1, 1, param_init::zeros()}};
  }
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>& p, index) {
    return add(x, mul(p["A"], tanh(p["g"])));
  }
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>&, index) {
    return y;
  }
};

template <>
struct vpdarts::fusion_traits<vpdarts_test::none> {
  static constexpr std::string_view name = "none";
  static std::vector<param_spec> params(const fusion_context&) { return {}; }
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>&, index) {
    return x;
  }
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>&, index) {
    return y;
  }
};
