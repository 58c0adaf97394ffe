// Data parallelism over real MPI processes (<vpdarts/distributed.hpp>), run by
// ctest as `mpirun -np 3 vpdarts_test_mpi` (and -np 2). Every process runs each
// trainer alone (the reference) and over the job's processes, and compares;
// a checkpoint written by the first two processes is resumed by all of them
// and by each one alone.
//   vpdarts_test_mpi            the equivalence checks (exit 0 when every process passed)
//   vpdarts_test_mpi --abort    process 1 throws while the others wait in a collective:
//                               run_or_abort must stop the whole job (ctest checks the exit and the message)
//   vpdarts_test_mpi --hang     process 1 never joins a collective: the others' wait ends in an error after
//                               VPDARTS_MPI_TIMEOUT seconds, and the job stops
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <unistd.h>

#include <vpdarts/distributed.hpp>

#include "equivalence.hpp"

namespace vp = vpdarts;
namespace eq = vpdarts_test::equivalence;

namespace {

int failures = 0;

void check(bool ok, const std::string& what, int rank) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAILED on process %d: %s\n", rank, what.c_str());
  }
}

std::string show(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

int run_checks() {
  const vp::data_parallel world = vp::mpi::world();
  const int rank = world.rank(), size = world.size();
  if (size < 2) {
    std::fprintf(stderr, "vpdarts_test_mpi: run it under mpirun with at least 2 processes\n");
    return 1;
  }
  // first-order search in float, second order in double; batch 7 does not divide by 2 or 3
  {
    const auto ref = eq::run_search<float>({}, vp::darts_order::first, 7, {}, false, 0, 0.1);
    const auto r = eq::run_search<float>(world, vp::darts_order::first, 7, {}, false, 0, 0.1);
    check(r.genotype == ref.genotype, "float search: genotype", rank);
    check(eq::rel_diff(r.alpha, ref.alpha) < 1e-5, "float search: alpha history " + show(eq::rel_diff(r.alpha, ref.alpha)), rank);
  }
  {
    const auto ref = eq::run_search<double>({}, vp::darts_order::second, 7);
    const auto r = eq::run_search<double>(world, vp::darts_order::second, 7);
    check(r.genotype == ref.genotype, "double second-order search: genotype", rank);
    check(eq::rel_diff(r.alpha, ref.alpha) < 1e-10,
          "double second-order search: alpha history " + show(eq::rel_diff(r.alpha, ref.alpha)), rank);
  }
  {
    const auto ref = eq::run_train<float>({}, 7);
    const auto r = eq::run_train<float>(world, 7);
    check(eq::rel_diff(r.first, ref.first) < 1e-5, "float retraining: final weights " + show(eq::rel_diff(r.first, ref.first)), rank);
    const auto refd = eq::run_train<double>({}, 7);
    const auto rd = eq::run_train<double>(world, 7);
    check(eq::rel_diff(rd.first, refd.first) < 1e-10, "double retraining: final weights " + show(eq::rel_diff(rd.first, refd.first)), rank);
  }
  check(eq::run_evaluate<float>(world) == eq::run_evaluate<float>({}), "evaluation: accuracy", rank);
  {
    const auto ref = eq::run_lr_grid<double>({});
    const auto r = eq::run_lr_grid<double>(world);
    check(r.val_accuracy == ref.val_accuracy && r.best == ref.best, "lr grid: scores", rank);
  }
  {
    const auto ref = eq::run_probe<double>({});
    const auto r = eq::run_probe<double>(world);
    check(eq::rel_diff(r.first, ref.first) < 1e-10, "linear probe: head", rank);
  }
  {
    const auto ref = eq::run_pretrain<double>({});
    const auto r = eq::run_pretrain<double>(world);
    check(eq::rel_diff(r.first, ref.first) < 1e-9, "pretraining: parameters", rank);
  }
  // resume on another number of processes: checkpoint by processes 0 and 1, resumed by all, and by each alone
  {
    std::string dir = (std::filesystem::temp_directory_path() / ("vpdarts-mpi-" + std::to_string(::getpid()))).string();
    world.comm()->broadcast(dir, 0);
    if (rank == 0) std::filesystem::create_directories(dir);
    world.comm()->barrier();
    const std::filesystem::path ck = std::filesystem::path(dir) / "search.safetensors";
    const auto straight = eq::run_search<double>({}, vp::darts_order::first, 7);
    MPI_Comm pair;
    MPI_Comm_split(MPI_COMM_WORLD, rank < 2 ? 0 : 1, rank, &pair);
    if (rank < 2) {
      bool stopped = false;
      try {
        eq::run_search<double>(vp::mpi::over(pair), vp::darts_order::first, 7, ck, false, 2);
      } catch (const eq::stop_here&) {
        stopped = true;
      }
      check(stopped, "the 2-process search stopped after epoch 2", rank);
    }
    MPI_Comm_free(&pair);
    world.comm()->barrier();
    const std::filesystem::path mine = std::filesystem::path(dir) / ("copy-" + std::to_string(rank) + ".safetensors");
    std::filesystem::copy_file(ck, mine);
    world.comm()->barrier();
    const auto all = eq::run_search<double>(world, vp::darts_order::first, 7, ck, true);
    check(all.resumed_from == 2 && all.genotype == straight.genotype && eq::rel_diff(all.alpha, straight.alpha) < 1e-10,
          "resumed on " + std::to_string(size) + " processes", rank);
    const auto alone = eq::run_search<double>({}, vp::darts_order::first, 7, mine, true);
    check(alone.resumed_from == 2 && eq::rel_diff(alone.alpha, straight.alpha) < 1e-10, "resumed on 1 process", rank);
    world.comm()->barrier();
    if (rank == 0) std::filesystem::remove_all(dir);
  }
  // a failure on one process reaches all of them as an exception, not a hang
  {
    vp::parameter<float> p("p", vp::matrix<float>::Ones(1, 1));
    p.set_requires_grad(true);
    std::vector<vp::parameter<float>*> ps{&p};
    std::string what = "no error";
    try {
      world.gradient_step<float>(ps, 1, [&] {
        if (rank == size - 1) throw vp::value_error("cross_entropy: the loss is nan");
        return vp::local_step{1.0};
      });
    } catch (const vp::value_error& e) {
      what = e.what();
    }
    check(what.find("the loss is nan") != std::string::npos, "a NaN on the last process reaches every process: " + what, rank);
  }
  // processes given other settings or data are stopped before they train together, naming what differs
  {
    std::string what = "no error";
    try {
      world.require_same({{"batch", rank == 1 ? 16 : 8}, {"data", "abc"}}, "test");
    } catch (const vp::config_error& e) {
      what = e.what();
    }
    check(what.find("test: the processes were not given the same data and settings: process 1 of " +
                    std::to_string(size) + " differs from process 0: batch 16 (process 0: 8)") != std::string::npos,
          "require_same names the process and the setting that differ: " + what, rank);
    what = "no error";
    try {
      world.require_same({{"batch", 8}, {"data", "abc"}}, "test");
    } catch (const vp::config_error& e) {
      what = e.what();
    }
    check(what == "no error", "require_same passes for the same settings: " + what, rank);
    // a search whose last process holds other images
    auto data = vp::data::make_synthetic<float>({.image = 8, .count = 24, .seed = rank == size - 1 ? 5u : 4u, .classes = {5, 6}});
    vp::prompted_vit<float> model(vp::vit<float>(vp::vit_config{8, 3, 4, 8, 1, 2, 16, 2}, 1), {.prompts = 2, .classes = 2});
    vp::search_options o;
    o.epochs = 2;
    o.warmup_epochs = 1;
    o.batch = 4;
    o.progress = false;
    o.parallel = world;
    what = "no error";
    try {
      vp::search(model, data, o);
    } catch (const vp::config_error& e) {
      what = e.what();
    }
    check(what.find("search: the processes were not given the same data and settings: process " + std::to_string(size - 1)) !=
                  std::string::npos && what.find("data \"") != std::string::npos,
          "a search over other data on one process stops every process: " + what, rank);
  }
  double failed = failures;
  world.comm()->sum(std::span<double>(&failed, 1));
  if (rank == 0)
    std::printf("vpdarts_test_mpi: %d processes, %s\n", size, failed == 0 ? "every check passed" : "some checks FAILED");
  return failed == 0 ? 0 : 1;
}

int run_abort() {
  const vp::data_parallel world = vp::mpi::world();
  if (world.rank() == 1) throw vp::io_error("cannot read 'data.idx' on this process");
  world.comm()->barrier();  // the others wait here forever unless the job is stopped
  return 0;
}

int run_hang() {
  const vp::data_parallel world = vp::mpi::world();
  if (world.rank() == 1) {  // never joins the sum, and outlives the others' wait
    std::this_thread::sleep_for(std::chrono::seconds(60));
    return 0;
  }
  double x = 1;
  world.comm()->sum(std::span<double>(&x, 1));  // must end in an error after VPDARTS_MPI_TIMEOUT, not wait 60 s
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  vp::mpi::environment env(argc, argv);
  const std::string mode = argc > 1 ? argv[1] : "";
  return vp::mpi::run_or_abort(
      [&] { return mode == "--abort" ? run_abort() : mode == "--hang" ? run_hang() : run_checks(); }, "vpdarts_test_mpi");
}
