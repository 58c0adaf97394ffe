#pragma once
/// @file distributed.hpp
/// Data-parallel training over MPI (opt-in: include this header and link
/// MPI, e.g. CMake's MPI::MPI_CXX; the rest of vpdarts needs no MPI).
///
///     int main(int argc, char** argv) {
///       vpdarts::mpi::environment env(argc, argv);           // MPI_Init_thread .. MPI_Finalize
///       return vpdarts::mpi::run_or_abort([&] {
///         vpdarts::search_options o;
///         o.parallel = vpdarts::mpi::world();                 // every process takes its share of each batch
///         auto r = vpdarts::search(model, data, o);           // the single-process result, on every process
///         if (o.parallel.root()) r.found.save("genotype.json");
///         return 0;
///       });
///     }
///
/// Every process loads the same data and model and runs the same calls with
/// the same seeds; the trainers (pretrain, train, linear_probe, search,
/// choose_w_lr, evaluate) split every batch over the processes and sum the
/// gradients with MPI_Allreduce (train/data_parallel.hpp has the semantics).
/// search and train first check that every process holds process 0's data,
/// settings, backbone and precision (data_parallel::require_same), and every
/// collective waits a bounded time (VPDARTS_MPI_TIMEOUT seconds, 600 by
/// default) before it throws state_error instead of hanging.
/// docs/distributed.md tells how to run it on a cluster.

#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>

#include "detail/format.hpp"
#include "error.hpp"
#include "text.hpp"
#include "train/data_parallel.hpp"

namespace vpdarts::mpi {

/// True when this process was started by an MPI launcher (mpirun, mpiexec,
/// srun), judged from the environment the launchers set (Open MPI, PMIx,
/// MPICH/Hydra and Slurm's PMI); false for a program started by hand.
inline bool launched() noexcept {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

/// The processes of this machine in this job, from the launcher's
/// environment (1 when it does not say): how many share its cores.
inline int local_size() noexcept {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
    if (const char* v = std::getenv(name)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  return 1;
}

/// MPI for the lifetime of the object: MPI_Init_thread (funneled: only the
/// main thread calls MPI; OpenMP threads never do) and MPI_Finalize.
class environment {
 public:
  /// @throws state_error when MPI is already initialised or cannot give funneled threads.
  environment(int& argc, char**& argv) {
    int done = 0;
    MPI_Initialized(&done);
    if (done) throw state_error("mpi::environment: MPI is already initialised");
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      throw state_error("mpi::environment: this MPI cannot run with OpenMP threads (MPI_THREAD_FUNNELED)");
    }
  }
  environment(const environment&) = delete;
  environment& operator=(const environment&) = delete;
  ~environment() {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
  }
};

/// How long a collective waits for the other processes before it gives up: VPDARTS_MPI_TIMEOUT
/// seconds when set to a positive number, else 600 (a process may legitimately wait for process 0
/// to pretrain the built-in backbone or to time a model).
inline std::chrono::milliseconds default_timeout() {
  if (const char* v = std::getenv("VPDARTS_MPI_TIMEOUT"))
    if (const auto s = text::parse_number<double>(v); s && *s > 0 && *s < 1e9)
      return std::chrono::milliseconds(static_cast<long long>(*s * 1000));
  return std::chrono::seconds(600);
}

/// A vpdarts::communicator over an MPI communicator (a duplicate of it, so
/// that vpdarts's collectives never mix with the program's own).
class communicator final : public vpdarts::communicator {
 public:
  /// Over a duplicate of `comm` (MPI_COMM_WORLD by default), each collective waiting at most
  /// `timeout` for the other processes. Needs MPI initialised.
  explicit communicator(MPI_Comm comm = MPI_COMM_WORLD, std::chrono::milliseconds timeout = default_timeout())
      : timeout_(timeout) {
    int done = 0;
    MPI_Initialized(&done);
    if (!done) throw state_error("mpi::communicator: MPI is not initialised (make an mpi::environment first)");
    MPI_Comm_dup(comm, &comm_);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  communicator(const communicator&) = delete;
  communicator& operator=(const communicator&) = delete;
  ~communicator() override {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Comm_free(&comm_);
  }

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  /// MPI_Allreduce(MPI_SUM) in place, in pieces of at most INT_MAX values. For
  /// the predefined MPI_SUM on doubles, Open MPI's algorithms give every
  /// process the same bits (each element is combined in one fixed order and
  /// the result distributed); data_parallel::check_identical() verifies it.
  void sum(std::span<double> values) override {
    std::size_t at = 0;
    while (at < values.size()) {
      const int n = static_cast<int>(std::min<std::size_t>(values.size() - at, INT_MAX));
      MPI_Request request;
      MPI_Iallreduce(MPI_IN_PLACE, values.data() + at, n, MPI_DOUBLE, MPI_SUM, comm_, &request);
      wait(request, "sum");
      at += static_cast<std::size_t>(n);
    }
  }
  void broadcast(std::string& text, int root) override {
    unsigned long long n = text.size();
    MPI_Request request;
    MPI_Ibcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root, comm_, &request);
    wait(request, "broadcast");
    text.resize(static_cast<std::size_t>(n));
    std::size_t at = 0;
    while (at < text.size()) {
      const int k = static_cast<int>(std::min<std::size_t>(text.size() - at, INT_MAX));
      MPI_Ibcast(text.data() + at, k, MPI_CHAR, root, comm_, &request);
      wait(request, "broadcast");
      at += static_cast<std::size_t>(k);
    }
  }
  void barrier() override {
    MPI_Request request;
    MPI_Ibarrier(comm_, &request);
    wait(request, "barrier");
  }
  /// The MPI communicator (the duplicate).
  MPI_Comm handle() const noexcept { return comm_; }
  /// How long a collective waits for the others.
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }

 private:
  /// Waits for a non-blocking collective: MPI_Test in a loop, with sleeps of up to a millisecond once
  /// the wait is not short (a process waiting for a slow one leaves its core to others).
  /// @throws state_error when the others have not joined within timeout_ (the request is left
  /// behind: the job is to be stopped, as run_or_abort and the tool do).
  void wait(MPI_Request& request, const char* what) const {
    int done = 0;
    const auto start = std::chrono::steady_clock::now();
    auto pause = std::chrono::microseconds(0);
    for (MPI_Test(&request, &done, MPI_STATUS_IGNORE); !done; MPI_Test(&request, &done, MPI_STATUS_IGNORE)) {
      const auto waited = std::chrono::steady_clock::now() - start;
      if (waited > timeout_)
        throw state_error(detail::cat("mpi: process ", rank_, " of ", size_, " waited ",
                                      std::chrono::duration_cast<std::chrono::seconds>(waited).count(), " s in a ", what,
                                      " for the other processes (VPDARTS_MPI_TIMEOUT=",
                                      std::chrono::duration<double>(timeout_).count(),
                                      " s): a process stopped, hangs, or runs other calls with other settings"));
      if (waited > std::chrono::microseconds(200)) {
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2 + std::chrono::microseconds(20), std::chrono::microseconds(1000));
      }
    }
  }

  std::chrono::milliseconds timeout_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

/// Every process of the job (MPI_COMM_WORLD) as a data_parallel for the trainers' options.
inline data_parallel world() { return data_parallel(std::make_shared<communicator>(MPI_COMM_WORLD)); }

/// The processes of `comm` (a sub-communicator, say) as a data_parallel.
inline data_parallel over(MPI_Comm comm) { return data_parallel(std::make_shared<communicator>(comm)); }

/// Runs `work() -> int` and returns its result; when it throws on any
/// process, prints "PROGRAM (process R of N): MESSAGE" on standard error and
/// stops the whole job with MPI_Abort (exit code 1), so that no other
/// process waits for it forever.
template <class Work>
int run_or_abort(Work&& work, const char* program = "vpdarts") {
  try {
    return work();
  } catch (const std::exception& e) {
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    std::fprintf(stderr, "%s (process %d of %d): %s\n", program, rank, size, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}

}  // namespace vpdarts::mpi
