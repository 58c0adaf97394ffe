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

/// Inference timing of one model. The latency is a median with its spread, so that a machine
/// busy with other work shows as a wider spread rather than as another model.
struct inference_timing {
  double latency_ms_batch1 = 0;      ///< median time of one forward pass of one image
  double latency_ms_batch1_p10 = 0;  ///< its 10th percentile
  double latency_ms_batch1_p90 = 0;  ///< its 90th percentile
  int latency_runs = 0;              ///< timed passes behind the three (after warm-up passes)
  double throughput_batch64 = 0;     ///< images per second in forward passes of 64 images (their median)
  std::uint64_t multiply_adds_batch1 = 0;  ///< multiply-adds of one image's pass (tape::multiply_adds)
};

/// The wall times in seconds of `forward(tape, images)`, sorted, over `repeats` runs after `warmup`
/// runs, with no gradient recorded, on a tape running as `execution` says; `multiply_adds` (when set)
/// gets one pass's count.
template <Scalar S, class Forward>
std::vector<double> forward_seconds(Forward&& forward, const image_batch<S>& images, int repeats, int warmup = 1,
                                    const execution_config& execution = {}, std::uint64_t* multiply_adds = nullptr) {
  tape<S> t(execution);
  no_grad<S> guard(t);
  std::vector<double> times;
  for (int r = 0; r < warmup + repeats; ++r) {
    t.reset();
    const auto start = std::chrono::steady_clock::now();
    forward(t, images);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r >= warmup) times.push_back(s);
    if (multiply_adds != nullptr) *multiply_adds = t.multiply_adds();
  }
  std::sort(times.begin(), times.end());
  return times;
}

/// The median wall time in seconds of `forward(tape, images)` over `repeats` runs after one warm-up
/// run (forward_seconds).
template <Scalar S, class Forward>
double median_forward_seconds(Forward&& forward, const image_batch<S>& images, int repeats,
                              const execution_config& execution = {}) {
  const std::vector<double> times = forward_seconds<S>(forward, images, std::max(1, repeats), 1, execution);
  return times[times.size() / 2];
}

/// The value at fraction q (0..1) of sorted values, interpolated between neighbours.
inline double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double at = q * static_cast<double>(sorted.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(at), hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (at - static_cast<double>(lo));
}

/// Times `forward(tape, images) -> logits` on seeded random images of the given shape: latency at
/// batch 1 (median and 10th / 90th percentiles of `repeats1` runs after 3 warm-up runs; at least 50
/// are made by default) with one pass's multiply-adds, and throughput at batch 64 (median of
/// `repeats64` runs), on tapes running as `execution` says.
template <Scalar S, class Forward>
inference_timing time_inference(Forward&& forward, index channels, index image, int repeats1 = 50, int repeats64 = 3,
                                const execution_config& execution = {}) {
  std::mt19937_64 rng(0);
  std::normal_distribution<double> n01;
  auto random_batch = [&](index b) {
    image_batch<S> x(b, channels, image, image);
    for (index i = 0; i < x.pixels.size(); ++i) x.pixels.data()[i] = static_cast<S>(n01(rng));
    return x;
  };
  inference_timing r;
  const std::vector<double> one =
      forward_seconds<S>(forward, random_batch(1), std::max(1, repeats1), 3, execution, &r.multiply_adds_batch1);
  r.latency_ms_batch1 = 1e3 * quantile(one, 0.5);
  r.latency_ms_batch1_p10 = 1e3 * quantile(one, 0.1);
  r.latency_ms_batch1_p90 = 1e3 * quantile(one, 0.9);
  r.latency_runs = static_cast<int>(one.size());
  r.throughput_batch64 = 64.0 / median_forward_seconds<S>(forward, random_batch(64), std::max(1, repeats64), execution);
  return r;
}

/// Writes `j` as indented JSON, atomically. @throws io_error when the file cannot be written.
inline void write_json(const std::filesystem::path& path, const nlohmann::json& j) {
  io::atomic_write(path, [&](std::ostream& out) { out << j.dump(2) << '\n'; }, std::ios::out);
}

}  // namespace vpdarts::report
