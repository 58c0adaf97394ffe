#pragma once
// Shared by the fuzz targets: a private scratch folder and a file written from the input.
// Each target defines `int fuzz_NAME(const std::uint8_t*, std::size_t)` (bad input must end in a
// vpdarts::error, never a crash, a hang or a sanitizer report); targets.hpp lists them all.
// fuzz.cpp is the one libFuzzer program for every target (VPDARTS_FUZZ_TARGET names the one it
// runs); replay.cpp runs every target over the seed files and the kept crashes with g++ (the
// fuzz_regressions ctest).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <vpdarts/vpdarts.hpp>

namespace vpdarts_fuzz {

/// A scratch folder of this process, created once.
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("vpdarts-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

/// Writes the input as `name` in the scratch folder (or a subfolder) and returns the path.
inline std::filesystem::path write_input(const std::string& name, const std::uint8_t* data, std::size_t size) {
  const auto path = scratch() / name;
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

/// The input as a byte vector.
inline std::vector<std::byte> bytes(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> b(size);
  for (std::size_t i = 0; i < size; ++i) b[i] = static_cast<std::byte>(data[i]);
  return b;
}

}  // namespace vpdarts_fuzz
