// The tool's --config reader: any file is applied to a command's flags or refused with a usage error.
#include "../../tools/vpdarts/flags.hpp"
#include "fuzz_common.hpp"

int fuzz_config(const std::uint8_t* data, std::size_t size) {
  const auto path = vpdarts_fuzz::write_input("config.json", data, size);
  std::string out = "x", order = "first";
  long epochs = 10, batch = 32;
  std::uint64_t seed = 0;
  double lr = 0.05;
  bool resume = false;
  vpdarts_cli::flags f("search", "fuzz");
  f.add("out", out, "");
  f.add("order", order, "");
  f.add("epochs", epochs, "");
  f.add("batch", batch, "");
  f.add("seed", seed, "");
  f.add("w-lr", lr, "");
  f.add_switch("resume", resume, "");
  std::string arg0 = "vpdarts", arg1 = "search", arg2 = "--config", arg3 = path.string();
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), arg3.data()};
  try {
    f.parse(4, argv, 2);
  } catch (const vpdarts_cli::usage_error&) {
  }
  return 0;
}
