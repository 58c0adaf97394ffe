#pragma once
/// @file traits.hpp
/// The fusion-operator trait and the FusionOp concept.
///
/// A fusion operator k at layer l maps the layer input x ((B*T) x D) to the
/// block's input and the block's output back to (B*T) x D:
///
///     op(x) = post( Block( pre(x; theta), batch ), theta )
///
/// A type `Op` becomes a fusion operator by specialising
/// `vpdarts::fusion_traits<Op>` (like nlohmann's adl_serializer):
///
/// ```cpp
/// template <> struct vpdarts::fusion_traits<my_op> {
///   static constexpr std::string_view name = "my_op";          // unique, used in genotypes and files
///   static std::vector<vpdarts::param_spec> params(const vpdarts::fusion_context& c);  // shapes, inits
///   template <vpdarts::Scalar S>
///   static vpdarts::var<S> pre(const vpdarts::var<S>& x, const vpdarts::op_params<S>& p, vpdarts::index batch);
///   template <vpdarts::Scalar S>
///   static vpdarts::var<S> post(const vpdarts::var<S>& y, const vpdarts::op_params<S>& p, vpdarts::index batch);
/// };
/// ```
///
/// Laws: pre's result has `batch` sequences of D columns (any length); post
/// returns exactly x's shape; both record on x's tape through vpdarts ops, so
/// gradients flow to every parameter. An unspecialised trait is detectable
/// (`is_fusion_op_v<Op>` is false) and using it fails with one static_assert.

#include <array>
#include <cmath>
#include <initializer_list>
#include <concepts>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../autodiff.hpp"
#include "../nn/init.hpp"
#include "../vit/config.hpp"

namespace vpdarts {

/// The fusion-operator trait. Specialise it in namespace vpdarts for your type;
/// the primary template marks "not a fusion operator".
template <class Op>
struct fusion_traits {
  /// Marks the primary template; a specialisation must not declare it.
  using not_specialised = void;
};

/// What an operator's parameters may depend on: the backbone's shape and the prompt count.
struct fusion_context {
  vit_config vit;   ///< the backbone
  index prompts = 8;  ///< p, the number of prompt tokens

  /// Token width D.
  index dim() const { return vit.dim; }
  /// Tokens per image without prompts, T = prefix + N.
  index tokens() const { return vit.tokens(); }
  /// VPT's uniform bound sqrt(6 / (C * patch^2 + D)).
  double vpt_bound() const {
    return std::sqrt(6.0 / static_cast<double>(vit.channels * vit.patch * vit.patch + vit.dim));
  }
};

/// How a fusion parameter starts.
struct param_init {
  /// The distribution.
  enum class kind {
    constant,  ///< every entry equals `a`
    uniform,   ///< U(-a, a)
    normal     ///< N(0, a^2)
  };
  kind k = kind::constant;  ///< Which distribution.
  double a = 0;             ///< the constant, the uniform bound, or the normal std

  /// All zeros.
  static param_init zeros() { return {kind::constant, 0}; }
  /// Every entry `v`.
  static param_init constant(double v) { return {kind::constant, v}; }
  /// U(-bound, bound).
  static param_init uniform(double bound) { return {kind::uniform, bound}; }
  /// N(0, std^2).
  static param_init normal(double std) { return {kind::normal, std}; }

  /// Fills `p` with values drawn from `rng`.
  template <Scalar S>
  void apply(parameter<S>& p, init::engine& rng) const {
    if (k == kind::constant) init::constant(p, static_cast<S>(a));
    if (k == kind::uniform) init::uniform(p, a, rng);
    if (k == kind::normal) init::normal(p, a, rng);
  }
};

/// One parameter of a fusion operator: its symbol (the last part of its
/// checkpoint name `fusion.{layer}.{op}.{symbol}`), shape and init.
struct param_spec {
  std::string symbol = {};                ///< Name within the operator, e.g. "prompts".
  index rows = 0;                         ///< Rows of the parameter matrix.
  index cols = 0;                         ///< Columns of the parameter matrix.
  param_init init = param_init::zeros();  ///< How it starts.
};

/// An operator's parameters on the current tape, looked up by symbol.
/// Fixed capacity (max_params), so building one per step allocates nothing.
template <Scalar S>
class op_params {
 public:
  static constexpr std::size_t max_params = 8;  ///< Capacity.
  /// One parameter: its symbol and its node on the tape.
  struct entry {
    std::string_view symbol;  ///< As in the operator's param_spec.
    var<S> value;             ///< The parameter's leaf on the current tape.
  };
  /// No parameters.
  op_params() = default;
  /// The given parameters. @throws config_error past max_params.
  op_params(std::initializer_list<entry> e) {
    for (const auto& x : e) push(x.symbol, x.value);
  }

  /// Adds a parameter. @throws config_error past max_params.
  void push(std::string_view symbol, const var<S>& value) {
    if (n_ == max_params)
      throw config_error(detail::cat("op_params: a fusion operator may have at most ", max_params, " parameters"));
    entries_[n_++] = {symbol, value};
  }

  /// The parameter of that symbol. @throws config_error naming the known symbols when absent.
  const var<S>& operator[](std::string_view symbol) const {
    for (std::size_t i = 0; i < n_; ++i)
      if (entries_[i].symbol == symbol) return entries_[i].value;
    std::string known;
    for (std::size_t i = 0; i < n_; ++i) known += (known.empty() ? "" : ", ") + std::string(entries_[i].symbol);
    throw config_error(detail::cat("op_params: no parameter '", symbol, "' (this operator has: ",
                                   known.empty() ? "none" : known, ")"));
  }
  /// Number of parameters held.
  std::size_t size() const noexcept { return n_; }
  /// Prefix tokens of every sequence (the class token and the registers):
  /// they come first, the patch tokens after them. 1 unless set.
  index prefix_tokens() const noexcept { return prefix_; }
  /// Sets prefix_tokens() (the search space does, from the backbone's configuration).
  void set_prefix_tokens(index n) noexcept { prefix_ = n; }

 private:
  std::array<entry, max_params> entries_{};
  std::size_t n_ = 0;
  index prefix_ = 1;
};

/// True when fusion_traits<Op> has been specialised.
template <class Op>
inline constexpr bool is_fusion_op_v = !requires { typename fusion_traits<Op>::not_specialised; };

/// A type whose fusion_traits specialisation has a name, params(context), and pre and post for float and double.
template <class Op>
concept FusionOp =
    is_fusion_op_v<Op> && requires(const fusion_context& c, const var<float>& xf, const op_params<float>& pf,
                                   const var<double>& xd, const op_params<double>& pd, index b) {
      { std::string_view(fusion_traits<Op>::name) };
      { fusion_traits<Op>::params(c) } -> std::convertible_to<std::vector<param_spec>>;
      { fusion_traits<Op>::pre(xf, pf, b) } -> std::same_as<var<float>>;
      { fusion_traits<Op>::post(xf, pf, b) } -> std::same_as<var<float>>;
      { fusion_traits<Op>::pre(xd, pd, b) } -> std::same_as<var<double>>;
      { fusion_traits<Op>::post(xd, pd, b) } -> std::same_as<var<double>>;
    };

namespace detail {

/// The one readable error for a type that is not a fusion operator.
template <class Op>
constexpr bool check_fusion_op() {
  static_assert(is_fusion_op_v<Op>,
                "vpdarts: this type is not a fusion operator. Specialise vpdarts::fusion_traits<YourOp> with "
                "`static constexpr std::string_view name`, `static std::vector<param_spec> params(const "
                "fusion_context&)`, and `template <Scalar S> static var<S> pre(const var<S>&, const op_params<S>&, "
                "index batch)` and `post(...)` of the same form (see vpdarts/fusion/traits.hpp).");
  static_assert(!is_fusion_op_v<Op> || FusionOp<Op>,
                "vpdarts: fusion_traits<YourOp> is specialised but incomplete: it needs `name`, `params(const "
                "fusion_context&)` returning std::vector<param_spec>, and templated `pre` and `post` taking "
                "(const var<S>&, const op_params<S>&, index batch) and returning var<S>.");
  return true;
}

}  // namespace detail

/// The trainable parameter count of one instance of Op in a given context.
template <class Op>
index fusion_param_count(const fusion_context& c) {
  static_assert(detail::check_fusion_op<Op>());
  index n = 0;
  for (const auto& s : fusion_traits<Op>::params(c)) n += s.rows * s.cols;
  return n;
}

}  // namespace vpdarts
