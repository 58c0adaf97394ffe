#pragma once
/// @file layers.hpp
/// The layers of a ViT, each a small contract: it owns named parameters
/// (timm names and shapes), `forward` records its computation on a tape, and
/// `collect` lists its parameters. Inputs are in the tape's batch layout,
/// (B*T) x D.

#include <string>
#include <vector>

#include "../autodiff.hpp"
#include "init.hpp"

namespace vpdarts::nn {

/// y = x W^T + b, W is out x in (PyTorch's nn.Linear). Weights init trunc_normal(0.02), bias zeros.
template <Scalar S>
struct linear_layer {
  parameter<S> weight;  ///< out x in.
  parameter<S> bias;    ///< 1 x out (saved with shape {out}).

  /// An empty layer, to be assigned.
  linear_layer() = default;
  /// Parameters named `name.weight` and `name.bias`; the weight drawn from `rng`.
  linear_layer(const std::string& name, index in, index out, init::engine& rng)
      : weight(name + ".weight", out, in), bias(name + ".bias", 1, out) {
    bias.set_shape({out});
    init::trunc_normal(weight, 0.02, rng);
  }
  /// x is R x in; the result is R x out.
  var<S> forward(tape<S>& t, const var<S>& x) { return linear(x, t.leaf(weight), t.leaf(bias)); }
  /// Appends pointers to the weight and the bias to `out`.
  void collect(std::vector<parameter<S>*>& out) {
    out.push_back(&weight);
    out.push_back(&bias);
  }
};

/// LayerNorm over the last dimension, eps 1e-6, weight ones and bias zeros.
template <Scalar S>
struct layer_norm_layer {
  static constexpr double eps = 1e-6;  ///< Added to the variance.
  parameter<S> weight;                 ///< 1 x dim scale, ones at start.
  parameter<S> bias;                   ///< 1 x dim shift, zeros at start.

  /// An empty layer, to be assigned.
  layer_norm_layer() = default;
  /// Parameters named `name.weight` and `name.bias` over `dim` features.
  layer_norm_layer(const std::string& name, index dim) : weight(name + ".weight", 1, dim), bias(name + ".bias", 1, dim) {
    weight.set_shape({dim});
    bias.set_shape({dim});
    init::constant(weight, S(1));
  }
  /// x is R x dim; each row is normalised. Throws shape_error when x's width is not dim.
  var<S> forward(tape<S>& t, const var<S>& x) { return layer_norm(x, t.leaf(weight), t.leaf(bias), S(eps)); }
  /// Appends pointers to the weight and the bias to `out`.
  void collect(std::vector<parameter<S>*>& out) {
    out.push_back(&weight);
    out.push_back(&bias);
  }
};

/// The parameters of multi-head self-attention: qkv linear with bias (rows
/// [q; k; v]) and the output projection; attention scales by 1/sqrt(D/H).
/// vit_block runs them through the fused ops (layer_norm_linear, attention_linear).
template <Scalar S>
struct attention_layer {
  linear_layer<S> qkv;   ///< D -> 3D, output columns [q | k | v].
  linear_layer<S> proj;  ///< D -> D output projection.
  index heads = 1;       ///< Number of heads H; D must be a multiple of H.

  /// An empty layer, to be assigned.
  attention_layer() = default;
  /// Layers `name.qkv` and `name.proj` of width `dim` with `heads_` heads.
  attention_layer(const std::string& name, index dim, index heads_, init::engine& rng)
      : qkv(name + ".qkv", dim, 3 * dim, rng), proj(name + ".proj", dim, dim, rng), heads(heads_) {}
  /// Appends pointers to the four parameters to `out`.
  void collect(std::vector<parameter<S>*>& out) {
    qkv.collect(out);
    proj.collect(out);
  }
};

/// The parameters of the MLP fc2(GELU(fc1(x))) with the exact erf GELU.
/// vit_block runs them through the fused ops (layer_norm_linear, gelu_linear).
template <Scalar S>
struct mlp_layer {
  linear_layer<S> fc1;  ///< dim -> hidden.
  linear_layer<S> fc2;  ///< hidden -> dim.

  /// An empty layer, to be assigned.
  mlp_layer() = default;
  /// Layers `name.fc1` and `name.fc2`.
  mlp_layer(const std::string& name, index dim, index hidden, init::engine& rng)
      : fc1(name + ".fc1", dim, hidden, rng), fc2(name + ".fc2", hidden, dim, rng) {}
  /// Appends pointers to the four parameters to `out`.
  void collect(std::vector<parameter<S>*>& out) {
    fc1.collect(out);
    fc2.collect(out);
  }
};

}  // namespace vpdarts::nn
