// vpdarts: the command-line tool. Pretrain a backbone, search the fusion
// operator of every layer, retrain the derived model (or a linear probe),
// evaluate it, classify image files, and write sample images, with no C++ to write.
//
//   vpdarts pretrain | search | select | retrain | eval | predict | export | sample  [flags]   (each has --help)
//   mpirun -np N vpdarts search ...   (a build with VPDARTS_MPI: every batch shared over N processes)
//
// Exit codes: 0 done, 1 the work failed (the message says why), 2 bad flags.
// Each command lives in cmd_<name>.cpp; the flags they share in settings.hpp.
#include <cstdio>
#include <cstdlib>
#include <new>
#include <optional>
#include <string>

#include "settings.hpp"

#ifdef VPDARTS_WITH_MPI
#include <vpdarts/distributed.hpp>
#endif

namespace {

void print_usage() {
  std::printf(
      "vpdarts %s: visual prompt tuning with differentiable fusion search\n\n"
      "usage: vpdarts COMMAND [flags]\n"
      "       mpirun -np N vpdarts COMMAND [flags]   (data-parallel; %s)\n\n"
      "commands:\n"
      "  pretrain   pretrain a ViT backbone from scratch on the synthetic task\n"
      "  search     DARTS search of the fusion operator of every layer (genotype, alpha trajectory, heatmap)\n"
      "  select     choose among the genotypes of several searches on search-val (DARTS's best of seeds)\n"
      "  retrain    train the derived model of a genotype (or one operator everywhere, or a linear probe); test it\n"
      "  eval       evaluate a retrained model file\n"
      "  predict    classify image files with a retrained model file\n"
      "  sample     write synthetic images as PNG files (OUT/<class>/<n>.png)\n\n"
      "Each command takes --help. With no data flags, search and retrain use the built-in synthetic task and a\n"
      "built-in backbone (pretrained on first use and cached).\n",
      vpdarts::version_string,
#ifdef VPDARTS_WITH_MPI
      "this build has MPI"
#else
      "needs a build with -DVPDARTS_MPI=ON"
#endif
  );
}

#ifndef VPDARTS_WITH_MPI
/// The number of processes an MPI launcher says this job has (1 when started by hand).
int launcher_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* v = std::getenv(name)) return std::max(1, std::atoi(v));
  return 1;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  using namespace vpdarts_cli;
  vpdarts::exec_best_variant(argv);
#ifdef VPDARTS_WITH_MPI
  std::optional<vpdarts::mpi::environment> mpi;
  if (vpdarts::mpi::launched()) {
    mpi.emplace(argc, argv);
    set_parallel(vpdarts::mpi::world(), vpdarts::mpi::local_size());
    if (!parallel().root() && !std::freopen("/dev/null", "w", stdout)) return 1;  // process 0 prints
  }
#else
  if (const int n = launcher_size(); n > 1) {
    std::fprintf(stderr,
                 "vpdarts: started by an MPI launcher as one of %d processes, but this vpdarts was built without MPI:\n"
                 "each process would run the whole job alone and write the same files. Build it with\n"
                 "cmake -DVPDARTS_MPI=ON (needs libopenmpi-dev), or run it without mpirun.\n",
                 n);
    return 2;
  }
#endif
  if (argc < 2) {
    print_usage();
    return 2;
  }
  const std::string cmd = argv[1];
  const std::pair<const char*, int (*)(int, char**)> commands[] = {
      {"pretrain", cmd_pretrain}, {"search", cmd_search},   {"select", cmd_select},
      {"retrain", cmd_retrain},   {"eval", cmd_eval},         {"predict", cmd_predict}, {"sample", cmd_sample},
      {"export", cmd_export}};
  try {
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      print_usage();
      return 0;
    }
    if (cmd == "--version") {
      std::printf("vpdarts %s (compiled for %s)\n", vpdarts::version_string, std::string(vpdarts::compiled_isa()).c_str());
      const vpdarts::fp32_gemm_choice g = vpdarts::fp32_gemm_automatic();
      std::printf("fp32 products: %s\n", g.gemm == vpdarts::fp32_gemm::onednn
                                              ? ("oneDNN (" + vpdarts::onednn_cpu_isa() + " kernels)").c_str()
                                              : "Eigen (built without oneDNN)");
      const vpdarts::bf16_support b = vpdarts::bf16_supported();
      std::printf("bf16 products: %s\n", b.available ? ("oneDNN (" + b.kernel + " kernels)").c_str() : "not available");
      return 0;
    }
    for (const auto& [name, run] : commands)
      if (cmd == name) return run(argc, argv);
    if (parallel().root())
      std::fprintf(stderr, "vpdarts: unknown command '%s' (commands: pretrain, search, select, retrain, eval, predict, export, sample; see vpdarts --help)\n",
                   cmd.c_str());
    return 2;
  } catch (const usage_error& e) {
    // flags are checked before any collective, alike on every process: process 0 says it, all exit 2
    const std::string what = e.what();
    if (parallel().root())
      std::fprintf(stderr, "%s%s\n", what.rfind("vpdarts", 0) == 0 ? "" : ("vpdarts " + cmd + ": ").c_str(), what.c_str());
    return 2;
  } catch (const std::exception& e) {
    // the library refuses sizes it can tell are too large; an allocation that fails anyway gets a hint, not just its type
    const std::string what = dynamic_cast<const std::bad_alloc*>(&e) == nullptr
                                 ? std::string(e.what())
                                 : std::string("out of memory (") + e.what() +
                                       "): this run needs more memory than the machine could give; a smaller --batch, "
                                       "fewer --prompts, fewer --train-images, a smaller --image, --recompute-mlp or --recompute-qkv need less";
    if (!parallel().active()) {
      std::fprintf(stderr, "vpdarts %s: %s\n", cmd.c_str(), what.c_str());
      return 1;
    }
#ifdef VPDARTS_WITH_MPI
    // a failure on one process must stop them all, not leave the others waiting in a collective
    std::fprintf(stderr, "vpdarts %s (process %d of %d): %s\n", cmd.c_str(), parallel().rank(), parallel().size(), what.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    return 1;
  }
}
