#pragma once
/// @file builtin.hpp
/// The four built-in fusion operators of docs/method.md, section 3.
///
/// | name            | parameters       | pre(x)                                    | post(y)          |
/// |-----------------|------------------|-------------------------------------------|------------------|
/// | concat          | P (p x D)        | [x_cls ; P ; x_patches] per image         | drop the p rows  |
/// | add             | A (T x D)        | x + A (every image, cls included)         | identity         |
/// | affine          | S (2 x D)        | (1 + S_0) * x + S_1 per channel           | identity         |
/// | cross_attention | K, V (p x D)     | x + softmax(x K^T / sqrt(D)) V, over p    | identity         |
///
/// Inits: P and K uniform(+-sqrt(6 / (C patch^2 + D))) (VPT), A, S and V zeros,
/// so every operator but concat starts as the identity. Each trait's `torch_source` is the
/// same operator in PyTorch, which export_torch writes into the exported module.

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

/// VPT-deep's trait: parameter P (p x D, VPT's uniform init); pre inserts P after each image's prefix
/// tokens (the class token and any registers; (B*T) x D -> (B*(T+p)) x D), post removes those rows again.
template <>
struct fusion_traits<concat> {
  /// The operator's name in genotypes, checkpoints and reports.
  static constexpr std::string_view name = "concat";
  /// Its PyTorch form, for export_torch (export/torch.hpp).
  static constexpr std::string_view torch_source = R"py(class Concat(FusionOp):
    """VPT-deep: P (p x D) inserted after each image's prefix tokens, removed after the block."""
    name = "concat"

    def pre(self, x):
        prompts = self.P.unsqueeze(0).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, : self.prefix], prompts, x[:, self.prefix :]], dim=1)

    def post(self, y):
        return torch.cat([y[:, : self.prefix], y[:, self.prefix + self.P.shape[0] :]], dim=1)
)py";
  /// The operator's parameters for backbone and prompt count `c`.
  static std::vector<param_spec> params(const fusion_context& c) {
    return {{"P", c.prompts, c.dim(), param_init::uniform(c.vpt_bound())}};
  }
  /// Before the frozen block: x is (B*T) x D for `batch` images.
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>& p, index batch) {
    return insert_rows(x, p["P"], batch, p.prefix_tokens());
  }
  /// After the frozen block: back to (B*T) x D.
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>& p, index batch) {
    return remove_rows(y, batch, p.prefix_tokens(), p["P"].rows());
  }
};

/// The add operator's trait: parameter A (T x D, zeros), added to every image's tokens; post is the identity.
template <>
struct fusion_traits<add_prompt> {
  /// The operator's name in genotypes, checkpoints and reports.
  static constexpr std::string_view name = "add";
  /// Its PyTorch form, for export_torch (export/torch.hpp).
  static constexpr std::string_view torch_source = R"py(class Add(FusionOp):
    """A (T x D) added to every image's tokens."""
    name = "add"

    def pre(self, x):
        return x + self.A
)py";
  /// The operator's parameters for backbone and prompt count `c`.
  static std::vector<param_spec> params(const fusion_context& c) { return {{"A", c.tokens(), c.dim(), param_init::zeros()}}; }
  /// Before the frozen block: x is (B*T) x D for `batch` images.
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>& p, index) {
    return add(x, p["A"]);
  }
  /// After the frozen block: back to (B*T) x D.
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>&, index) {
    return y;
  }
};

/// The affine operator's trait: parameter S (2 x D, zeros); pre computes x * (1 + S[0]) + S[1] row-wise; post is the identity.
template <>
struct fusion_traits<affine> {
  /// The operator's name in genotypes, checkpoints and reports.
  static constexpr std::string_view name = "affine";
  /// Its PyTorch form, for export_torch (export/torch.hpp).
  static constexpr std::string_view torch_source = R"py(class Affine(FusionOp):
    """Per-channel scale and shift: x (1 + S[0]) + S[1]."""
    name = "affine"

    def pre(self, x):
        return x * (1 + self.S[0]) + self.S[1]
)py";
  /// The operator's parameters for backbone and prompt count `c`.
  static std::vector<param_spec> params(const fusion_context& c) { return {{"S", 2, c.dim(), param_init::zeros()}}; }
  /// Before the frozen block: x is (B*T) x D for `batch` images.
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>& p, index) {
    const var<S>& s = p["S"];
    return scale_shift(x, add_scalar(slice_rows(s, 0, 1), S(1)), slice_rows(s, 1, 1));  // one node
  }
  /// After the frozen block: back to (B*T) x D.
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>&, index) {
    return y;
  }
};

/// The cross-attention operator's trait: parameters K (p x D, VPT's uniform init) and V (p x D, zeros);
/// pre computes x + softmax(x K^T / sqrt(D)) V; post is the identity.
template <>
struct fusion_traits<cross_attention> {
  /// The operator's name in genotypes, checkpoints and reports.
  static constexpr std::string_view name = "cross_attention";
  /// Its PyTorch form, for export_torch (export/torch.hpp).
  static constexpr std::string_view torch_source = R"py(class CrossAttention(FusionOp):
    """x + softmax(x K^T / sqrt(D)) V over the p prompt keys and values."""
    name = "cross_attention"

    def pre(self, x):
        scores = torch.softmax(torch.matmul(x, self.K.t()) / math.sqrt(x.shape[-1]), dim=-1)
        return x + torch.matmul(scores, self.V)
)py";
  /// The operator's parameters for backbone and prompt count `c`.
  static std::vector<param_spec> params(const fusion_context& c) {
    return {{"K", c.prompts, c.dim(), param_init::uniform(c.vpt_bound())},
            {"V", c.prompts, c.dim(), param_init::zeros()}};
  }
  /// Before the frozen block: x is (B*T) x D for `batch` images.
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>& p, index) {
    // x + softmax_rows(scale(matmul(x, K, transpose::b), 1 / sqrt(D))) V, as one node
    return prompt_attention(x, p["K"], p["V"], S(1) / std::sqrt(static_cast<S>(x.cols())));
  }
  /// After the frozen block: back to (B*T) x D.
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>&, index) {
    return y;
  }
};

}  // namespace vpdarts
