#pragma once
/// @file vit.hpp
/// The pre-norm Vision Transformer with timm's conventions and names:
///
///     x_0    = [cls ; reg ; PatchEmbed(img)] + pos      ((B*T) x D; pos before the prefix with no_embed_class)
///     x_0    = LN_pre(x_0)                              (pre_norm, CLIP)
///     Block(x): x = x + g1 Proj(MHSA(LN1(x)));  x = x + g2 FC2(act(FC1(LN2(x))))   (g: LayerScale, else 1)
///     features = fc_norm(pool(LN(x_L)))                 (pool: the class token, or the mean of the patches)
///     logits = Head(features)
///
/// Parameters carry timm's names and shapes (`patch_embed.proj.weight` is
/// D x C x p x p, `cls_token` 1 x 1 x D, `reg_token` 1 x R x D, `pos_embed`
/// 1 x T x D, `blocks.{i}.ls1.gamma` D, ...), so a timm checkpoint exported to
/// safetensors loads by name (see vit/checkpoint.hpp). The variants are the
/// fields of vit_config; `vit_config{}` is the classic ViT.

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../autodiff.hpp"
#include "../data/image_batch.hpp"
#include "../nn/layers.hpp"
#include "../detail/memory.hpp"
#include "config.hpp"

namespace vpdarts {

/// One pre-norm transformer block: `blocks.{i}.norm1`, `.attn.qkv`, `.attn.proj`, `.ls1.gamma` (LayerScale
/// only), `.norm2`, `.mlp.fc1`, `.mlp.fc2`, `.ls2.gamma` (LayerScale only).
template <Scalar S>
struct vit_block {
  nn::layer_norm_layer<S> norm1;  ///< before attention
  nn::attention_layer<S> attn;     ///< multi-head self-attention
  nn::layer_norm_layer<S> norm2;  ///< before the MLP
  nn::mlp_layer<S> mlp;            ///< D -> mlp -> D
  parameter<S> ls1;                ///< `ls1.gamma` (D): LayerScale of the attention branch; empty without LayerScale
  parameter<S> ls2;                ///< `ls2.gamma` (D): LayerScale of the MLP branch; empty without LayerScale
  activation act = activation::gelu;  ///< the MLP's activation

  /// An empty block, to be assigned.
  vit_block() = default;
  /// Block `name` (e.g. "blocks.0") of shape `c`, weights drawn from `rng`; LayerScale starts at ones.
  vit_block(const std::string& name, const vit_config& c, init::engine& rng)
      : norm1(name + ".norm1", c.dim, c.norm_eps),
        attn(name + ".attn", c.dim, c.heads, rng, c.qkv_bias),
        norm2(name + ".norm2", c.dim, c.norm_eps),
        mlp(name + ".mlp", c.dim, c.mlp, rng),
        act(c.act) {
    if (c.layer_scale)
      for (auto [p, n] : {std::pair{&ls1, ".ls1.gamma"}, std::pair{&ls2, ".ls2.gamma"}}) {
        *p = parameter<S>(name + n, 1, c.dim);
        p->set_shape({c.dim});
        init::constant(*p, S(1));
      }
  }

  /// True when the block has LayerScale.
  bool has_layer_scale() const noexcept { return ls1.size() > 0; }

  /// x is (B*T') x D for `batch` sequences of any length T' (prompts may have been inserted).
  /// Runs the attention branch (LayerNorm, qkv, attention, projection, LayerScale) and the MLP branch
  /// (LayerNorm, fc1, activation, fc2, LayerScale), each with its skip connection, as one fused op
  /// each (layer_norm_attention, layer_norm_mlp): a frozen block keeps its input, qkv (in bf16 under
  /// precision::bf16; unless the tape's execution_config says attention recompute), the attention
  /// branch's sum, the MLP's hidden layer (unless it says mlp recompute) and its output.
  var<S> forward(tape<S>& t, const var<S>& x, index batch) {
    const var<S> g1 = has_layer_scale() ? t.leaf(ls1) : var<S>(), g2 = has_layer_scale() ? t.leaf(ls2) : var<S>();
    const var<S> h = layer_norm_attention(x, t.leaf(norm1.weight), t.leaf(norm1.bias), S(norm1.eps),
                                          t.leaf(attn.qkv.weight), attn.qkv.bias_leaf(t), batch, attn.heads,
                                          t.leaf(attn.proj.weight), t.leaf(attn.proj.bias), g1, x);
    return layer_norm_mlp(h, t.leaf(norm2.weight), t.leaf(norm2.bias), S(norm2.eps), t.leaf(mlp.fc1.weight),
                          t.leaf(mlp.fc1.bias), act, t.leaf(mlp.fc2.weight), t.leaf(mlp.fc2.bias), g2, h);
  }
  /// Appends pointers to the block's parameters to `out`, in checkpoint order.
  void collect(std::vector<parameter<S>*>& out) {
    norm1.collect(out);
    attn.collect(out);
    if (has_layer_scale()) out.push_back(&ls1);
    norm2.collect(out);
    mlp.collect(out);
    if (has_layer_scale()) out.push_back(&ls2);
  }
};

/// The default hook of vit::features: runs the block as it is. A hook is any
/// callable `(index layer, vit_block<S>& block, const var<S>& x, index batch) -> var<S>`;
/// the fusion search uses one to run its MixedOp around each block.
struct run_block {
  /// `block.forward(x)`; the layer index is unused.
  template <Scalar S>
  var<S> operator()(index, vit_block<S>& block, const var<S>& x, index batch) const {
    return block.forward(x.owner(), x, batch);
  }
};

/// How vit's constructor initialises the weights.
enum class vit_init {
  timm,    ///< timm's default: trunc_normal(0.02) linear weights (suits loading a checkpoint)
  xavier,  ///< xavier-uniform linear weights (timm's "jax" scheme): trains faster from scratch
};

/// The Vision Transformer (backbone and linear head).
template <Scalar S>
class vit {
 public:
  parameter<S> patch_weight;  ///< `patch_embed.proj.weight`, D x C x p x p (stored D x C*p*p)
  parameter<S> patch_bias;    ///< `patch_embed.proj.bias`, D (empty when the config has no patch bias)
  parameter<S> cls_token;     ///< `cls_token`, 1 x 1 x D (empty without a class token)
  parameter<S> reg_token;     ///< `reg_token`, 1 x R x D (stored R x D; empty without registers)
  parameter<S> pos_embed;     ///< `pos_embed`, 1 x T x D (stored T x D; N x D with no_embed_class)
  nn::layer_norm_layer<S> norm_pre;  ///< `norm_pre` (empty unless pre_norm)
  std::vector<vit_block<S>> blocks;  ///< `blocks.{i}`, config().depth of them
  nn::layer_norm_layer<S> norm;      ///< `norm` on every token after the last block (empty unless final_norm)
  nn::layer_norm_layer<S> fc_norm;   ///< `fc_norm` on the pooled features (empty unless fc_norm)
  nn::linear_layer<S> head;          ///< `head`, classes x D, zero-initialised

  /// A randomly initialised ViT (timm's init: trunc_normal(0.02) linear weights,
  /// zero biases, unit norms, PyTorch's default for the patch convolution, zero head), seeded. @throws config_error for an invalid config.
  explicit vit(const vit_config& c, std::uint64_t seed = 0, vit_init scheme = vit_init::timm) : cfg_(validated(c)) {
    init::engine rng(seed);
    const index cpp = c.channels * c.patch * c.patch;
    patch_weight = parameter<S>("patch_embed.proj.weight", c.dim, cpp);
    patch_weight.set_shape({c.dim, c.channels, c.patch, c.patch});
    // timm leaves the patch convolution at PyTorch's default: uniform(+-1/sqrt(fan_in)) for weight and bias
    const double bound = 1.0 / std::sqrt(static_cast<double>(cpp));
    init::uniform(patch_weight, bound, rng);
    if (c.patch_bias) {
      patch_bias = parameter<S>("patch_embed.proj.bias", 1, c.dim);
      patch_bias.set_shape({c.dim});
      init::uniform(patch_bias, bound, rng);
    }
    if (c.class_token) {
      cls_token = parameter<S>("cls_token", 1, c.dim);
      cls_token.set_shape({1, 1, c.dim});
      init::trunc_normal(cls_token, 0.02, rng);
    }
    if (c.reg_tokens > 0) {
      reg_token = parameter<S>("reg_token", c.reg_tokens, c.dim);
      reg_token.set_shape({1, c.reg_tokens, c.dim});
      init::trunc_normal(reg_token, 0.02, rng);
    }
    pos_embed = parameter<S>("pos_embed", c.pos_tokens(), c.dim);
    pos_embed.set_shape({1, c.pos_tokens(), c.dim});
    init::trunc_normal(pos_embed, 0.02, rng);
    if (c.pre_norm) norm_pre = nn::layer_norm_layer<S>("norm_pre", c.dim, c.norm_eps);
    blocks.reserve(static_cast<std::size_t>(c.depth));
    for (index i = 0; i < c.depth; ++i) blocks.emplace_back(detail::cat("blocks.", i), c, rng);
    if (c.final_norm) norm = nn::layer_norm_layer<S>("norm", c.dim, c.norm_eps);
    if (c.fc_norm) fc_norm = nn::layer_norm_layer<S>("fc_norm", c.dim, c.norm_eps);
    head = nn::linear_layer<S>("head", c.dim, c.classes, rng);
    head.weight.value().setZero();
    if (scheme == vit_init::xavier)
      for (auto& b : blocks)
        for (nn::linear_layer<S>* l : {&b.attn.qkv, &b.attn.proj, &b.mlp.fc1, &b.mlp.fc2})
          init::uniform(l->weight, std::sqrt(6.0 / static_cast<double>(l->weight.rows() + l->weight.cols())), rng);
  }

  /// The model's shape.
  const vit_config& config() const noexcept { return cfg_; }

  /// Every parameter, backbone first, the head's two last. Pointers stay valid while the model lives
  /// (do not move the model while a tape refers to them).
  std::vector<parameter<S>*> parameters() {
    std::vector<parameter<S>*> out = backbone_parameters();
    head.collect(out);
    return out;
  }
  /// Every parameter but the head (those the config has).
  std::vector<parameter<S>*> backbone_parameters() {
    std::vector<parameter<S>*> out{&patch_weight};
    for (parameter<S>* p : {&patch_bias, &cls_token, &reg_token})
      if (p->size() > 0) out.push_back(p);
    out.push_back(&pos_embed);
    if (norm_pre.present()) norm_pre.collect(out);
    for (auto& b : blocks) b.collect(out);
    if (norm.present()) norm.collect(out);
    if (fc_norm.present()) fc_norm.collect(out);
    return out;
  }
  /// The parameter of a timm name, or nullptr.
  parameter<S>* find(const std::string& name) {
    for (parameter<S>* p : parameters())
      if (p->name() == name) return p;
    return nullptr;
  }
  /// Number of values of the backbone (head excluded).
  index backbone_size() {
    index n = 0;
    for (parameter<S>* p : backbone_parameters()) n += p->size();
    return n;
  }

  /// Replaces the head by a zero-initialised one of `classes` outputs.
  /// @throws config_error when classes is not positive.
  void reset_head(index classes) {
    if (classes <= 0) throw config_error(detail::cat("vit::reset_head: classes is ", classes, ", must be positive"));
    cfg_.classes = classes;
    init::engine rng(0);
    head = nn::linear_layer<S>("head", cfg_.dim, classes, rng);
    head.weight.value().setZero();
  }

  /// Freezes the backbone (every parameter but the head); the head stays as it is.
  void freeze_backbone() {
    for (parameter<S>* p : backbone_parameters()) p->freeze();
  }
  /// Makes every parameter trainable (pretraining).
  void unfreeze_all() {
    for (parameter<S>* p : parameters()) p->unfreeze();
  }

  /// x_0 = [cls ; reg ; PatchEmbed(img)] + pos (then norm_pre): the (B*T) x D input of block 0.
  /// The patch convolution (kernel = stride = patch) is one GEMM over unfolded patches,
  /// taken in row-major order. Only images `first` .. `first + count` when count >= 0.
  /// @throws shape_error when the images are not C x image x image of the config.
  var<S> embed(tape<S>& t, const image_batch<S>& images, index first = 0, index count = -1) {
    const vit_config& c = cfg_;
    if (images.channels != c.channels || images.height != c.image || images.width != c.image ||
        images.pixels.cols() != c.pixels() || images.size() == 0)
      throw shape_error(detail::cat("vit::embed: image batch is ", images.shape(), ", but the model expects Cx",
                                    c.image, "x", c.image, " with C=", c.channels));
    if (count < 0) count = images.size() - first;
    if (first < 0 || count <= 0 || first + count > images.size())
      throw shape_error(detail::cat("vit::embed: images ", first, "..", first + count, " of a batch of ", images.size()));
    const index batch = count, n = c.patches(), per_row = c.image / c.patch, p = c.patch;
    const index cpp = c.channels * p * p;
    var<S> patches = t.input(batch * n, cpp);
    auto U = patches.value();
    for (index b = 0; b < batch; ++b) {
      const S* img = images.pixels.row(first + b).data();
      for (index py = 0; py < per_row; ++py)
        for (index px = 0; px < per_row; ++px) {
          S* dst = U.row(b * n + py * per_row + px).data();
          for (index ch = 0; ch < c.channels; ++ch)
            for (index ky = 0; ky < p; ++ky) {
              const S* src = img + (ch * c.image + py * p + ky) * c.image + px * p;
              std::copy(src, src + p, dst + (ch * p + ky) * p);
            }
        }
    }
    var<S> x = linear(patches, t.leaf(patch_weight), c.patch_bias ? t.leaf(patch_bias) : var<S>());
    if (c.no_embed_class) x = add(x, t.leaf(pos_embed));
    if (c.reg_tokens > 0) x = insert_rows(x, t.leaf(reg_token), batch, 0);
    if (c.class_token) x = insert_rows(x, t.leaf(cls_token), batch, 0);
    if (!c.no_embed_class) x = add(x, t.leaf(pos_embed));
    if (c.pre_norm) x = norm_pre.forward(t, x);
    return x;
  }

  /// The features of every image, B x D, as timm's forward_head(forward_features(x), pre_logits=True):
  /// the final norm, the pooling (class token or mean of the patch tokens), then fc_norm. Runs
  /// `hook(l, blocks[l], x, batch)` in place of block l; the hook records on `x.owner()`.
  ///
  /// With no gradient recorded (no_grad), the images go through in chunks of about
  /// inference_chunk_rows token rows (fewer for wide models: inference_chunk_values), everything of a chunk on t.block_tape(), block after block,
  /// keeping only the current block's values: t itself holds just the features and one block's
  /// input. Images are independent, so the result is the whole batch's (to float rounding, since
  /// products of another size may sum in another order).
  template <class Hook = run_block>
  var<S> features(tape<S>& t, const image_batch<S>& images, Hook&& hook = {}) {
    const index batch = images.size();
    if (t.grad_enabled() || batch == 0) {
      var<S> x = embed(t, images);
      for (index l = 0; l < cfg_.depth; ++l) x = hook(l, blocks[static_cast<std::size_t>(l)], x, batch);
      return pool(t, x, batch);
    }
    const index rows = std::max<index>(1, std::min(inference_chunk_rows, inference_chunk_values / std::max<index>(1, cfg_.dim)));
    const index chunks = std::max<index>(1, (batch * cfg_.tokens() + rows - 1) / rows);
    const index per = (batch + chunks - 1) / chunks;
    tape<S>& bt = t.block_tape();
    var<S> out, carry;  // on t: the features, and the input of the next block
    for (index first = 0; first < batch; first += per) {
      const index n = std::min(per, batch - first);
      bt.reset();
      var<S> x = embed(bt, images, first, n);
      for (index l = 0; l < cfg_.depth; ++l) {
        const var<S> y = hook(l, blocks[static_cast<std::size_t>(l)], x, n);
        if (!carry.valid() || carry.rows() != y.rows() || carry.cols() != y.cols()) carry = t.input(y.rows(), y.cols());
        carry.value() = y.value();
        bt.reset();
        x = bt.constant(carry.value());
      }
      const var<S> f = pool(bt, x, n);
      if (!out.valid()) out = t.input(batch, f.cols());
      out.value().middleRows(first, n) = f.value();
    }
    bt.reset();
    return out;
  }

  /// Token rows per chunk of a forward pass with no gradient (see features()), at most.
  static constexpr index inference_chunk_rows = 4096;
  /// Values per D-wide activation of a chunk, at most: wide models take fewer rows per chunk
  /// (4096 rows up to D 192, 1024 at ViT-B's 768), so a block's working set stays near 3 MiB per activation.
  static constexpr index inference_chunk_values = 4096 * 192;

  /// Head(features): B x classes logits.
  template <class Hook = run_block>
  var<S> logits(tape<S>& t, const image_batch<S>& images, Hook&& hook = {}) {
    return head.forward(t, features(t, images, std::forward<Hook>(hook)));
  }

 private:
  // The final norm, the pooling and fc_norm of the last block's output x ((B*T) x D): B x D.
  var<S> pool(tape<S>& t, var<S> x, index batch) {
    var<S> f;
    if (cfg_.pool == pooling::token) {
      f = sequence_row(x, batch, 0);  // LayerNorm is per row: norm the class token alone
      if (norm.present()) f = norm.forward(t, f);
    } else {
      if (norm.present()) x = norm.forward(t, x);
      f = sequence_mean(x, batch, cfg_.prefix_tokens());
    }
    return fc_norm.present() ? fc_norm.forward(t, f) : f;
  }

  static const vit_config& validated(const vit_config& c) {
    c.validate();
    const double d = static_cast<double>(c.dim), m = static_cast<double>(c.mlp);
    const double values = d * static_cast<double>(c.channels * c.patch * c.patch) + d * static_cast<double>(c.tokens()) +
                          static_cast<double>(c.depth) * (4 * d * d + 2 * d * m + 10 * d) + d * static_cast<double>(c.classes);
    detail::check_allocation(values * sizeof(S), detail::cat("a ViT of ", c.describe()));
    return c;
  }
  vit_config cfg_;
};

}  // namespace vpdarts
