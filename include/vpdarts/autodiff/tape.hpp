#pragma once
/// @file tape.hpp
/// The reverse-mode tape: nodes with a value, an adjoint and a backward step.
///
/// A node's value lives in the tape's arena (parameters are read in place and
/// their gradient is accumulated in place). backward(loss) sweeps the nodes in
/// reverse order. A node's adjoint is allocated from a block pool when the
/// first gradient reaches it and goes back to the pool as soon as its backward
/// step has run (unless retain_adjoints(true)), so at any moment only the
/// adjoints between the sweep and their consumers exist; a node no gradient
/// reaches costs nothing. reset() forgets every node but keeps the memory, so
/// a training loop that records the same graph each step allocates nothing
/// once warm. Nodes that no trainable parameter reaches have
/// `requires_grad() == false`: they get no adjoint and no backward step.
///
/// Writing an op (the pattern every vpdarts op follows): check the shapes and
/// throw shape_error naming the function and both shapes; create the output
/// with `tape::make(rows, cols, requires_grad)`; compute its value; if the
/// output requires a gradient, register a backward step with
/// `tape::on_backward(out, lambda)` whose lambda captures node ids (not
/// matrices) and adds into the adjoints of the inputs that require one.

#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../detail/format.hpp"
#include "../detail/inline_function.hpp"
#include "../detail/parallel.hpp"
#include "../error.hpp"
#include "../fwd.hpp"
#include "../detail/arena.hpp"
#include "../kernels/backend.hpp"
#include "parameter.hpp"
#include "var.hpp"

namespace vpdarts {

/// The reverse-mode tape. One tape per thread; not copyable or movable
/// (variables point at it).
template <Scalar S>
class tape {
 public:
  /// A backward step: captures node ids, reads the tape, adds into adjoints.
  using backward_step = detail::inline_function<tape&, 96>;

  /// One recorded operation.
  struct node {
    S* value = nullptr;             ///< rows x cols, row-major, in the arena or a parameter.
    S* adjoint = nullptr;           ///< Same shape; null until a gradient reaches the node during backward.
    index rows = 0;                 ///< Rows.
    index cols = 0;                 ///< Columns.
    bool requires_grad = false;     ///< Some trainable parameter reaches this node.
    bool external_adjoint = false;  ///< The adjoint is a parameter's gradient, not pool memory.
    bool released = false;          ///< backward() has run its step and released the adjoint.
    const parameter<S>* source = nullptr;  ///< The parameter a leaf reads, else null.
    backward_step back;             ///< Empty for leaves and constants.
  };

  /// A tape whose kernels run as `config` says (kernels/execution.hpp; the default: float32).
  /// @param first_chunk_bytes the arena's first chunk (it grows as needed and keeps its size).
  /// @throws config_error for a configuration this build or CPU cannot run (bf16 without AMX or AVX512-BF16, ...).
  explicit tape(const execution_config& config = {}, std::size_t first_chunk_bytes = std::size_t{1} << 20)
      : arena_(first_chunk_bytes) {
    configure(config);
    nodes_.reserve(256);
  }
  tape(const tape&) = delete;
  tape& operator=(const tape&) = delete;

  /// A leaf that reads `p` in place. When p requires a gradient, recording is
  /// on and `track` is true, backward() accumulates d loss / d p into p.grad();
  /// with `track` false the parameter is a constant for this tape (no gradient
  /// work, its gradient memory untouched): how a bi-level step leaves one group alone.
  var<S> leaf(parameter<S>& p, bool track = true) {
    const bool rg = grad_enabled_ && track && p.requires_grad();
    node n;
    n.value = const_cast<S*>(std::as_const(p).value().data());  // reading does not change the parameter's version
    n.source = &p;
    n.rows = p.rows();
    n.cols = p.cols();
    n.requires_grad = rg;
    if (rg) {
      n.adjoint = p.grad().data();
      n.external_adjoint = true;
    }
    return push(n);
  }

  /// A constant copied onto the tape. @throws shape_error when m is empty.
  var<S> constant(const Eigen::Ref<const matrix<S>>& m) {
    if (m.size() == 0) throw shape_error(detail::cat("tape::constant: matrix is empty (", detail::shape_str(m.rows(), m.cols()), ")"));
    var<S> v = make(m.rows(), m.cols(), false);
    v.value() = m;
    return v;
  }
  /// A constant filled with `fill`.
  var<S> constant(index rows, index cols, S fill) {
    var<S> v = make(rows, cols, false);
    v.value().setConstant(fill);
    return v;
  }
  /// An uninitialised constant for the caller to fill through value() (no copy of a source matrix).
  var<S> input(index rows, index cols) { return make(rows, cols, false); }

  /// Sweeps the tape backwards from a 1x1 loss, accumulating into the
  /// gradients of the trainable parameters that were used.
  /// @throws shape_error unless loss is 1x1; state_error for a variable of another
  /// tape or from before reset(), for a loss that no trainable parameter
  /// reaches, or for a second backward() without reset().
  void backward(const var<S>& loss) {
    check(loss, "tape::backward");
    if (loss.rows() != 1 || loss.cols() != 1)
      throw shape_error(detail::cat("tape::backward: loss is ", detail::shape_str(loss.rows(), loss.cols()),
                                    ", expected a 1x1 scalar"));
    if (!loss.requires_grad())
      throw state_error("tape::backward: the loss does not depend on any parameter that requires a gradient "
                        "(all frozen, or recorded under no_grad)");
    if (backward_done_)
      throw state_error("tape::backward: backward() was already called on this tape; call reset() and record again");
    backward_done_ = true;
    const std::uint32_t last = loss.id();
    adjoint(last)(0, 0) += S(1);
    for (std::uint32_t i = last + 1; i-- > 0;) {
      node& n = nodes_[i];
      if (!n.requires_grad || n.adjoint == nullptr) continue;  // no gradient reached it: nothing to do
      if (n.back) n.back(*this);
      if (!n.external_adjoint && !retain_adjoints_) {
        adjoints_.release(n.adjoint, static_cast<std::size_t>(n.rows * n.cols));
        n.adjoint = nullptr;
        n.released = true;
      }
    }
  }

  /// How this tape runs its kernels.
  const execution_config& config() const noexcept { return config_; }
  /// Sets it, for the nodes recorded from now on. @throws config_error as the constructor does.
  void configure(const execution_config& config) {
    config.check("tape::configure");
    config_ = config;  // block_tape() hands its own tape this one's configuration
  }
  /// The kernels of this tape's configuration, borrowing working memory from its pool and counting
  /// their products' multiply-adds into this tape's count.
  kernels::backend<S> backend() const noexcept { return kernels::backend<S>(config_, *temps_, macs_); }

  /// Multiply-adds of the matrix products run since the last reset(): linear layers, matmul,
  /// attention's two products per (image, head); backward's products are not counted, the forward
  /// products a backward step recomputes are. A block tape counts into its parent's.
  std::uint64_t multiply_adds() const noexcept { return *macs_; }
  /// Adds n to multiply_adds() (an op's products).
  void count_multiply_adds(std::uint64_t n) const noexcept { *macs_ += n; }

  /// Keep every node's adjoint after backward() (for reading var::adjoint() of
  /// intermediate nodes; costs the memory of all adjoints at once). Default off:
  /// an adjoint is released as soon as its node's backward step has run.
  void retain_adjoints(bool on) noexcept { retain_adjoints_ = on; }
  /// Whether adjoints are retained.
  bool retains_adjoints() const noexcept { return retain_adjoints_; }

  /// Forgets every node (their vars become invalid) and keeps the memory.
  void reset() {
    nodes_.clear();
    arena_.reset();
    adjoints_.release_all();
    if (temps_ == &own_temps_) own_temps_.release_all();  // a block tape's borrowed memory is its parent's
    if (macs_ == &own_macs_) own_macs_ = 0;              // as is its count
    ++generation_;
    backward_done_ = false;
  }

  /// False inside a no_grad scope: nothing is recorded for backward.
  bool grad_enabled() const noexcept { return grad_enabled_; }
  /// Turns recording on or off (prefer the no_grad scope).
  void set_grad_enabled(bool on) noexcept { grad_enabled_ = on; }

  /// Number of nodes recorded since the last reset.
  std::size_t size() const noexcept { return nodes_.size(); }
  /// The arena of values and saved intermediates (for memory statistics).
  const arena& memory() const noexcept { return arena_; }
  /// The pool of adjoints (for memory statistics).
  const block_pool<S>& adjoint_memory() const noexcept { return adjoints_; }
  /// The pool of ops' working buffers (for memory statistics; a block tape shares its parent's).
  const block_pool<S>& temp_memory() const noexcept { return *temps_; }
  /// Bumped by every reset(); variables of an older generation are invalid.
  std::uint32_t generation() const noexcept { return generation_; }

  /// A second tape owned by this one, recording off, for a forward pass with
  /// no gradient that drops each transformer block's values once the next
  /// block has its input (vit::features under no_grad): run block l on it
  /// after reset(), copy the output out, and only one block's values are ever
  /// held. It borrows working memory from this tape's pool. Created on first use.
  tape& block_tape() {
    if (!block_tape_) {
      block_tape_ = std::make_unique<tape>(config_);
      block_tape_->temps_ = temps_;
      block_tape_->macs_ = macs_;
    }
    block_tape_->config_ = config_;
    block_tape_->set_grad_enabled(false);
    return *block_tape_;
  }

  // ---- the op-author interface -------------------------------------------

  /// A new node with uninitialised value storage. `requires_grad` is ignored (false) under no_grad.
  /// @throws shape_error for an empty or negative shape.
  var<S> make(index rows, index cols, bool requires_grad) {
    if (rows <= 0 || cols <= 0)
      throw shape_error(detail::cat("tape::make: cannot create a ", detail::shape_str(rows, cols), " node"));
    node n;
    n.value = arena_.allocate<S>(static_cast<std::size_t>(rows * cols));
    n.rows = rows;
    n.cols = cols;
    n.requires_grad = requires_grad && grad_enabled_;
    return push(n);
  }

  /// Registers the backward step of `out` (only when out requires a gradient).
  template <class F>
  void on_backward(const var<S>& out, F step) {
    node& n = nodes_[out.id()];
    if (n.requires_grad) n.back = backward_step(step);
  }

  /// The value of node `id`.
  matrix_map<S> value(std::uint32_t id) {
    node& n = nodes_[id];
    return matrix_map<S>(n.value, n.rows, n.cols);
  }
  /// The adjoint of node `id`, for a backward step to read (its own output's)
  /// or add into (its inputs'). Only during backward and only for nodes that
  /// require a gradient; the first call allocates it, zeroed. Backward steps
  /// must reach adjoints through this function, not through at(id).adjoint.
  matrix_map<S> adjoint(std::uint32_t id) {
    node& n = nodes_[id];
    if (n.adjoint == nullptr && n.requires_grad) {
      const auto count = static_cast<std::size_t>(n.rows * n.cols);
      n.adjoint = adjoints_.acquire(count);
      S* a = n.adjoint;
      detail::parallel_chunks(static_cast<index>(count), index{1} << 16,
                              [a](index at, index m) { std::fill_n(a + at, m, S(0)); });
    }
    return matrix_map<S>(n.adjoint, n.rows, n.cols);
  }
  /// Whether node `id` needs a gradient.
  bool requires_grad(std::uint32_t id) const { return nodes_[id].requires_grad; }
  /// The record of node `id`.
  const node& at(std::uint32_t id) const { return nodes_[id]; }

  /// Uninitialised working memory of `count` values that an op uses within one
  /// forward or backward call and gives back (give_back) before returning:
  /// unlike scratch() it does not stay allocated until reset(). From a block
  /// pool, so a warm step allocates nothing. Prefer the RAII `borrowed`.
  S* borrow(std::size_t count) { return temps_->acquire(count); }
  /// Returns memory from borrow(count).
  void give_back(S* p, std::size_t count) noexcept { temps_->release(p, count); }

  /// A borrowed buffer of rows x cols values, given back when it goes out of scope.
  class borrowed {
   public:
    /// Borrows rows * cols values from `t`.
    borrowed(tape& t, index rows, index cols)
        : t_(t), rows_(rows), cols_(cols), p_(t.borrow(static_cast<std::size_t>(rows * cols))) {}
    borrowed(const borrowed&) = delete;
    borrowed& operator=(const borrowed&) = delete;
    ~borrowed() { t_.give_back(p_, static_cast<std::size_t>(rows_ * cols_)); }
    /// The first value.
    S* data() const noexcept { return p_; }
    /// The buffer as a rows x cols row-major matrix.
    matrix_map<S> map() const { return matrix_map<S>(p_, rows_, cols_); }

   private:
    tape& t_;
    index rows_, cols_;
    S* p_;
  };

  /// Uninitialised arena storage for an op's saved intermediates (freed by reset()).
  template <class T>
  T* scratch(std::size_t count) {
    return arena_.allocate<T>(count);
  }

  /// @throws state_error when v is invalid, of another tape or from before reset().
  void check(const var<S>& v, const char* fn) const {
    if (v.tape_ == nullptr) throw state_error(detail::cat(fn, ": variable is empty (default-constructed)"));
    if (v.tape_ != this) throw state_error(detail::cat(fn, ": variable belongs to another tape"));
    if (v.generation_ != generation_ || v.id_ >= nodes_.size())
      throw state_error(detail::cat(fn, ": variable was recorded before the tape's last reset()"));
  }

 private:
  friend class var<S>;

  var<S> push(const node& n) {
    if (nodes_.size() >= std::numeric_limits<std::uint32_t>::max())
      throw state_error("tape: too many nodes; call reset() between steps");
    nodes_.push_back(n);
    return var<S>(this, static_cast<std::uint32_t>(nodes_.size() - 1), generation_);
  }

  arena arena_;
  block_pool<S> adjoints_;
  block_pool<S> own_temps_;
  block_pool<S>* temps_ = &own_temps_;  // a block tape's points to its parent's
  std::unique_ptr<tape> block_tape_;
  execution_config config_;
  std::uint64_t own_macs_ = 0;
  std::uint64_t* macs_ = &own_macs_;  // a block tape's points to its parent's
  bool retain_adjoints_ = false;
  std::vector<node> nodes_;
  std::uint32_t generation_ = 0;
  bool grad_enabled_ = true;
  bool backward_done_ = false;
};

/// Scope in which a tape records no backward steps (inference): nodes still
/// hold values, but none requires a gradient.
template <Scalar S>
class no_grad {
 public:
  /// Turns recording of backward steps off on `t` until this guard is destroyed.
  explicit no_grad(tape<S>& t) : tape_(t), previous_(t.grad_enabled()) { t.set_grad_enabled(false); }
  ~no_grad() { tape_.set_grad_enabled(previous_); }
  no_grad(const no_grad&) = delete;
  no_grad& operator=(const no_grad&) = delete;

 private:
  tape<S>& tape_;
  bool previous_;
};

// ---- var, out of line ------------------------------------------------------

template <Scalar S>
void var<S>::check_valid(const char* fn) const {
  if (tape_ == nullptr) throw state_error(detail::cat(fn, ": variable is empty (default-constructed)"));
  tape_->check(*this, fn);
}

template <Scalar S>
const auto& var<S>::node() const {
  check_valid("var");
  return tape_->nodes_[id_];
}

template <Scalar S>
S var<S>::item() const {
  if (rows() != 1 || cols() != 1)
    throw shape_error(detail::cat("var::item: variable is ", detail::shape_str(rows(), cols()), ", not 1x1"));
  return node().value[0];
}

template <Scalar S>
matrix_map<S> var<S>::adjoint() const {
  auto& n = node();
  if (n.released)
    throw state_error(detail::cat("var::adjoint: the adjoint of node ", id_, " (", detail::shape_str(n.rows, n.cols),
                                  ") was released during backward(); call tape::retain_adjoints(true) before "
                                  "backward() to keep it"));
  if (!n.requires_grad || n.adjoint == nullptr || !tape_->backward_done_)
    throw state_error(detail::cat("var::adjoint: node ", id_, " (", detail::shape_str(n.rows, n.cols),
                                  ") has no adjoint: it requires no gradient, backward() has not run, "
                                  "or no gradient reached it"));
  return matrix_map<S>(n.adjoint, n.rows, n.cols);
}

namespace detail {

/// The tape of an operand. @throws state_error when it is empty (default-constructed) or stale.
template <Scalar S>
tape<S>& tape_of(const char* fn, const var<S>& a) {
  if (!a.valid()) throw state_error(detail::cat(fn, ": variable is empty (default-constructed)"));
  tape<S>& t = a.owner();
  t.check(a, fn);
  return t;
}

/// The common tape of two operands. @throws state_error when they differ or are stale.
template <Scalar S>
tape<S>& same_tape(const char* fn, const var<S>& a, const var<S>& b) {
  tape<S>& t = tape_of(fn, a);
  t.check(b, fn);
  return t;
}

}  // namespace detail
}  // namespace vpdarts
