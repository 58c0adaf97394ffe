#pragma once
/// @file builtin.hpp
/// The four built-in fusion operators of DESIGN.md section 3.
///
/// | name            | parameters       | pre(x)                                    | post(y)          |
/// |-----------------|------------------|-------------------------------------------|------------------|
/// | concat          | P (p x D)        | [x_cls ; P ; x_patches] per image         | drop the p rows  |
/// | add             | A (T x D)        | x + A (every image, cls included)         | identity         |
/// | affine          | S (2 x D)        | (1 + S_0) * x + S_1 per channel           | identity         |
/// | cross_attention | K, V (p x D)     | x + softmax(x K^T / sqrt(D)) V, over p    | identity         |
///
/// Inits: P and K uniform(+-sqrt(6 / (C patch^2 + D))) (VPT), A, S and V zeros,
/// so every operator but concat starts as the identity.

#include <cmath>

#include "traits.hpp"

namespace vpdarts {

/// VPT-deep: p learnable prompt tokens inserted after cls, dropped after the block.
struct concat {};
/// A learnable T x D tensor added to the tokens.
struct add_prompt {};
/// SSF-style per-channel scale and shift.
struct affine {};
/// Tokens attend to p learnable prompt keys and values (single head, no projections).
struct cross_attention {};

template <>
struct fusion_traits<concat> {
  static constexpr std::string_view name = "concat";
  static std::vector<param_spec> params(const fusion_context& c) {
    return {{"P", c.prompts, c.dim(), param_init::uniform(c.vpt_bound())}};
  }
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>& p, index batch) {
    return insert_rows(x, p["P"], batch, 1);
  }
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>& p, index batch) {
    return remove_rows(y, batch, 1, p["P"].rows());
  }
};

template <>
struct fusion_traits<add_prompt> {
  static constexpr std::string_view name = "add";
  static std::vector<param_spec> params(const fusion_context& c) { return {{"A", c.tokens(), c.dim(), param_init::zeros()}}; }
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>& p, index) {
    return add(x, p["A"]);
  }
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>&, index) {
    return y;
  }
};

template <>
struct fusion_traits<affine> {
  static constexpr std::string_view name = "affine";
  static std::vector<param_spec> params(const fusion_context& c) { return {{"S", 2, c.dim(), param_init::zeros()}}; }
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>& p, index) {
    const var<S>& s = p["S"];
    return add(mul(x, add_scalar(slice_rows(s, 0, 1), S(1))), slice_rows(s, 1, 1));
  }
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>&, index) {
    return y;
  }
};

template <>
struct fusion_traits<cross_attention> {
  static constexpr std::string_view name = "cross_attention";
  static std::vector<param_spec> params(const fusion_context& c) {
    return {{"K", c.prompts, c.dim(), param_init::uniform(c.vpt_bound())},
            {"V", c.prompts, c.dim(), param_init::zeros()}};
  }
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>& p, index) {
    const S scale_ = S(1) / std::sqrt(static_cast<S>(x.cols()));
    var<S> scores = softmax_rows(scale(matmul(x, p["K"], transpose::b), scale_));
    return add(x, matmul(scores, p["V"]));
  }
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>&, index) {
    return y;
  }
};

}  // namespace vpdarts
