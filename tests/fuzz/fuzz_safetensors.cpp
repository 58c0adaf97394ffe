// The safetensors reader: any bytes parse or fail with an io_error; every tensor of a file that parses converts.
#include "fuzz_common.hpp"

int fuzz_safetensors(const std::uint8_t* data, std::size_t size) {
  try {
    const auto f = vpdarts::io::safetensors::parse(vpdarts_fuzz::bytes(data, size), "fuzz.safetensors");
    for (const auto& t : f.tensors()) {
      if (t.numel() > (1 << 20)) continue;
      try {
        std::vector<float> out(static_cast<std::size_t>(t.numel()));
        f.copy_to<float>(t, std::span<float>(out));
      } catch (const vpdarts::error&) {
        f.integers(t.name);  // an integer tensor reads as integers
      }
    }
  } catch (const vpdarts::error&) {
  }
  return 0;
}
