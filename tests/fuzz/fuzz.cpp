// The libFuzzer program of every fuzz target (clang -fsanitize=fuzzer; scripts/fuzz.sh builds and
// runs it). One program instead of one per target: the library's templates are compiled once.
//   VPDARTS_FUZZ_TARGET=idx build-fuzz/fuzz CORPUS_DIR... [libFuzzer flags]
#include <cstdio>
#include <cstdlib>

#include "targets.hpp"

namespace {
vpdarts_fuzz::target g_target = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* name = std::getenv("VPDARTS_FUZZ_TARGET");
  const auto& all = vpdarts_fuzz::targets();
  const auto it = name ? all.find(name) : all.end();
  if (it == all.end()) {
    std::fprintf(stderr, "fuzz: VPDARTS_FUZZ_TARGET must name a target (%s), not '%s'\n",
                 vpdarts_fuzz::target_names().c_str(), name ? name : "(unset)");
    std::exit(2);
  }
  g_target = it->second;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) { return g_target(data, size); }
