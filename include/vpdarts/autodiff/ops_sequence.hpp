#pragma once
/// @file ops_sequence.hpp
/// Operations on a batch of token sequences in the tape's layout: B sequences
/// of T rows stacked as a (B*T) x D matrix. They insert rows into every
/// sequence (cls token, VPT prompts), remove rows from every sequence, and
/// pick one row of every sequence (the cls token).

#include "tape.hpp"

namespace vpdarts {
namespace detail {

inline index sequence_length(const char* fn, index rows, index cols, index batch) {
  if (batch <= 0 || rows % batch != 0)
    throw shape_error(cat(fn, ": input is ", shape_str(rows, cols), " but batch ", batch, " does not divide its ",
                          rows, " rows"));
  return rows / batch;
}

}  // namespace detail

/// Inserts the rows of `p` (P x D, shared by every sequence) into each of the
/// `batch` sequences of x ((B*T) x D) before position `at` (0 <= at <= T).
/// The result is (B*(T+P)) x D. Gradients flow to x and to p (summed over the batch).
/// @throws shape_error when the widths differ, batch does not divide the rows, or at is out of range.
template <Scalar S>
var<S> insert_rows(const var<S>& x, const var<S>& p, index batch, index at) {
  tape<S>& t = detail::same_tape("insert_rows", x, p);
  const index seq = detail::sequence_length("insert_rows", x.rows(), x.cols(), batch);
  const index d = x.cols(), np = p.rows();
  if (p.cols() != d)
    throw shape_error(detail::cat("insert_rows: input is ", detail::shape_str(x.rows(), d), " but the inserted rows are ",
                                  detail::shape_str(np, p.cols()), ": widths differ"));
  if (at < 0 || at > seq)
    throw shape_error(detail::cat("insert_rows: position ", at, " is outside sequences of ", seq, " rows"));
  const index out_seq = seq + np;
  var<S> out = t.make(batch * out_seq, d, x.requires_grad() || p.requires_grad());
  auto X = x.value();
  auto P = p.value();
  auto Y = out.value();
  for (index b = 0; b < batch; ++b) {
    const index o = b * out_seq, i = b * seq;
    if (at > 0) Y.middleRows(o, at) = X.middleRows(i, at);
    Y.middleRows(o + at, np) = P;
    if (seq - at > 0) Y.middleRows(o + at + np, seq - at) = X.middleRows(i + at, seq - at);
  }
  t.on_backward(out, [ix = x.id(), ip = p.id(), io = out.id(), batch, seq, np, at](tape<S>& tp) {
    auto G = tp.adjoint(io);
    const index out_seq = seq + np;
    const bool gx = tp.requires_grad(ix), gp = tp.requires_grad(ip);
    for (index b = 0; b < batch; ++b) {
      const index o = b * out_seq, i = b * seq;
      if (gx) {
        auto dX = tp.adjoint(ix);
        if (at > 0) dX.middleRows(i, at) += G.middleRows(o, at);
        if (seq - at > 0) dX.middleRows(i + at, seq - at) += G.middleRows(o + at + np, seq - at);
      }
      if (gp) tp.adjoint(ip) += G.middleRows(o + at, np);
    }
  });
  return out;
}

/// Removes rows [at, at + count) from each of the `batch` sequences of x.
/// @throws shape_error when batch does not divide the rows or the range leaves the sequence
/// (or would remove it whole).
template <Scalar S>
var<S> remove_rows(const var<S>& x, index batch, index at, index count) {
  tape<S>& t = detail::tape_of("remove_rows", x);
  const index seq = detail::sequence_length("remove_rows", x.rows(), x.cols(), batch);
  if (at < 0 || count < 0 || at + count > seq || count == seq)
    throw shape_error(detail::cat("remove_rows: rows [", at, ", ", at + count, ") of sequences of ", seq,
                                  " rows (input ", detail::shape_str(x.rows(), x.cols()), ", batch ", batch, ")"));
  const index out_seq = seq - count, d = x.cols();
  var<S> out = t.make(batch * out_seq, d, x.requires_grad());
  auto X = x.value();
  auto Y = out.value();
  for (index b = 0; b < batch; ++b) {
    if (at > 0) Y.middleRows(b * out_seq, at) = X.middleRows(b * seq, at);
    if (out_seq - at > 0) Y.middleRows(b * out_seq + at, out_seq - at) = X.middleRows(b * seq + at + count, out_seq - at);
  }
  t.on_backward(out, [ix = x.id(), io = out.id(), batch, seq, at, count](tape<S>& tp) {
    auto G = tp.adjoint(io);
    auto dX = tp.adjoint(ix);
    const index out_seq = seq - count;
    for (index b = 0; b < batch; ++b) {
      if (at > 0) dX.middleRows(b * seq, at) += G.middleRows(b * out_seq, at);
      if (out_seq - at > 0) dX.middleRows(b * seq + at + count, out_seq - at) += G.middleRows(b * out_seq + at, out_seq - at);
    }
  });
  return out;
}

/// Row `r` of each of the `batch` sequences of x: a B x D result (the cls tokens for r = 0).
/// @throws shape_error when batch does not divide the rows or r is out of range.
template <Scalar S>
var<S> sequence_row(const var<S>& x, index batch, index r) {
  tape<S>& t = detail::tape_of("sequence_row", x);
  const index seq = detail::sequence_length("sequence_row", x.rows(), x.cols(), batch);
  if (r < 0 || r >= seq)
    throw shape_error(detail::cat("sequence_row: row ", r, " is outside sequences of ", seq, " rows"));
  var<S> out = t.make(batch, x.cols(), x.requires_grad());
  for (index b = 0; b < batch; ++b) out.value().row(b) = x.value().row(b * seq + r);
  t.on_backward(out, [ix = x.id(), io = out.id(), batch, seq, r](tape<S>& tp) {
    auto G = tp.adjoint(io);
    auto dX = tp.adjoint(ix);
    for (index b = 0; b < batch; ++b) dX.row(b * seq + r) += G.row(b);
  });
  return out;
}

/// The mean of rows [first, T) of each of the `batch` sequences of x ((B*T) x D):
/// B x D (timm's average pooling of the non-prefix tokens).
/// @throws shape_error when batch does not divide the rows or no row is left to average.
template <Scalar S>
var<S> sequence_mean(const var<S>& x, index batch, index first) {
  tape<S>& t = detail::tape_of("sequence_mean", x);
  const index seq = detail::sequence_length("sequence_mean", x.rows(), x.cols(), batch);
  if (first < 0 || first >= seq)
    throw shape_error(detail::cat("sequence_mean: rows from ", first, " leave nothing to average in sequences of ", seq, " rows"));
  const index n = seq - first;
  var<S> out = t.make(batch, x.cols(), x.requires_grad());
  for (index b = 0; b < batch; ++b)
    out.value().row(b) = x.value().middleRows(b * seq + first, n).colwise().sum() / static_cast<S>(n);
  t.on_backward(out, [ix = x.id(), io = out.id(), batch, seq, first, n](tape<S>& tp) {
    auto G = tp.adjoint(io);
    auto dX = tp.adjoint(ix);
    for (index b = 0; b < batch; ++b) dX.middleRows(b * seq + first, n).rowwise() += G.row(b) / static_cast<S>(n);
  });
  return out;
}

}  // namespace vpdarts
