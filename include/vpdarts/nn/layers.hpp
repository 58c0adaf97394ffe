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

/// y = x W^T + b, W is out x in (PyTorch's nn.Linear), b optional. Weights init trunc_normal(0.02), bias zeros.
template <Scalar S>
struct linear_layer {
  parameter<S> weight;  ///< out x in.
  parameter<S> bias;    ///< 1 x out (saved with shape {out}); empty (0 x 0) for a layer without bias.

  /// An empty layer, to be assigned.
  linear_layer() = default;
  /// Parameters named `name.weight` and (unless `with_bias` is false) `name.bias`; the weight drawn from `rng`.
  linear_layer(const std::string& name, index in, index out, init::engine& rng, bool with_bias = true)
      : weight(name + ".weight", out, in), bias(with_bias ? parameter<S>(name + ".bias", 1, out) : parameter<S>()) {
    if (with_bias) bias.set_shape({out});
    init::trunc_normal(weight, 0.02, rng);
  }
  /// True when the layer has a bias.
  bool has_bias() const noexcept { return bias.size() > 0; }
  /// The bias's leaf on `t`, or an empty var for a layer without bias.
  var<S> bias_leaf(tape<S>& t) { return has_bias() ? t.leaf(bias) : var<S>(); }
  /// x is R x in; the result is R x out.
  var<S> forward(tape<S>& t, const var<S>& x) { return linear(x, t.leaf(weight), bias_leaf(t)); }
  /// Appends pointers to the weight and the bias (when present) to `out`.
  void collect(std::vector<parameter<S>*>& out) {
    out.push_back(&weight);
    if (has_bias()) out.push_back(&bias);
  }
};

/// LayerNorm over the last dimension, eps 1e-6 unless told otherwise, weight ones and bias zeros.
template <Scalar S>
struct layer_norm_layer {
  double eps = 1e-6;    ///< Added to the variance (timm 1e-6, CLIP 1e-5).
  parameter<S> weight;  ///< 1 x dim scale, ones at start.
  parameter<S> bias;    ///< 1 x dim shift, zeros at start.

  /// An empty layer (a model without this norm), to be assigned.
  layer_norm_layer() = default;
  /// Parameters named `name.weight` and `name.bias` over `dim` features.
  layer_norm_layer(const std::string& name, index dim, double eps_ = 1e-6)
      : eps(eps_), weight(name + ".weight", 1, dim), bias(name + ".bias", 1, dim) {
    weight.set_shape({dim});
    bias.set_shape({dim});
    init::constant(weight, S(1));
  }
  /// True unless the layer is empty (a model without this norm).
  bool present() const noexcept { return weight.size() > 0; }
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
/// vit_block runs them through one fused op, layer_norm_attention (LayerNorm, qkv, attention, proj, the residual).
template <Scalar S>
struct attention_layer {
  linear_layer<S> qkv;   ///< D -> 3D, output columns [q | k | v].
  linear_layer<S> proj;  ///< D -> D output projection.
  index heads = 1;       ///< Number of heads H; D must be a multiple of H.

  /// An empty layer, to be assigned.
  attention_layer() = default;
  /// Layers `name.qkv` (with a bias unless `qkv_bias` is false) and `name.proj` of width `dim` with `heads_` heads.
  attention_layer(const std::string& name, index dim, index heads_, init::engine& rng, bool qkv_bias = true)
      : qkv(name + ".qkv", dim, 3 * dim, rng, qkv_bias), proj(name + ".proj", dim, dim, rng), heads(heads_) {}
  /// Appends pointers to the four parameters to `out`.
  void collect(std::vector<parameter<S>*>& out) {
    qkv.collect(out);
    proj.collect(out);
  }
};

/// The parameters of the MLP fc2(GELU(fc1(x))) with the exact erf GELU.
/// vit_block runs them through one fused op, layer_norm_mlp (LayerNorm, fc1, the activation, fc2, the residual).
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
