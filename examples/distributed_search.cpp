// A data-parallel DARTS search over MPI: every process builds the same model
// and data, takes its share of every batch, and the gradients are summed with
// MPI_Allreduce, so the genotype is the one a single process finds with the
// same global batch. Process 0 prints and writes the genotype.
//
//   mpirun -np 2 examples/distributed_search [--epochs 4] [--out genotype.json]
//   examples/distributed_search                (one process: the reference)
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include <vpdarts/distributed.hpp>
#include <vpdarts/vpdarts.hpp>

namespace vp = vpdarts;

int main(int argc, char** argv) {
  long epochs = 4;
  std::string out = "genotype.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--epochs") == 0) epochs = std::atol(argv[i + 1]);
    else if (std::strcmp(argv[i], "--out") == 0) out = argv[i + 1];
  }
  // MPI when started by mpirun; a plain run is one process (data_parallel{})
  std::optional<vp::mpi::environment> env;
  if (vp::mpi::launched()) env.emplace(argc, argv);
  return vp::mpi::run_or_abort(
      [&] {
        const vp::data_parallel dp = env ? vp::mpi::world() : vp::data_parallel{};
        // the machine's cores shared among this machine's processes
        omp_set_num_threads(std::max(1, omp_get_num_procs() / vp::mpi::local_size()));

        // a small randomly initialised backbone and the synthetic task, the same on every process
        const vp::vit_config c{16, 3, 4, 32, 3, 2, 64, 4};
        vp::prompted_vit<float> model(vp::vit<float>(c, 1), {.prompts = 4, .classes = 4, .seed = 1});
        const auto data = vp::data::make_synthetic<float>({.image = 16, .count = 160, .seed = 3, .classes = {5, 6, 7, 8}});

        vp::search_options o;
        o.epochs = epochs;
        o.warmup_epochs = 1;
        o.batch = 16;
        o.parallel = dp;  // the one line a data-parallel search needs
        o.progress = false;
        o.on_epoch = [&](long e, const vp::matrix<double>&, double train_loss, double val_loss) {
          if (dp.root()) std::printf("epoch %ld: search-train loss %.5f, search-val loss %.5f\n", e, train_loss, val_loss);
        };
        const vp::search_result r = vp::search(model, data, o);
        if (dp.root()) {
          std::printf("processes: %d, threads each: %d\n", dp.size(), omp_get_max_threads());
          std::printf("genotype: %s\n", r.found.str().c_str());
          r.found.save(out);
          std::printf("saved %s\n", out.c_str());
        }
        return 0;
      },
      "distributed_search");
}
