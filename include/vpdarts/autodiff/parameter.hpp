#pragma once
/// @file parameter.hpp
/// A named, owned tensor that the tape reads without copying and into whose
/// gradient backward() accumulates.

#include <concepts>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../fwd.hpp"
#include "../detail/bf16.hpp"
#include "../detail/format.hpp"

namespace vpdarts {

/// A named parameter: a value matrix, a gradient matrix of the same shape and
/// a `requires_grad` flag.
///
/// A frozen parameter (requires_grad false) holds no gradient storage and
/// receives no gradient work: nodes of the tape that only frozen parameters
/// and constants reach get no adjoint and no backward step. Gradients
/// accumulate across backward() calls until zero_grad().
template <Scalar S>
class parameter {
 public:
  parameter() = default;

  /// A zero-filled parameter of shape rows x cols. @throws shape_error for a negative size.
  parameter(std::string name, index rows, index cols, bool requires_grad = true)
      : name_(std::move(name)) {
    if (rows < 0 || cols < 0)
      throw shape_error(detail::cat("parameter: '", name_, "' cannot have shape ", detail::shape_str(rows, cols)));
    value_ = matrix<S>::Zero(rows, cols);
    set_requires_grad(requires_grad);
  }

  /// A parameter holding `value`.
  parameter(std::string name, matrix<S> value, bool requires_grad = true)
      : name_(std::move(name)), value_(std::move(value)) {
    set_requires_grad(requires_grad);
  }

  /// The parameter's name (timm-style, e.g. `blocks.0.attn.qkv.weight`).
  const std::string& name() const noexcept { return name_; }
  /// The value, for writing. Resizing it is allowed only when no tape refers to it.
  /// Taking it marks the parameter changed (version() moves), so copies derived
  /// from the value (the bf16 copy of a frozen weight) are rebuilt at their next
  /// use; read through the const overload to leave them be. A change made later
  /// through a reference kept from before is not seen: take value() again.
  matrix<S>& value() noexcept {
    ++version_;
    return value_;
  }
  /// The value, read-only.
  const matrix<S>& value() const noexcept { return value_; }
  /// A counter that moves each time value() is taken for writing.
  std::uint64_t version() const noexcept { return version_; }

  /// The value rounded to bf16 (row-major, rows() x cols()), made at the first
  /// call and again only after value() was taken for writing. float only.
  const std::uint16_t* bf16_value() const
    requires std::same_as<S, float>
  {
    return bf16_.get(value_.data(), static_cast<std::size_t>(value_.size()), version_);
  }
  /// The value in a layout of `bytes` bytes known by `key` (for a matrix unit's blocked weight
  /// layout), made by `make(dst)` at the first call and again only after value() was taken for
  /// writing. float only.
  template <class Make>
  const std::byte* bf16_laid_out(const std::byte* key, std::size_t key_size, std::size_t bytes, Make&& make) const
    requires std::same_as<S, float>
  {
    return bf16_.laid_out(value_.data(), static_cast<std::size_t>(value_.size()), version_, key, key_size, bytes,
                          std::forward<Make>(make));
  }

  /// A handle on the bf16 copies above, for a product's kernel to read. float only.
  detail::bf16_copies bf16_copies() const
    requires std::same_as<S, float>
  {
    return {&bf16_, value_.data(), static_cast<std::size_t>(value_.size()), version_};
  }

  /// The logical tensor shape used in checkpoints (timm's, e.g. {1, 1, D} for
  /// `cls_token`); {rows, cols} unless set. Its product always equals size().
  std::vector<index> shape() const {
    if (!shape_.empty()) return shape_;
    return {rows(), cols()};
  }
  /// Sets the logical shape. @throws shape_error when its product differs from size().
  void set_shape(std::vector<index> shape) {
    index n = 1;
    for (index d : shape) n *= d;
    if (n != size() || shape.empty())
      throw shape_error(detail::cat("parameter::set_shape: '", name_, "' holds ", size(), " values (",
                                    detail::shape_str(rows(), cols()), "), which a shape of ", shape.size(),
                                    " dimensions with ", n, " values cannot describe"));
    shape_ = std::move(shape);
  }

  /// Rows of the value matrix.
  index rows() const noexcept { return value_.rows(); }
  /// Columns of the value matrix.
  index cols() const noexcept { return value_.cols(); }
  /// Number of values.
  index size() const noexcept { return value_.size(); }

  /// True when the parameter is trainable (has a gradient).
  bool requires_grad() const noexcept { return requires_grad_; }

  /// Makes the parameter trainable or frozen (dropping its gradient). A trainable parameter's
  /// gradient is made, zero, at its first use (grad(), a tape leaf that tracks it), so a model
  /// built trainable and then frozen never holds a second copy of its weights.
  void set_requires_grad(bool on) {
    requires_grad_ = on;
    if (!on || grad_.rows() != value_.rows() || grad_.cols() != value_.cols()) grad_ = matrix<S>();
  }
  /// Shorthand for set_requires_grad(false).
  void freeze() { set_requires_grad(false); }
  /// Shorthand for set_requires_grad(true).
  void unfreeze() { set_requires_grad(true); }

  /// The accumulated gradient. @throws state_error when the parameter is frozen.
  matrix<S>& grad() { return trainable_grad(); }
  /// The accumulated gradient, read-only. @throws state_error when the parameter is frozen.
  const matrix<S>& grad() const { return trainable_grad(); }

  /// Sets the gradient to zero (no-op for a frozen parameter, or one whose gradient is not made yet).
  void zero_grad() noexcept {
    if (requires_grad_) grad_.setZero();
  }
  /// True when the gradient's storage exists (it is made at the first use of grad()).
  bool has_grad_storage() const noexcept { return grad_.size() > 0; }

 private:
  // The gradient, made (zero) at the first use.
  matrix<S>& trainable_grad() const {
    if (!requires_grad_)
      throw state_error(detail::cat("parameter::grad: '", name_, "' (", detail::shape_str(rows(), cols()),
                                    ") is frozen and has no gradient"));
    if (grad_.size() == 0) grad_ = matrix<S>::Zero(rows(), cols());
    if (grad_.rows() != value_.rows() || grad_.cols() != value_.cols())
      throw state_error(detail::cat("parameter::grad: '", name_, "' was resized to ",
                                    detail::shape_str(rows(), cols()), " after its gradient was made; call "
                                    "set_requires_grad(true) again"));
    return grad_;
  }

  std::string name_;
  std::vector<index> shape_;
  matrix<S> value_;
  mutable matrix<S> grad_;  // made at the first use (trainable_grad)
  bool requires_grad_ = false;
  std::uint64_t version_ = 0;
  mutable detail::bf16_cache bf16_;
};

/// Keeps the values of some parameters and puts them back: on restore(), and when it
/// goes out of scope (whatever happens in between, an exception included).
template <Scalar S>
class values_kept {
 public:
  explicit values_kept(std::vector<parameter<S>*> params) : params_(std::move(params)) {
    for (parameter<S>* p : params_) values_.push_back(p->value());
  }
  values_kept(const values_kept&) = delete;
  values_kept& operator=(const values_kept&) = delete;
  ~values_kept() { restore(); }
  /// Every parameter back to its kept value.
  void restore() {
    for (std::size_t i = 0; i < params_.size(); ++i) params_[i]->value() = values_[i];
  }

 private:
  std::vector<parameter<S>*> params_;
  std::vector<matrix<S>> values_;
};

}  // namespace vpdarts
