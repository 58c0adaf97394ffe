#pragma once
/// @file fwd.hpp
/// Forward declarations and the basic matrix types of vpdarts.
///
/// Layout convention. Every tensor on the tape is a dense row-major matrix.
/// A batch of B token sequences of T tokens and width D is stored as one
/// (B*T) x D matrix, image b occupying rows [b*T, (b+1)*T). With this layout
/// every linear layer of a transformer is a single GEMM over all tokens of
/// the batch; only the operations that need sequence boundaries (attention,
/// sequence-wise row insertion) take the batch size B as an argument.

#include <Eigen/Core>
#include <concepts>
#include <cstddef>
#include <cstdint>

namespace vpdarts {

/// The scalar types the tape supports: `float` for speed, `double` for gradient checks.
template <class S>
concept Scalar = std::same_as<S, float> || std::same_as<S, double>;

/// Row and column indices and sizes (Eigen's index type).
using index = Eigen::Index;

/// A dense row-major matrix: the storage of every tensor in vpdarts.
template <Scalar S>
using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A mutable view on row-major storage (what the tape hands out).
template <Scalar S>
using matrix_map = Eigen::Map<matrix<S>>;

/// A read-only view on row-major storage.
template <Scalar S>
using const_matrix_map = Eigen::Map<const matrix<S>>;

template <Scalar S>
class tape;
template <Scalar S>
class var;
template <Scalar S>
class parameter;

/// Which operand of a product is transposed.
enum class transpose : std::uint8_t { none, a, b, both };

}  // namespace vpdarts
