#pragma once
/// @file metrics.hpp
/// What a run reports besides accuracy (docs/method.md, section 6): inference
/// latency at batch 1, throughput at batch 64, peak memory, and the
/// metrics.json file that carries them.

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../autodiff/tape.hpp"
#include "../data/image_batch.hpp"
#include "../io/atomic_file.hpp"

namespace vpdarts::report {

/// Peak resident memory of this process so far, in MiB (getrusage).
inline double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux reports KiB
}

/// Inference timing of one model.
struct inference_timing {
  double latency_ms_batch1 = 0;    ///< median time of one forward pass of one image
  double throughput_batch64 = 0;   ///< images per second in forward passes of 64 images
};

/// Median wall time in seconds of `forward(tape, images)` over `repeats` runs
/// after one warm-up run, with no gradient recorded, on a tape running as `execution` says.
template <Scalar S, class Forward>
double median_forward_seconds(Forward&& forward, const image_batch<S>& images, int repeats,
                              const execution_config& execution = {}) {
  tape<S> t(execution);
  no_grad<S> guard(t);
  std::vector<double> times;
  for (int r = 0; r <= repeats; ++r) {
    t.reset();
    const auto start = std::chrono::steady_clock::now();
    forward(t, images);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r > 0) times.push_back(s);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

/// Times `forward(tape, images) -> logits` on seeded random images of the given
/// shape: latency at batch 1 (median of `repeats1` runs) and throughput at batch 64
/// (median of `repeats64` runs), on tapes running as `execution` says.
template <Scalar S, class Forward>
inference_timing time_inference(Forward&& forward, index channels, index image, int repeats1 = 20, int repeats64 = 3,
                                const execution_config& execution = {}) {
  std::mt19937_64 rng(0);
  std::normal_distribution<double> n01;
  auto random_batch = [&](index b) {
    image_batch<S> x(b, channels, image, image);
    for (index i = 0; i < x.pixels.size(); ++i) x.pixels.data()[i] = static_cast<S>(n01(rng));
    return x;
  };
  inference_timing r;
  r.latency_ms_batch1 = 1e3 * median_forward_seconds<S>(forward, random_batch(1), std::max(1, repeats1), execution);
  r.throughput_batch64 = 64.0 / median_forward_seconds<S>(forward, random_batch(64), std::max(1, repeats64), execution);
  return r;
}

/// Writes `j` as indented JSON, atomically. @throws io_error when the file cannot be written.
inline void write_json(const std::filesystem::path& path, const nlohmann::json& j) {
  io::atomic_write(path, [&](std::ostream& out) { out << j.dump(2) << '\n'; }, std::ios::out);
}

}  // namespace vpdarts::report
