#pragma once
/// @file op_list.hpp
/// A compile-time list of fusion operators: the candidates of a MixedOp.

#include <array>
#include <boost/hana.hpp>
#include <string>
#include <string_view>

#include "builtin.hpp"
#include "traits.hpp"

namespace vpdarts {

/// A compile-time list of fusion operator types, in the column order of alpha.
template <class... Ops>
struct op_list {
  static_assert(sizeof...(Ops) > 0, "vpdarts: an op_list needs at least one fusion operator");
  static_assert((detail::check_fusion_op<Ops>() && ...));

  /// The operator types as a boost::hana tuple of types.
  static constexpr auto types = boost::hana::tuple_t<Ops...>;
  /// Number of operators K.
  static constexpr std::size_t size = sizeof...(Ops);
  /// The operators' names, in order.
  static constexpr std::array<std::string_view, size> names{fusion_traits<Ops>::name...};

  /// The position of an operator name. @throws config_error listing the known names.
  static std::size_t index_of(std::string_view name) {
    for (std::size_t i = 0; i < size; ++i)
      if (names[i] == name) return i;
    throw config_error(detail::cat("unknown fusion operator '", name, "' (known: ", detail::join(names), ")"));
  }

  /// Calls f(hana::type_c<Op>, hana::size_c<i>) for every operator, unrolled at compile time.
  template <class F>
  static void for_each(F&& f) {
    boost::hana::for_each(boost::hana::make_range(boost::hana::size_c<0>, boost::hana::size_c<size>), [&](auto i) {
      f(boost::hana::at(types, i), i);
    });
  }

  /// Calls f(hana::type_c<Op_k>) for the operator at run-time position k.
  template <class F>
  static void visit(std::size_t k, F&& f) {
    for_each([&](auto type, auto i) {
      if (k == decltype(i)::value) f(type);
    });
  }
};

/// The four built-in operators in docs/method.md's order (alpha's columns).
using default_ops = op_list<concat, add_prompt, affine, cross_attention>;

namespace detail {
template <class T>
struct is_op_list : std::false_type {};
template <class... Ops>
struct is_op_list<op_list<Ops...>> : std::true_type {};
}  // namespace detail

/// An op_list of fusion operators.
template <class L>
concept OpList = detail::is_op_list<L>::value;

}  // namespace vpdarts
