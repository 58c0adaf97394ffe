#pragma once
// Helpers shared by the tests.
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <vpdarts/vpdarts.hpp>

namespace vpdarts_test {

/// Heap allocations (malloc calls, every thread) made by this process so far; see main.cpp.
std::size_t allocations();
/// False in sanitizer builds, whose allocator cannot be counted.
bool counting_allocations();

/// The small backbone the tests build: 8 px RGB images in 4 px patches (4 patches), 2 heads, an MLP
/// twice the width, 3 classes; `dim` and `depth` vary between tests.
inline vpdarts::vit_config tiny_vit(vpdarts::index dim = 8, vpdarts::index depth = 2) {
  return {.image = 8, .channels = 3, .patch = 4, .dim = dim, .depth = depth, .heads = 2, .mlp = 2 * dim, .classes = 3};
}

/// `count` synthetic 8 px images of the given classes (seed 4), for the tiny_vit() backbone.
inline vpdarts::data::labelled_images<float> tiny_data(vpdarts::index count, std::vector<int> classes = {5, 6, 7}) {
  return vpdarts::data::make_synthetic<float>({.image = 8, .count = count, .seed = 4, .classes = std::move(classes)});
}

/// A search of `epochs` epochs (one of them w-only warm-up) in batches of 6 with half the images as
/// search-val and no progress bar: what the tests of the tiny backbone run.
inline vpdarts::search_options quick_search(long epochs = 3) {
  vpdarts::search_options o;
  o.epochs = epochs;
  o.warmup_epochs = 1;
  o.batch = 6;
  o.val_fraction = 0.5;
  o.progress = false;
  return o;
}

/// A parameter of seeded random normal values.
template <class S>
vpdarts::parameter<S> random_parameter(std::string name, vpdarts::index rows, vpdarts::index cols, unsigned seed,
                                       double scale = 1.0, double mean = 0.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(mean, scale);
  vpdarts::matrix<S> m(rows, cols);
  for (vpdarts::index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<S>(n(rng));
  return vpdarts::parameter<S>(std::move(name), std::move(m));
}

/// A random matrix.
template <class S>
vpdarts::matrix<S> random_matrix(vpdarts::index rows, vpdarts::index cols, unsigned seed, double scale = 1.0) {
  return random_parameter<S>("m", rows, cols, seed, scale).value();
}

/// A fresh folder under the temporary directory, unique to this process and
/// object (ctest runs test processes side by side), removed at the end.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(const std::string& name) {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           (name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path operator/(const std::string& f) const { return path / f; }
};

/// Writes `bytes` to `p` as they are.
inline void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// The whole file.
inline std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace vpdarts_test
