#pragma once
/// @file mixed_op.hpp
/// One layer of the search space: a MixedOp over candidate fusion operators
/// chosen from a compile-time operator list,
///
///     MixedOp(x) = sum_k w_k * post_k( Block( pre_k(x; theta_k) ) ),
///
/// where w is softmax(alpha_l). A layer with a single candidate is a fixed
/// operator (a derived model) and runs through the same code without mixing.
/// The operator loop is unrolled at compile time (boost::hana); no virtual call.

#include <algorithm>
#include <array>
#include <span>
#include <string>
#include <vector>

#include "../detail/profile.hpp"
#include "../fusion/op_list.hpp"
#include "../vit/vit.hpp"

namespace vpdarts {

/// The MixedOp of one layer: each candidate operator owns its parameters
/// (`fusion.{layer}.{op}.{symbol}`).
template <Scalar S, OpList Ops>
class mixed_op {
 public:
  /// Number of operators in the list (alpha's width before any are excluded).
  static constexpr std::size_t op_count = Ops::size;

  /// Candidates are positions in Ops, in the order their weights come. Parameters
  /// are initialised as each operator's trait says, seeded by (seed, layer, operator).
  /// @throws config_error for no candidates or a position outside Ops.
  mixed_op(index layer, const fusion_context& ctx, std::vector<std::size_t> candidates, std::uint64_t seed)
      : candidates_(std::move(candidates)), prefix_tokens_(ctx.vit.prefix_tokens()) {
    if (candidates_.empty()) throw config_error(detail::cat("mixed_op: layer ", layer, " has no candidate operator"));
    for (std::size_t k : candidates_)
      if (k >= op_count)
        throw config_error(detail::cat("mixed_op: operator position ", k, " is outside a list of ", op_count));
    Ops::for_each([&](auto type, auto i) {
      using Op = typename decltype(type)::type;
      constexpr std::size_t k = decltype(i)::value;
      if (std::find(candidates_.begin(), candidates_.end(), k) == candidates_.end()) return;
      init::engine rng(seed * 1000003ull + static_cast<std::uint64_t>(layer) * 1009ull + k * 17ull + 1);
      for (const param_spec& s : fusion_traits<Op>::params(ctx)) {
        parameter<S> p(detail::cat("fusion.", layer, ".", fusion_traits<Op>::name, ".", s.symbol), s.rows, s.cols);
        s.init.apply(p, rng);
        params_[k].push_back(std::move(p));
        symbols_[k].push_back(s.symbol);
      }
    });
  }

  /// The candidate operators (positions in Ops).
  const std::vector<std::size_t>& candidates() const noexcept { return candidates_; }
  /// True when the layer mixes several operators.
  bool is_mixed() const noexcept { return candidates_.size() > 1; }
  /// The parameters of operator k (empty when k is not a candidate).
  std::vector<parameter<S>>& parameters(std::size_t k) { return params_[k]; }
  /// Appends every candidate's parameters.
  void collect(std::vector<parameter<S>*>& out) {
    for (auto& ps : params_)
      for (auto& p : ps) out.push_back(&p);
  }

  /// sum_k weights_k * op_k(x) over the candidates; `weights` is 1 x (number of
  /// candidates) and is not read for a single candidate. With `track` false the
  /// operators' parameters get no gradient work on this tape.
  /// @throws shape_error when an operator's post does not return x's shape.
  var<S> forward(tape<S>& t, vit_block<S>& block, const var<S>& x, index batch, const var<S>& weights, bool track) {
    std::array<var<S>, op_count> outs{};
    Ops::for_each([&](auto type, auto i) {
      using Op = typename decltype(type)::type;
      constexpr std::size_t k = decltype(i)::value;
      for (std::size_t j = 0; j < candidates_.size(); ++j)
        if (candidates_[j] == k) outs[j] = run<Op>(t, k, block, x, batch, track);
    });
    if (!is_mixed()) return outs[0];
    return weighted_sum(weights, std::span<const var<S>>(outs.data(), candidates_.size()));
  }

  /// Candidate k alone around `block`, its parameters with no gradient work: what that
  /// operator costs at this layer (search/cost.hpp times it).
  /// @throws config_error when k is not a candidate of the layer.
  var<S> forward_one(tape<S>& t, std::size_t k, vit_block<S>& block, const var<S>& x, index batch) {
    if (std::find(candidates_.begin(), candidates_.end(), k) == candidates_.end())
      throw config_error(detail::cat("mixed_op::forward_one: operator position ", k, " is not a candidate of the layer"));
    var<S> out;
    Ops::for_each([&](auto type, auto i) {
      if (decltype(i)::value == k) out = run<typename decltype(type)::type>(t, k, block, x, batch, false);
    });
    return out;
  }

 private:
  template <class Op>
  var<S> run(tape<S>& t, std::size_t k, vit_block<S>& block, const var<S>& x, index batch, bool track) {
    op_params<S> p;
    p.set_prefix_tokens(prefix_tokens_);
    for (std::size_t j = 0; j < params_[k].size(); ++j) p.push(symbols_[k][j], t.leaf(params_[k][j], track));
    var<S> in;
    {
      detail::profile_scope profiled(detail::profile_kind::fusion);
      in = fusion_traits<Op>::pre(x, p, batch);
    }
    const var<S> y = block.forward(t, in, batch);
    detail::profile_scope profiled(detail::profile_kind::fusion);
    var<S> out = fusion_traits<Op>::post(y, p, batch);
    if (out.rows() != x.rows() || out.cols() != x.cols())
      throw shape_error(detail::cat("fusion operator '", fusion_traits<Op>::name, "': post returned ",
                                    detail::shape_str(out.rows(), out.cols()), " for an input of ",
                                    detail::shape_str(x.rows(), x.cols())));
    return out;
  }

  std::vector<std::size_t> candidates_;
  index prefix_tokens_ = 1;
  std::array<std::vector<parameter<S>>, op_count> params_;
  std::array<std::vector<std::string>, op_count> symbols_;
};

}  // namespace vpdarts
