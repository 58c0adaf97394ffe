#pragma once
/// @file ops_elementwise.hpp
/// Element-wise operations with broadcasting, and unary functions.
///
/// Broadcasting rule (binary ops): the output has max(rows) x max(cols) of the
/// operands; an operand's rows must divide the output rows (its rows repeat,
/// so a T x D tensor adds to every image of a (B*T) x D batch and a 1 x D row
/// to every row) and its cols must equal the output cols or be 1.

#include <algorithm>
#include <cmath>

#include "../detail/parallel.hpp"
#include "../kernels/eigen.hpp"
#include "tape.hpp"

namespace vpdarts {
namespace detail {

struct broadcast_shape {
  index rows, cols;
};

inline broadcast_shape broadcast(const char* fn, index ra, index ca, index rb, index cb) {
  const index r = std::max(ra, rb), c = std::max(ca, cb);
  const bool ok = r % ra == 0 && r % rb == 0 && (ca == c || ca == 1) && (cb == c || cb == 1);
  if (!ok)
    throw shape_error(cat(fn, ": a is ", shape_str(ra, ca), " and b is ", shape_str(rb, cb),
                          ": cannot broadcast (rows must divide the larger rows, cols must match or be 1)"));
  return {r, c};
}

// Calls f(out_offset, a_offset, b_offset) for every element of the broadcast output.
template <class F>
void for_each_broadcast(index r, index c, index ra, index ca, index rb, index cb, F&& f) {
  for (index i = 0; i < r; ++i) {
    const index oa = (i % ra) * ca, ob = (i % rb) * cb, oo = i * c;
    if (ca == c && cb == c) {
      for (index j = 0; j < c; ++j) f(oo + j, oa + j, ob + j);
    } else {
      for (index j = 0; j < c; ++j) f(oo + j, oa + (ca == 1 ? 0 : j), ob + (cb == 1 ? 0 : j));
    }
  }
}

enum class binary_kind { add, sub, mul };

template <binary_kind K, Scalar S>
var<S> binary(const char* fn, const var<S>& a, const var<S>& b) {
  tape<S>& t = same_tape(fn, a, b);
  const auto [r, c] = broadcast(fn, a.rows(), a.cols(), b.rows(), b.cols());
  var<S> out = t.make(r, c, a.requires_grad() || b.requires_grad());
  const S* pa = a.value().data();
  const S* pb = b.value().data();
  S* po = out.value().data();
  if (a.rows() == r && b.rows() == r && a.cols() == c && b.cols() == c) {
    parallel_chunks(r * c, index{1} << 14, [&](index at, index m) {
      using array = Eigen::Array<S, Eigen::Dynamic, 1>;
      const Eigen::Map<const array> A(pa + at, m), B(pb + at, m);
      Eigen::Map<array> O(po + at, m);
      if constexpr (K == binary_kind::add) O = A + B;
      if constexpr (K == binary_kind::sub) O = A - B;
      if constexpr (K == binary_kind::mul) O = A * B;
    });
  } else {
    for_each_broadcast(r, c, a.rows(), a.cols(), b.rows(), b.cols(), [&](index o, index ia, index ib) {
      if constexpr (K == binary_kind::add) po[o] = pa[ia] + pb[ib];
      if constexpr (K == binary_kind::sub) po[o] = pa[ia] - pb[ib];
      if constexpr (K == binary_kind::mul) po[o] = pa[ia] * pb[ib];
    });
  }
  t.on_backward(out, [ia = a.id(), ib = b.id(), io = out.id()](tape<S>& tp) {
    const auto& na = tp.at(ia);
    const auto& nb = tp.at(ib);
    const auto& no = tp.at(io);
    const S* g = tp.adjoint(io).data();
    S* ga = na.requires_grad ? tp.adjoint(ia).data() : nullptr;
    S* gb = nb.requires_grad ? tp.adjoint(ib).data() : nullptr;
    if (na.rows == no.rows && nb.rows == no.rows && na.cols == no.cols && nb.cols == no.cols) {
      parallel_chunks(no.rows * no.cols, index{1} << 14, [&](index at, index m) {
        for (index o = at; o < at + m; ++o) {
          if constexpr (K == binary_kind::mul) {
            if (ga) ga[o] += g[o] * nb.value[o];
            if (gb) gb[o] += g[o] * na.value[o];
          } else {
            if (ga) ga[o] += g[o];
            if (gb) gb[o] += (K == binary_kind::sub ? -g[o] : g[o]);
          }
        }
      });
      return;
    }
    for_each_broadcast(no.rows, no.cols, na.rows, na.cols, nb.rows, nb.cols, [&](index o, index xa, index xb) {
      if constexpr (K == binary_kind::mul) {
        if (ga) ga[xa] += g[o] * nb.value[xb];
        if (gb) gb[xb] += g[o] * na.value[xa];
      } else {
        if (ga) ga[xa] += g[o];
        if (gb) gb[xb] += (K == binary_kind::sub ? -g[o] : g[o]);
      }
    });
  });
  return out;
}

// y = f(x) element-wise; dfdx(x, y) is the derivative, from the input or the output.
template <Scalar S, class F, class D>
var<S> unary(const char* fn, const var<S>& a, F f, D dfdx) {
  tape<S>& t = tape_of(fn, a);
  var<S> out = t.make(a.rows(), a.cols(), a.requires_grad());
  const S* x = a.value().data();
  S* y = out.value().data();
  for (index i = 0, n = a.size(); i < n; ++i) y[i] = f(x[i]);
  t.on_backward(out, [ia = a.id(), io = out.id(), dfdx](tape<S>& tp) {
    const auto& na = tp.at(ia);
    const auto& no = tp.at(io);
    S* ga = tp.adjoint(ia).data();
    const S* g = tp.adjoint(io).data();
    for (index i = 0, n = no.rows * no.cols; i < n; ++i) ga[i] += g[i] * dfdx(na.value[i], no.value[i]);
  });
  return out;
}

}  // namespace detail

/// a + b with broadcasting (see the file comment). @throws shape_error when the shapes do not broadcast.
template <Scalar S>
var<S> add(const var<S>& a, const var<S>& b) {
  return detail::binary<detail::binary_kind::add>("add", a, b);
}
/// a - b with broadcasting. @throws shape_error when the shapes do not broadcast.
template <Scalar S>
var<S> sub(const var<S>& a, const var<S>& b) {
  return detail::binary<detail::binary_kind::sub>("sub", a, b);
}
/// a * b element-wise, with broadcasting. @throws shape_error when the shapes do not broadcast.
template <Scalar S>
var<S> mul(const var<S>& a, const var<S>& b) {
  return detail::binary<detail::binary_kind::mul>("mul", a, b);
}

/// s * a for a constant s.
template <Scalar S>
var<S> scale(const var<S>& a, S s) {
  return detail::unary("scale", a, [s](S x) { return s * x; }, [s](S, S) { return s; });
}

/// a + s for a constant s.
template <Scalar S>
var<S> add_scalar(const var<S>& a, S s) {
  return detail::unary("add_scalar", a, [s](S x) { return x + s; }, [](S, S) { return S(1); });
}

/// exp(a) element-wise.
template <Scalar S>
var<S> exp(const var<S>& a) {
  return detail::unary("exp", a, [](S x) { return std::exp(x); }, [](S, S y) { return y; });
}

/// log(a) element-wise. @throws value_error when an element is not positive (the result would be NaN or -inf).
template <Scalar S>
var<S> log(const var<S>& a) {
  detail::tape_of("log", a);
  const auto v = a.value();
  for (index i = 0; i < v.size(); ++i)
    if (!(v.data()[i] > S(0)))
      throw value_error(detail::cat("log: element ", i / v.cols(), ",", i % v.cols(), " of a ",
                                    detail::shape_str(v.rows(), v.cols()), " operand is ", v.data()[i],
                                    ", not positive"));
  return detail::unary("log", a, [](S x) { return std::log(x); }, [](S x, S) { return S(1) / x; });
}

/// tanh(a) element-wise.
template <Scalar S>
var<S> tanh(const var<S>& a) {
  return detail::unary("tanh", a, [](S x) { return std::tanh(x); }, [](S, S y) { return S(1) - y * y; });
}

/// QuickGELU (OpenAI CLIP's activation): x sigmoid(1.702 x), element-wise, vectorised and threaded as gelu.
template <Scalar S>
var<S> quick_gelu(const var<S>& a) {
  tape<S>& t = detail::tape_of("quick_gelu", a);
  var<S> out = t.make(a.rows(), a.cols(), a.requires_grad());
  kernels::eigen::activation_forward(activation::quick_gelu, a.value().data(), out.value().data(), a.size());
  t.on_backward(out, [ia = a.id(), io = out.id()](tape<S>& tp) {
    kernels::eigen::activation_backward(activation::quick_gelu, tp.value(ia).data(), tp.adjoint(io).data(), tp.adjoint(ia).data(),
                                        tp.value(ia).size());
  });
  return out;
}

/// The exact (erf) GELU: 0.5 x (1 + erf(x / sqrt 2)), element-wise. Vectorised
/// through Eigen's erf (a rational approximation accurate to a few ulp in float)
/// and split over OpenMP threads in fixed-size chunks of the flat values.
template <Scalar S>
var<S> gelu(const var<S>& a) {
  tape<S>& t = detail::tape_of("gelu", a);
  var<S> out = t.make(a.rows(), a.cols(), a.requires_grad());
  kernels::eigen::activation_forward(activation::gelu, a.value().data(), out.value().data(), a.size());
  t.on_backward(out, [ia = a.id(), io = out.id()](tape<S>& tp) {
    kernels::eigen::activation_backward(activation::gelu, tp.value(ia).data(), tp.adjoint(io).data(), tp.adjoint(ia).data(),
                                        tp.value(ia).size());
  });
  return out;
}

/// add(a, b). Same shapes and errors as the named op.
template <Scalar S>
var<S> operator+(const var<S>& a, const var<S>& b) {
  return add(a, b);
}
/// sub(a, b). Same shapes and errors as the named op.
template <Scalar S>
var<S> operator-(const var<S>& a, const var<S>& b) {
  return sub(a, b);
}
/// mul(a, b), element-wise. Same shapes and errors as the named op.
template <Scalar S>
var<S> operator*(const var<S>& a, const var<S>& b) {
  return mul(a, b);
}
/// scale(a, s). Same shapes and errors as the named op.
template <Scalar S>
var<S> operator*(const var<S>& a, S s) {
  return scale(a, s);
}
/// scale(a, s). Same shapes and errors as the named op.
template <Scalar S>
var<S> operator*(S s, const var<S>& a) {
  return scale(a, s);
}
/// scale(a, -1). Same shapes and errors as the named op.
template <Scalar S>
var<S> operator-(const var<S>& a) {
  return scale(a, S(-1));
}

}  // namespace vpdarts
