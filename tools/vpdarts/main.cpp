// vpdarts: the command-line tool. Pretrain a backbone, search the fusion
// operator of every layer, retrain the derived model (or a linear probe),
// evaluate it, classify image files, and write sample images, with no C++ to write.
//
//   vpdarts pretrain | search | retrain | eval | predict | sample  [flags]   (each has --help)
//
// Exit codes: 0 done, 1 the work failed (the message says why), 2 bad flags.
// Each command lives in cmd_<name>.cpp; the flags they share in settings.hpp.
#include <cstdio>
#include <string>

#include "settings.hpp"

namespace {

void print_usage() {
  std::printf(
      "vpdarts %s: visual prompt tuning with differentiable fusion search\n\n"
      "usage: vpdarts COMMAND [flags]\n\n"
      "commands:\n"
      "  pretrain   pretrain a ViT backbone from scratch on the synthetic task\n"
      "  search     DARTS search of the fusion operator of every layer (genotype, alpha trajectory, heatmap)\n"
      "  retrain    train the derived model of a genotype (or one operator everywhere, or a linear probe); test it\n"
      "  eval       evaluate a retrained model file\n"
      "  predict    classify image files with a retrained model file\n"
      "  sample     write synthetic images as PNG files (OUT/<class>/<n>.png)\n\n"
      "Each command takes --help. With no data flags, search and retrain use the built-in synthetic task and a\n"
      "built-in backbone (pretrained on first use and cached).\n",
      vpdarts::version_string);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace vpdarts_cli;
  vpdarts::exec_best_variant(argv);
  if (argc < 2) {
    print_usage();
    return 2;
  }
  const std::string cmd = argv[1];
  const std::pair<const char*, int (*)(int, char**)> commands[] = {
      {"pretrain", cmd_pretrain}, {"search", cmd_search},   {"retrain", cmd_retrain},
      {"eval", cmd_eval},         {"predict", cmd_predict}, {"sample", cmd_sample}};
  try {
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      print_usage();
      return 0;
    }
    if (cmd == "--version") {
      std::printf("vpdarts %s (compiled for %s)\n", vpdarts::version_string, std::string(vpdarts::compiled_isa()).c_str());
      return 0;
    }
    for (const auto& [name, run] : commands)
      if (cmd == name) return run(argc, argv);
    std::fprintf(stderr, "vpdarts: unknown command '%s' (commands: pretrain, search, retrain, eval, predict, sample; see vpdarts --help)\n",
                 cmd.c_str());
    return 2;
  } catch (const usage_error& e) {
    const std::string what = e.what();
    std::fprintf(stderr, "%s%s\n", what.rfind("vpdarts", 0) == 0 ? "" : ("vpdarts " + cmd + ": ").c_str(), what.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vpdarts %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
