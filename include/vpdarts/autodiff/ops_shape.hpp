#pragma once
/// @file ops_shape.hpp
/// Row-wise shape operations: concatenation, slicing and gathering of rows.

#include <span>

#include "tape.hpp"

namespace vpdarts {

/// Stacks the operands' rows, in order. @throws shape_error for no operands or differing column counts.
template <Scalar S>
var<S> concat_rows(std::span<const var<S>> xs) {
  if (xs.empty()) throw shape_error("concat_rows: no operands");
  tape<S>& t = detail::tape_of("concat_rows", xs[0]);
  index rows = 0;
  bool rg = false;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    t.check(xs[i], "concat_rows");
    if (xs[i].cols() != xs[0].cols())
      throw shape_error(detail::cat("concat_rows: operand ", i, " is ", detail::shape_str(xs[i].rows(), xs[i].cols()),
                                    " but operand 0 is ", detail::shape_str(xs[0].rows(), xs[0].cols()),
                                    ": column counts differ"));
    rows += xs[i].rows();
    rg = rg || xs[i].requires_grad();
  }
  var<S> out = t.make(rows, xs[0].cols(), rg);
  const std::size_t k = xs.size();
  std::uint32_t* ids = t.template scratch<std::uint32_t>(k);
  index r = 0;
  for (std::size_t i = 0; i < k; ++i) {
    out.value().middleRows(r, xs[i].rows()) = xs[i].value();
    r += xs[i].rows();
    ids[i] = xs[i].id();
  }
  t.on_backward(out, [ids, k, io = out.id()](tape<S>& x) {
    auto G = x.adjoint(io);
    index r = 0;
    for (std::size_t i = 0; i < k; ++i) {
      const index n = x.at(ids[i]).rows;
      if (x.requires_grad(ids[i])) x.adjoint(ids[i]) += G.middleRows(r, n);
      r += n;
    }
  });
  return out;
}

/// concat_rows over an initializer list.
template <Scalar S>
var<S> concat_rows(std::initializer_list<var<S>> xs) {
  return concat_rows(std::span<const var<S>>(xs.begin(), xs.size()));
}

/// Rows [begin, begin + count) of a. @throws shape_error when the range is empty or leaves a.
template <Scalar S>
var<S> slice_rows(const var<S>& a, index begin, index count) {
  tape<S>& t = detail::tape_of("slice_rows", a);
  if (begin < 0 || count <= 0 || begin + count > a.rows())
    throw shape_error(detail::cat("slice_rows: rows [", begin, ", ", begin + count, ") of a ",
                                  detail::shape_str(a.rows(), a.cols()), " operand"));
  var<S> out = t.make(count, a.cols(), a.requires_grad());
  out.value() = a.value().middleRows(begin, count);
  t.on_backward(out, [ia = a.id(), io = out.id(), begin, count](tape<S>& x) {
    x.adjoint(ia).middleRows(begin, count) += x.adjoint(io);
  });
  return out;
}

/// The rows of a listed in `rows` (repeats allowed): out.row(i) = a.row(rows[i]).
/// @throws shape_error when the list is empty or an index is out of range.
template <Scalar S>
var<S> gather_rows(const var<S>& a, std::span<const index> rows) {
  tape<S>& t = detail::tape_of("gather_rows", a);
  if (rows.empty()) throw shape_error("gather_rows: no row indices");
  const std::size_t n = rows.size();
  index* saved = t.template scratch<index>(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (rows[i] < 0 || rows[i] >= a.rows())
      throw shape_error(detail::cat("gather_rows: index ", i, " is ", rows[i], ", out of range for a ",
                                    detail::shape_str(a.rows(), a.cols()), " operand"));
    saved[i] = rows[i];
  }
  var<S> out = t.make(static_cast<index>(n), a.cols(), a.requires_grad());
  for (std::size_t i = 0; i < n; ++i) out.value().row(static_cast<index>(i)) = a.value().row(saved[i]);
  t.on_backward(out, [ia = a.id(), io = out.id(), saved, n](tape<S>& x) {
    auto G = x.adjoint(io);
    auto dA = x.adjoint(ia);
    for (std::size_t i = 0; i < n; ++i) dA.row(saved[i]) += G.row(static_cast<index>(i));
  });
  return out;
}

}  // namespace vpdarts
