#pragma once
// Every fuzz target by name, for the libFuzzer program (fuzz.cpp) and the replay (replay.cpp).
#include <map>
#include <string>

#include "fuzz_common.hpp"
#include "fuzz_config.cpp"
#include "fuzz_genotype.cpp"
#include "fuzz_idx.cpp"
#include "fuzz_image_folder.cpp"
#include "fuzz_list.cpp"
#include "fuzz_model_file.cpp"
#include "fuzz_safetensors.cpp"

namespace vpdarts_fuzz {

using target = int (*)(const std::uint8_t*, std::size_t);

/// The targets; scripts/fuzz.sh lists the same names.
inline const std::map<std::string, target>& targets() {
  static const std::map<std::string, target> all{
      {"safetensors", fuzz_safetensors}, {"model_file", fuzz_model_file}, {"idx", fuzz_idx},
      {"image_folder", fuzz_image_folder}, {"genotype", fuzz_genotype}, {"config", fuzz_config}, {"list", fuzz_list}};
  return all;
}

/// The names, space-separated, for messages.
inline std::string target_names() {
  std::string s;
  for (const auto& [name, fn] : targets()) s += (s.empty() ? "" : " ") + name;
  return s;
}

}  // namespace vpdarts_fuzz
