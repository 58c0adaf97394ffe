// Data-parallel training (train/data_parallel.hpp) with its processes played
// by threads: a communicator whose sum adds every thread's values in rank
// order. Every trainer over 2 and 3 of them must give what one process gives
// (the same global batch), uneven splits included; failures reach every
// process; a checkpoint resumes on another number of processes. The same
// runs over real MPI processes are tests/distributed/test_mpi.cpp.
#include "pch.hpp"

#include <omp.h>

#include <barrier>
#include <exception>
#include <memory>
#include <thread>

#include "distributed/equivalence.hpp"

namespace vp = vpdarts;
namespace eq = vpdarts_test::equivalence;

namespace {

struct thread_group {
  explicit thread_group(int n) : size(n), meet(n), slots(static_cast<std::size_t>(n)) {}
  int size;
  std::barrier<> meet;
  std::vector<std::vector<double>> slots;
  std::string text;
};

class thread_communicator final : public vp::communicator {
 public:
  thread_communicator(std::shared_ptr<thread_group> g, int rank) : g_(std::move(g)), rank_(rank) {}
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return g_->size; }
  void sum(std::span<double> v) override {
    g_->slots[static_cast<std::size_t>(rank_)].assign(v.begin(), v.end());
    g_->meet.arrive_and_wait();
    for (std::size_t i = 0; i < v.size(); ++i) {
      double s = 0;
      for (const auto& slot : g_->slots) s += slot.at(i);
      v[i] = s;
    }
    g_->meet.arrive_and_wait();
  }
  void broadcast(std::string& text, int root) override {
    if (rank_ == root) g_->text = text;
    g_->meet.arrive_and_wait();
    text = g_->text;
    g_->meet.arrive_and_wait();
  }
  void barrier() override { g_->meet.arrive_and_wait(); }

 private:
  std::shared_ptr<thread_group> g_;
  int rank_;
};

/// Runs fn(data_parallel) on n threads, one "process" each; returns every thread's result
/// (an exception thrown by one is rethrown after all have ended).
template <class Fn>
auto on_threads(int n, Fn fn) {
  using R = decltype(fn(vp::data_parallel{}));
  auto group = std::make_shared<thread_group>(n);
  std::vector<R> out(static_cast<std::size_t>(n));
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      omp_set_num_threads(1);
      try {
        out[static_cast<std::size_t>(r)] = fn(vp::data_parallel(std::make_shared<thread_communicator>(group, r)));
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

}  // namespace

TEST_CASE("data_parallel shares a batch contiguously and as evenly as possible", "[train][parallel]") {
  const vp::data_parallel one;
  CHECK(one.size() == 1);
  CHECK(one.root());
  CHECK(one.share_of(7).first == 0);
  CHECK(one.share_of(7).count == 7);
  auto shares = on_threads(3, [](const vp::data_parallel& dp) {
    return std::vector<vp::index>{dp.share_of(7).first, dp.share_of(7).count, dp.share_of(2).count, dp.share_of(2).first};
  });
  CHECK(shares[0] == std::vector<vp::index>{0, 3, 1, 0});
  CHECK(shares[1] == std::vector<vp::index>{3, 2, 1, 1});
  CHECK(shares[2] == std::vector<vp::index>{5, 2, 0, 2});
  CHECK_THROWS_WITH(on_threads(2, [](const vp::data_parallel& dp) { dp.require_batch(1, "train"); return 0; }),
                    Catch::Contains("train: batch 1 is smaller than the 2 processes"));
  CHECK_THROWS_WITH(vp::data_parallel(nullptr), Catch::Contains("null"));
}

TEST_CASE("a data-parallel search gives the single-process result", "[train][parallel]") {
  const auto ref1 = eq::run_search<float>({}, vp::darts_order::first, 7, {}, false, 0, 0.1);
  const auto ref2 = eq::run_search<double>({}, vp::darts_order::second, 7);
  for (int n : {2, 3}) {
    INFO(n << " processes, batch 7 (uneven)");
    for (const auto& r : on_threads(n, [](const vp::data_parallel& dp) {
           return eq::run_search<float>(dp, vp::darts_order::first, 7, {}, false, 0, 0.1);
         })) {
      CHECK(r.genotype == ref1.genotype);
      CHECK(eq::rel_diff(r.alpha, ref1.alpha) < 1e-5);
      CHECK(eq::rel_diff(r.train_loss, ref1.train_loss) < 1e-5);
    }
    for (const auto& r : on_threads(n, [](const vp::data_parallel& dp) {
           return eq::run_search<double>(dp, vp::darts_order::second, 7);
         })) {
      CHECK(r.genotype == ref2.genotype);
      CHECK(eq::rel_diff(r.alpha, ref2.alpha) < 1e-10);
      CHECK(eq::rel_diff(r.val_loss, ref2.val_loss) < 1e-10);
    }
  }
  // the alpha trajectory moved: the comparison is not between two untouched starts
  CHECK(eq::rel_diff(ref2.alpha.back(), ref2.alpha.front()) > 1e-4);
}

TEST_CASE("data-parallel retraining, evaluation, lr grid, probe and pretraining give the single-process result",
          "[train][parallel]") {
  const auto train1 = eq::run_train<double>({}, 7);
  const double eval1 = eq::run_evaluate<float>({});
  const auto grid1 = eq::run_lr_grid<double>({});
  const auto probe1 = eq::run_probe<double>({});
  const auto pre1 = eq::run_pretrain<double>({});
  for (int n : {2, 3}) {
    INFO(n << " processes");
    for (const auto& r : on_threads(n, [](const vp::data_parallel& dp) { return eq::run_train<double>(dp, 7); })) {
      CHECK(eq::rel_diff(r.first, train1.first) < 1e-10);
      CHECK(std::abs(r.second - train1.second) < 1e-10);
    }
    for (double acc : on_threads(n, [](const vp::data_parallel& dp) { return eq::run_evaluate<float>(dp); }))
      CHECK(acc == eval1);
    for (const auto& g : on_threads(n, [](const vp::data_parallel& dp) { return eq::run_lr_grid<double>(dp); })) {
      CHECK(g.val_accuracy == grid1.val_accuracy);
      CHECK(g.best == grid1.best);
    }
    for (const auto& p : on_threads(n, [](const vp::data_parallel& dp) { return eq::run_probe<double>(dp); })) {
      CHECK(eq::rel_diff(p.first, probe1.first) < 1e-10);
      CHECK(p.second.test_accuracy == probe1.second.test_accuracy);
    }
    for (const auto& p : on_threads(n, [](const vp::data_parallel& dp) { return eq::run_pretrain<double>(dp); })) {
      CHECK(eq::rel_diff(p.first, pre1.first) < 1e-9);
      CHECK(p.second.train_accuracy == pre1.second.train_accuracy);
      CHECK(p.second.test_accuracy == pre1.second.test_accuracy);
    }
  }
}

TEST_CASE("a search checkpointed on 2 processes resumes on 1 or 3 to the uninterrupted result", "[train][parallel]") {
  vpdarts_test::temp_dir dir("vpdarts-dp-resume");
  const auto straight = eq::run_search<double>({}, vp::darts_order::first, 7);
  const auto ck = dir / "search.safetensors";
  CHECK_THROWS_AS(on_threads(2, [&](const vp::data_parallel& dp) {
                    return eq::run_search<double>(dp, vp::darts_order::first, 7, ck, false, 2);
                  }),
                  eq::stop_here);
  REQUIRE(std::filesystem::exists(ck));
  std::filesystem::copy_file(ck, dir / "copy.safetensors");
  for (const auto& r : on_threads(3, [&](const vp::data_parallel& dp) {
         return eq::run_search<double>(dp, vp::darts_order::first, 7, ck, true);
       })) {
    CHECK(r.resumed_from == 2);
    CHECK(r.genotype == straight.genotype);
    CHECK(eq::rel_diff(r.alpha, straight.alpha) < 1e-10);
  }
  const auto alone = eq::run_search<double>({}, vp::darts_order::first, 7, dir / "copy.safetensors", true);
  CHECK(alone.resumed_from == 2);
  CHECK(eq::rel_diff(alone.alpha, straight.alpha) < 1e-10);
}

TEST_CASE("a failure on one process reaches every process", "[train][parallel]") {
  // a NaN loss on process 1 only: every process throws value_error, the others naming process 1
  auto messages = on_threads(3, [](const vp::data_parallel& dp) {
    vp::parameter<float> p("p", vp::matrix<float>::Ones(2, 2));
    p.set_requires_grad(true);
    std::vector<vp::parameter<float>*> ps{&p};
    try {
      dp.gradient_step<float>(ps, 1, [&] {
        if (dp.rank() == 1) throw vp::value_error("cross_entropy: the loss is nan");
        return vp::local_step{0.5};
      });
    } catch (const vp::value_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  });
  CHECK_THAT(messages[0], Catch::Contains("process 1 of 3") && Catch::Contains("the loss is nan"));
  CHECK_THAT(messages[1], Catch::Contains("the loss is nan") && !Catch::Contains("process"));
  CHECK_THAT(messages[2], Catch::Contains("process 1 of 3"));
  // a failed write on process 0: the others throw a state_error with its message
  auto writes = on_threads(2, [](const vp::data_parallel& dp) {
    try {
      dp.on_root([] { throw vp::io_error("cannot write 'x': disk full"); });
    } catch (const vp::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  });
  CHECK_THAT(writes[0], Catch::Contains("disk full"));
  CHECK_THAT(writes[1], Catch::Contains("process 0 of 2") && Catch::Contains("disk full"));
  // parameters that differ between processes are caught
  auto checks = on_threads(2, [](const vp::data_parallel& dp) {
    vp::parameter<double> p("p", vp::matrix<double>::Constant(1, 3, dp.rank() == 1 ? 2.0 : 1.0));
    std::vector<vp::parameter<double>*> ps{&p};
    try {
      dp.check_identical<double>(ps, "search");
    } catch (const vp::state_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  });
  CHECK_THAT(checks[0], Catch::Contains("search: the parameters of 1 of the 2 processes differ"));
  CHECK(checks[1] == checks[0]);
}

TEST_CASE("a data-parallel gradient step is the weighted mean of the shares", "[train][parallel]") {
  // loss_r = mean over r's rows; the reduced gradient must be sum_r rows_r * g_r / sum_r rows_r
  auto out = on_threads(2, [](const vp::data_parallel& dp) {
    vp::parameter<double> p("p", vp::matrix<double>::Zero(1, 2));
    p.set_requires_grad(true);
    std::vector<vp::parameter<double>*> ps{&p};
    const vp::index rows = dp.rank() == 0 ? 3 : 1;
    const auto s = dp.gradient_step<double>(ps, rows, [&] {
      p.grad() << (dp.rank() == 0 ? 1.0 : 5.0), 2.0;
      return vp::local_step{dp.rank() == 0 ? 1.0 : 3.0, dp.rank() == 0 ? 2 : 1};
    });
    return std::vector<double>{p.grad()(0, 0), p.grad()(0, 1), s.loss, static_cast<double>(s.correct),
                               static_cast<double>(s.rows)};
  });
  for (const auto& v : out) CHECK(v == std::vector<double>{2.0, 2.0, 1.5, 3.0, 4.0});
}
