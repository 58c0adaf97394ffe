#pragma once
/// @file prompted_vit.hpp
/// The prompted search space (docs/method.md, section 4): a frozen ViT whose every
/// layer is a MixedOp over a compile-time list of fusion operators,
///
///     x_{l+1} = sum_k softmax(alpha_l)_k * op_{l,k}(x_l),
///
/// or, built from a genotype, one fixed operator per layer (the derived model).
/// Both run through the same code: a layer is a list of candidate operators,
/// mixed by softmax(alpha_l) when it has several.
///
/// Parameter groups: the backbone (frozen), the weights w (every operator
/// parameter `fusion.{l}.{op}.{symbol}` and the head) and the architecture
/// alpha (L x K, search model only). State files hold w and alpha under those
/// names (`head.weight`, `head.bias`, `alpha`), the naming of the PyTorch peer,
/// in the model's scalar type (F32 for float, F64 for double).
///
/// A forward pass keeps no state in the model: two tapes (threads, processes)
/// may run it at once.

#include <array>
#include <filesystem>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "../fusion/op_list.hpp"
#include "mixed_op.hpp"
#include "../io/checkpoint.hpp"
#include "../io/metadata_keys.hpp"
#include "../optim/sgd.hpp"
#include "../train/trainable.hpp"
#include "../vit/vit.hpp"
#include "genotype.hpp"

namespace vpdarts {

/// How a prompted model is built.
struct prompt_options {
  index prompts = 8;        ///< p, prompt tokens of concat and cross_attention
  index classes = 0;        ///< head outputs; 0 keeps the backbone's head size
  std::uint64_t seed = 0;   ///< seeds alpha and the operator parameters
};

/// The prompted ViT over the operator list `Ops` (the search space, or a derived model).
template <Scalar S, OpList Ops = default_ops>
class prompted_vit {
 public:
  /// Number of candidate operators K.
  static constexpr std::size_t op_count = Ops::size;
  /// The operator list the model was built over.
  using op_list_type = Ops;

  /// The search model: every layer mixes all K operators; alpha ~ 1e-3 N(0, 1), seeded.
  /// The backbone is frozen; the head is replaced by a zero head when o.classes is set.
  /// @throws config_error for prompts < 1.
  prompted_vit(vit<S> backbone, const prompt_options& o) : backbone_(std::move(backbone)), opts_(o) {
    std::vector<std::vector<std::size_t>> all(static_cast<std::size_t>(backbone_.config().depth));
    for (auto& l : all)
      for (std::size_t k = 0; k < op_count; ++k) l.push_back(k);
    build(all, true);
  }

  /// A derived model: layer l runs only the operator `g.layers[l].op`, with fresh parameters.
  /// @throws config_error for a genotype of another depth or an operator not in Ops (listing the known ones).
  prompted_vit(vit<S> backbone, const genotype& g, const prompt_options& o) : backbone_(std::move(backbone)), opts_(o) {
    const index depth = backbone_.config().depth;
    if (static_cast<index>(g.layers.size()) != depth)
      throw config_error(detail::cat("prompted_vit: the genotype has ", g.layers.size(), " layers but the backbone has ",
                                     depth, " blocks"));
    std::vector<std::vector<std::size_t>> chosen;
    for (const auto& l : g.layers) chosen.push_back({Ops::index_of(l.op)});
    build(chosen, false);
  }

  prompted_vit(const prompted_vit&) = delete;
  prompted_vit& operator=(const prompted_vit&) = delete;
  /// Moves the model; the parameters keep their addresses' contents (optimisers must be rebuilt).
  prompted_vit(prompted_vit&&) noexcept = default;

  /// True for the search model (MixedOp layers and alpha).
  bool is_search() const noexcept { return search_; }
  /// The backbone's shape (classes is the new head's).
  const vit_config& config() const noexcept { return backbone_.config(); }
  /// The prompt settings.
  const prompt_options& options() const noexcept { return opts_; }
  /// What the fusion operators' parameters were built for: backbone shape and prompt count.
  fusion_context context() const { return {backbone_.config(), opts_.prompts}; }
  /// The frozen backbone. Its `head` member is the model's trainable head (see head()).
  vit<S>& backbone() noexcept { return backbone_; }
  /// The trainable classification head (classes x D), part of w. It is stored
  /// as the backbone's `head` so that the backbone's logits use it.
  nn::linear_layer<S>& head() noexcept { return backbone_.head; }
  /// The architecture parameters (L x K; zero-sized in a derived model).
  parameter<S>& alpha() noexcept { return alpha_; }

  /// The MixedOp of layer l.
  mixed_op<S, Ops>& layer(index l) { return layers_.at(static_cast<std::size_t>(l)); }
  /// The operator parameters of layer l, operator k (empty when that operator is not in the layer).
  std::vector<parameter<S>>& op_parameters(index l, std::size_t k) { return layer(l).parameters(k); }

  /// Logits (B x classes) for a batch of images, recording gradients for the
  /// groups in `target` only (w: operator parameters and head; alpha).
  /// @throws shape_error when the images do not fit the backbone.
  var<S> logits(tape<S>& t, const image_batch<S>& images, grad_target target = grad_target::all) {
    const bool track_w = (static_cast<unsigned>(target) & static_cast<unsigned>(grad_target::weights)) != 0;
    const bool track_alpha = (static_cast<unsigned>(target) & static_cast<unsigned>(grad_target::alpha)) != 0;
    const var<S> alpha = search_ ? t.leaf(alpha_, track_alpha) : var<S>();
    var<S> feats = backbone_.features(t, images, [&](index l, vit_block<S>& block, const var<S>& x, index batch) {
      mixed_op<S, Ops>& m = layers_[static_cast<std::size_t>(l)];
      tape<S>& bt = x.owner();  // t, or its block tape under no_grad
      const var<S> a = &bt == &t ? alpha : (search_ ? bt.leaf(alpha_, false) : var<S>());
      const var<S> w = m.is_mixed() ? softmax_rows(slice_rows(a, l, 1)) : var<S>();
      return m.forward(bt, block, x, batch, w, track_w);
    });
    return linear(feats, t.leaf(head().weight, track_w), t.leaf(head().bias, track_w));
  }

  /// The weights w: every operator parameter, then the head.
  std::vector<parameter<S>*> weights() {
    std::vector<parameter<S>*> out = fusion_parameters();
    head().collect(out);
    return out;
  }
  /// Every operator parameter (layer by layer, operator by operator).
  std::vector<parameter<S>*> fusion_parameters() {
    std::vector<parameter<S>*> out;
    for (auto& layer : layers_) layer.collect(out);
    return out;
  }
  /// The SGD groups of w: one per operator (its parameters at every layer, with
  /// its lr multiplier), the head's weight, and the head's bias (no weight decay).
  /// @throws config_error when op_lr_mult is neither empty nor one per operator.
  std::vector<optim::param_group<S>> weight_groups(const std::vector<double>& op_lr_mult, double head_lr_mult) {
    if (!op_lr_mult.empty() && op_lr_mult.size() != Ops::size)
      throw config_error(detail::cat("prompted_vit::weight_groups: ", op_lr_mult.size(), " operator lr multipliers for ",
                                     Ops::size, " operators (", detail::join(Ops::names), ")"));
    std::vector<optim::param_group<S>> out;
    for (std::size_t k = 0; k < Ops::size; ++k) {
      optim::param_group<S> g{{}, op_lr_mult.empty() ? 1.0 : op_lr_mult[k], true, std::string(Ops::names[k])};
      for (index l = 0; l < config().depth; ++l)
        for (auto& p : op_parameters(l, k)) g.params.push_back(&p);
      out.push_back(std::move(g));
    }
    out.push_back({{&head().weight}, head_lr_mult, true, "head.weight"});
    out.push_back({{&head().bias}, head_lr_mult, false, "head.bias"});
    return out;
  }

  /// Everything a state file holds: w, then alpha (search model).
  std::vector<parameter<S>*> state_parameters() {
    std::vector<parameter<S>*> out = weights();
    if (search_) out.push_back(&alpha_);
    return out;
  }

  /// Trainable values of w (fusion parameters and head), plus alpha when asked.
  index trainable_params(bool with_alpha = false) {
    index n = 0;
    for (parameter<S>* p : weights()) n += p->size();
    if (with_alpha && search_) n += alpha_.size();
    return n;
  }
  /// trainable_params() as a percentage of the backbone's size.
  double trainable_percent(bool with_alpha = false) {
    return 100.0 * static_cast<double>(trainable_params(with_alpha)) / static_cast<double>(backbone_.backbone_size());
  }

  /// softmax(alpha) row by row (L x K). @throws state_error for a derived model.
  matrix<double> softmax_alpha() const {
    if (!search_) throw state_error("prompted_vit::softmax_alpha: a derived model has no alpha");
    matrix<double> w = alpha_.value().template cast<double>();
    for (index l = 0; l < w.rows(); ++l) {
      w.row(l) = (w.row(l).array() - w.row(l).maxCoeff()).exp();
      w.row(l) /= w.row(l).sum();
    }
    return w;
  }

  /// The genotype: argmax_k softmax(alpha_l) per layer with the weights (search
  /// model), or the layers' fixed operators (derived model).
  genotype derive() const {
    genotype g;
    for (auto n : Ops::names) g.ops.emplace_back(n);
    if (!search_) {
      for (const auto& layer : layers_) g.layers.push_back({std::string(Ops::names[layer.candidates()[0]]), {}});
      return g;
    }
    const matrix<double> w = softmax_alpha();
    for (index l = 0; l < w.rows(); ++l) {
      index k;
      w.row(l).maxCoeff(&k);
      genotype::layer out{std::string(Ops::names[static_cast<std::size_t>(k)]), {}};
      for (index j = 0; j < w.cols(); ++j) out.weights.push_back(w(l, j));
      g.layers.push_back(std::move(out));
    }
    return g;
  }

  /// Saves w and alpha (F32 for float, F64 for double; atomic), with the genotype and the prompt count.
  void save_state(const std::filesystem::path& path, std::map<std::string, std::string> metadata = {}) {
    metadata[io::keys::genotype] = derive().to_json().dump();
    metadata[io::keys::prompts] = std::to_string(opts_.prompts);
    auto ps = state_parameters();
    io::save_parameters<S>(path, ps, metadata);
  }
  /// Loads w and alpha by name; every name must be present with its shape.
  /// With allow_unexpected, extra tensors (other operators' parameters) are ignored.
  /// @throws io_error listing every mismatch.
  void load_state(const std::filesystem::path& path, bool allow_unexpected = false) {
    io::load_options o;
    o.allow_unexpected = allow_unexpected;
    auto ps = state_parameters();
    io::load_parameters<S>(path, ps, o);
  }

 private:
  void build(const std::vector<std::vector<std::size_t>>& ops, bool search) {
    search_ = search;
    backbone_.freeze_backbone();
    if (opts_.prompts < 1) throw config_error(detail::cat("prompted_vit: prompts is ", opts_.prompts, ", must be >= 1"));
    {
      double values = 0;  // what the operators' parameters will take, checked before any is allocated
      const fusion_context ctx = context();
      Ops::for_each([&](auto type, auto) {
        for (const param_spec& p : fusion_traits<typename decltype(type)::type>::params(ctx))
          values += static_cast<double>(p.rows) * static_cast<double>(p.cols);
      });
      detail::check_allocation(values * static_cast<double>(backbone_.config().depth) * 2 * sizeof(S),
                               detail::cat("prompted_vit: ", opts_.prompts, " prompts on ", backbone_.config().describe()));
    }
    if (opts_.classes > 0 && opts_.classes != backbone_.config().classes) backbone_.reset_head(opts_.classes);
    head().weight.unfreeze();
    head().bias.unfreeze();
    const fusion_context ctx = context();
    const index depth = backbone_.config().depth;
    layers_.reserve(static_cast<std::size_t>(depth));
    for (index l = 0; l < depth; ++l) layers_.emplace_back(l, ctx, ops[static_cast<std::size_t>(l)], opts_.seed);
    if (search_) {
      alpha_ = parameter<S>("alpha", depth, static_cast<index>(op_count));
      init::engine rng(opts_.seed * 7919ull + 3);
      init::normal(alpha_, 1e-3, rng);
    } else {
      alpha_ = parameter<S>("alpha", 0, 0, false);
    }
  }

  vit<S> backbone_;
  prompt_options opts_;
  bool search_ = true;
  std::vector<mixed_op<S, Ops>> layers_;
  parameter<S> alpha_;
};

// what the training loops (train/) take of it
static_assert(Trainable<prompted_vit<float, default_ops>, float> && Trainable<prompted_vit<double, default_ops>, double>);

}  // namespace vpdarts
