#pragma once
/// @file data_parallel.hpp
/// Data parallelism as every trainer sees it, with no MPI in sight: the
/// processes of a run (a communicator), each process's share of a global
/// batch, and the one reduction of a training step. A program that wants
/// several processes passes a data_parallel made by <vpdarts/distributed.hpp>
/// (MPI) in the trainers' options; the default is one process, at no cost.
///
/// The semantics are those of one process with the same global batch: every
/// process computes the mean loss of its share of b_r rows and its gradient
/// g_r; the step sums b_r g_r and b_r loss_r over the processes and divides
/// by the global batch B = sum b_r, which is exactly the single-process mean.
/// Every process then steps identical optimisers on identical gradients, so
/// the parameters stay identical without being broadcast (check_identical()
/// verifies it once per epoch).

#include <algorithm>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../autodiff/parameter.hpp"
#include "../detail/format.hpp"
#include "../detail/hash.hpp"
#include "../error.hpp"

namespace vpdarts {

/// The processes of a data-parallel run, as the trainers use them. An
/// implementation (vpdarts::mpi::communicator) must make every collective
/// give the same bits on every process.
class communicator {
 public:
  virtual ~communicator() = default;
  /// This process, 0 .. size()-1.
  virtual int rank() const noexcept = 0;
  /// The number of processes.
  virtual int size() const noexcept = 0;
  /// Sums `values` element-wise over all processes, in place (a collective:
  /// every process calls it with the same length). Every process ends with the same bits.
  virtual void sum(std::span<double> values) = 0;
  /// Replaces `text` on every process by the one of process `root` (a collective).
  virtual void broadcast(std::string& text, int root) = 0;
  /// Returns once every process has called it (a collective). Processes that
  /// wait here for a slow one (process 0 writing a file) should not keep a core busy.
  virtual void barrier() = 0;
};

/// What one process measured on its share of a step's batch.
struct local_step {
  double loss = 0;     ///< mean loss over the share's rows
  index correct = -1;  ///< correctly classified rows of the share (negative: not counted)
};

/// What a step measured over the whole global batch.
struct reduced_step {
  double loss = 0;     ///< mean loss over the global batch
  index correct = -1;  ///< correctly classified rows of the global batch (negative: not counted)
  index rows = 0;      ///< rows of the global batch
};

/// How a trainer shares its batches with other processes (see the file's
/// comment). Copies share the communicator; each copy keeps its own
/// reduction buffer, reused from step to step (a warm step allocates nothing).
/// Not for use by several threads at once.
class data_parallel {
 public:
  /// One process: every method below does the single-process thing at no cost.
  data_parallel() = default;
  /// Over the processes of `comm`. @throws config_error for a null communicator.
  explicit data_parallel(std::shared_ptr<communicator> comm) : comm_(std::move(comm)) {
    if (!comm_) throw config_error("data_parallel: the communicator is null");
  }

  /// This process, 0 .. size()-1.
  int rank() const noexcept { return comm_ ? comm_->rank() : 0; }
  /// The number of processes.
  int size() const noexcept { return comm_ ? comm_->size() : 1; }
  /// True with more than one process.
  bool active() const noexcept { return size() > 1; }
  /// True on process 0, the one that prints and writes files.
  bool root() const noexcept { return rank() == 0; }
  /// The communicator (null for one process).
  const std::shared_ptr<communicator>& comm() const noexcept { return comm_; }

  /// A contiguous range of rows.
  struct range {
    index first = 0;  ///< the first row
    index count = 0;  ///< rows in the range
  };
  /// This process's share of `n` rows: contiguous, in rank order, as even as
  /// possible (the first n % size() processes take one row more).
  range share_of(index n) const noexcept {
    const index p = size(), r = rank(), q = n / p, extra = n % p;
    return {r * q + std::min(r, extra), q + (r < extra ? 1 : 0)};
  }
  /// This process's share of a batch of rows (see share_of(index)).
  std::span<const index> share_of(std::span<const index> rows) const noexcept {
    const range s = share_of(static_cast<index>(rows.size()));
    return rows.subspan(static_cast<std::size_t>(s.first), static_cast<std::size_t>(s.count));
  }
  /// @throws config_error naming `who` when a batch of `batch` rows would leave a process without a row.
  void require_batch(index batch, std::string_view who) const {
    if (batch < size())
      throw config_error(detail::cat(who, ": batch ", batch, " is smaller than the ", size(),
                                     " processes (each needs at least one row of every batch)"));
  }

  /// One training step's forward and backward on this process's share of
  /// `rows` rows (`compute() -> local_step`, leaving the share's mean gradient
  /// in `params`), then the reduction: afterwards every process holds the
  /// global batch's mean gradient in `params` and gets the global loss and
  /// count. When compute() throws on some process, every process throws: the
  /// failing one its own exception, the others a value_error (for a
  /// value_error) or a state_error naming the process and its message.
  template <Scalar S, class Compute>
  reduced_step gradient_step(std::span<parameter<S>* const> params, index rows, Compute&& compute) const {
    if (!active()) {
      const local_step s = compute();
      return {s.loss, s.correct, rows};
    }
    double local_loss = 0;  // (a local_step here draws a false maybe-uninitialized from GCC 12)
    index local_correct = -1;
    std::exception_ptr failure;
    std::string message;
    bool value_failure = false;
    try {
      const local_step s = compute();
      local_loss = s.loss;
      local_correct = s.correct;
    } catch (const value_error& e) {
      failure = std::current_exception();
      message = e.message();
      value_failure = true;
    } catch (const std::exception& e) {
      failure = std::current_exception();
      message = e.what();
    }
    const std::size_t p = static_cast<std::size_t>(size()), head = 2 * p + 3;
    std::size_t n = head;
    for (parameter<S>* q : params) n += static_cast<std::size_t>(q->size());
    buffer_.assign(n, 0.0);
    buffer_[static_cast<std::size_t>(rank())] = failure ? 1 : 0;
    buffer_[p + static_cast<std::size_t>(rank())] = value_failure ? 1 : 0;
    const double w = static_cast<double>(rows);
    if (!failure) {
      buffer_[2 * p] = w;
      buffer_[2 * p + 1] = w * local_loss;
      buffer_[2 * p + 2] = static_cast<double>(std::max<index>(local_correct, 0));
      std::size_t at = head;
      for (parameter<S>* q : params) {
        const S* g = q->grad().data();
        for (index i = 0; i < q->size(); ++i) buffer_[at++] = w * static_cast<double>(g[i]);
      }
    }
    comm_->sum(buffer_);
    for (std::size_t r = 0; r < p; ++r)
      if (buffer_[r] != 0) {
        comm_->broadcast(message, static_cast<int>(r));
        if (failure) std::rethrow_exception(failure);
        const std::string what = detail::cat("process ", r, " of ", p, ": ", message);
        if (buffer_[p + r] != 0) throw value_error(what);
        throw state_error(what);
      }
    const double total = buffer_[2 * p];
    std::size_t at = head;
    for (parameter<S>* q : params) {
      S* g = q->grad().data();
      for (index i = 0; i < q->size(); ++i) g[i] = static_cast<S>(buffer_[at++] / total);
    }
    return {buffer_[2 * p + 1] / total, local_correct < 0 ? -1 : static_cast<index>(buffer_[2 * p + 2]),
            static_cast<index>(total)};
  }

  /// The sum of `v` over all processes (a collective).
  double sum(double v) const {
    if (!active()) return v;
    comm_->sum(std::span<double>(&v, 1));
    return v;
  }
  /// The sum of a count over all processes (a collective; exact below 2^53).
  index sum(index v) const { return static_cast<index>(sum(static_cast<double>(v))); }
  /// Sums a matrix element-wise over all processes, in place (a collective).
  template <Scalar S>
  void sum(matrix<S>& m) const {
    if (!active()) return;
    buffer_.assign(m.data(), m.data() + m.size());
    comm_->sum(buffer_);
    std::copy(buffer_.begin(), buffer_.end(), m.data());
  }

  /// Runs `work` on process 0 only (writing a file, say) and tells every
  /// process how it went: when it throws, process 0 rethrows it and every
  /// other process throws a state_error with its message (a collective).
  template <class Work>
  void on_root(Work&& work) const {
    if (!active()) {
      work();
      return;
    }
    std::exception_ptr failure;
    std::string message;
    if (root()) try {
        work();
      } catch (const std::exception& e) {
        failure = std::current_exception();
        message = e.what();
      }
    comm_->barrier();  // the others wait here without spinning
    double failed = failure ? 1 : 0;
    comm_->sum(std::span<double>(&failed, 1));
    if (failed == 0) return;
    comm_->broadcast(message, 0);
    if (failure) std::rethrow_exception(failure);
    throw state_error(detail::cat("process 0 of ", size(), ": ", message));
  }

  /// Checks that every process holds the settings process 0 holds (a collective, before the first
  /// step): `settings` is a JSON object of name -> value (a data fingerprint among them, say).
  /// @throws config_error on every process when one differs, naming `who`, the first such process and
  /// each key that differs with both values.
  void require_same(const nlohmann::json& settings, std::string_view who) const {
    if (!active()) return;
    const std::string mine = settings.dump();
    std::string reference = mine;
    comm_->broadcast(reference, 0);
    std::string message;
    if (reference != mine) {
      nlohmann::json zero = nlohmann::json::parse(reference, nullptr, false);
      if (!zero.is_object()) zero = nlohmann::json::object();
      std::vector<std::string> differ;
      const auto show = [](const nlohmann::json& j, const std::string& key) {
        return j.is_object() && j.contains(key) ? j[key].dump() : std::string("not set");
      };
      if (settings.is_object())
        for (auto it = settings.begin(); it != settings.end(); ++it)
          if (!zero.contains(it.key()) || zero[it.key()] != it.value())
            differ.push_back(detail::cat(it.key(), " ", it.value().dump(), " (process 0: ", show(zero, it.key()), ")"));
      for (auto it = zero.begin(); it != zero.end(); ++it)
        if (!settings.is_object() || !settings.contains(it.key()))
          differ.push_back(detail::cat(it.key(), " not set (process 0: ", it.value().dump(), ")"));
      message = detail::cat("process ", rank(), " of ", size(), " differs from process 0: ",
                            differ.empty() ? std::string("its settings differ") : detail::join(differ, "; "));
    }
    std::vector<double> flagged(static_cast<std::size_t>(size()), 0.0);
    flagged[static_cast<std::size_t>(rank())] = message.empty() ? 0.0 : 1.0;
    comm_->sum(flagged);
    for (std::size_t r = 0; r < flagged.size(); ++r)
      if (flagged[r] != 0) {
        comm_->broadcast(message, static_cast<int>(r));
        throw config_error(detail::cat(who, ": the processes were not given the same data and settings: ", message));
      }
  }

  /// Checks that `params` hold the same values on every process (a
  /// collective; once per epoch is cheap). @throws state_error naming `who`
  /// on every process when they differ: the communicator's sums were not
  /// identical everywhere, or a process trained on other data.
  template <Scalar S>
  void check_identical(std::span<parameter<S>* const> params, std::string_view who) const {
    if (!active()) return;
    detail::fnv1a h;
    for (parameter<S>* q : params) h.add(q->value().data(), static_cast<std::size_t>(q->size()) * sizeof(S));
    std::string reference = h.hex();
    const std::string mine = reference;
    comm_->broadcast(reference, 0);
    double differ = mine == reference ? 0 : 1;
    comm_->sum(std::span<double>(&differ, 1));
    if (differ != 0)
      throw state_error(detail::cat(who, ": the parameters of ", differ, " of the ", size(),
                                    " processes differ from process 0's (were they given the same data and settings?)"));
  }

 private:
  std::shared_ptr<communicator> comm_;
  mutable std::vector<double> buffer_;
};

}  // namespace vpdarts
