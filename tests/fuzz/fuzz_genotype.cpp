// Genotype JSON, and a derived model built from it.
#include "fuzz_common.hpp"

int fuzz_genotype(const std::uint8_t* data, std::size_t size) {
  namespace vp = vpdarts;
  try {
    const auto g = vp::genotype::from_json(std::string(reinterpret_cast<const char*>(data), size), "fuzz.json");
    vp::prompted_vit<float> m(vp::vit<float>(vp::vit_config{8, 3, 4, 8, 2, 2, 16, 3}, 1), g, {.prompts = 2});
  } catch (const vp::error&) {
  }
  return 0;
}
