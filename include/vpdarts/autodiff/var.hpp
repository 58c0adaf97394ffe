#pragma once
/// @file var.hpp
/// The handle on a node of a tape (its member functions are defined in tape.hpp, after the tape).

#include <cstdint>

#include "../error.hpp"
#include "../fwd.hpp"

namespace vpdarts {

/// A handle on one node of a tape: cheap to copy, valid until the tape's next reset().
template <Scalar S>
class var {
 public:
  /// An empty handle; using it throws state_error.
  var() = default;

  /// Rows of the value. @throws state_error for a stale or empty handle (as every accessor).
  index rows() const { return node().rows; }
  /// Columns of the value.
  index cols() const { return node().cols; }
  /// rows() * cols().
  index size() const { return rows() * cols(); }
  /// True when some trainable parameter reaches this node.
  bool requires_grad() const { return node().requires_grad; }
  /// The value (a view into the tape's memory).
  matrix_map<S> value() const {
    auto& n = node();
    return matrix_map<S>(n.value, n.rows, n.cols);
  }
  /// The value of a 1x1 node. @throws shape_error otherwise.
  S item() const;
  /// The adjoint d loss / d this after backward(): always for a parameter's
  /// leaf (its gradient), for other nodes only when the tape retained adjoints
  /// (tape::retain_adjoints(true) before backward()).
  /// @throws state_error before backward, when no gradient is required, or when the adjoint was released.
  matrix_map<S> adjoint() const;
  /// The tape this node belongs to.
  tape<S>& owner() const {
    if (tape_ == nullptr) throw state_error("var::owner: variable is empty (default-constructed)");
    return *tape_;
  }
  /// The node's position on the tape.
  std::uint32_t id() const noexcept { return id_; }
  /// False for a default-constructed var.
  bool valid() const noexcept { return tape_ != nullptr; }

 private:
  friend class tape<S>;
  var(tape<S>* t, std::uint32_t id, std::uint32_t generation) : tape_(t), id_(id), generation_(generation) {}
  void check_valid(const char* fn) const;
  const auto& node() const;

  tape<S>* tape_ = nullptr;
  std::uint32_t id_ = 0;
  std::uint32_t generation_ = 0;
};

}  // namespace vpdarts
