#pragma once
/// @file synthetic.hpp
/// The built-in synthetic image dataset: procedurally drawn shapes, so that a
/// ViT can be pretrained and prompt-tuned on CPU with no download.
///
/// Ten classes, each a texture (horizontal, vertical and the two diagonal
/// stripes, checkerboard, dots, concentric rings, solid, grid, waves) filling
/// a random shape (disc, square, triangle, ring or cross) at a random
/// position, size and rotation, in random colours with a random frequency,
/// over a textured background with a distractor blob and pixel noise, so
/// accuracy is not trivially 100%. The two halves make a pretraining task
/// (classes 0-4) and a transfer task (5-9) that differs in its classes.
/// Image i of a given seed is the same whatever else is drawn.

#include <algorithm>
#include <array>
#include <cmath>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "../detail/format.hpp"
#include "../detail/memory.hpp"
#include "../error.hpp"
#include "image_batch.hpp"
#include "labelled_images.hpp"

namespace vpdarts::data {

/// What make_synthetic draws.
struct synthetic_options {
  index image = 32;       ///< side in pixels
  index channels = 3;     ///< 3 (RGB) or 1 (grey)
  index count = 1000;     ///< number of images (classes balanced, order shuffled)
  std::uint64_t seed = 0; ///< the dataset's seed
  /// Which of the ten classes, in label order; empty means all ten.
  std::vector<int> classes;
  /// Pixel noise standard deviation (on a 0..1 scale).
  double noise = 0.08;
};

/// The names of the ten synthetic classes.
inline const std::array<const char*, 10>& synthetic_class_names() {
  static const std::array<const char*, 10> names{"horizontal", "vertical", "diagonal", "antidiagonal", "checker",
                                                 "dots",       "rings",    "solid",    "grid",         "waves"};
  return names;
}

namespace detail {

inline bool inside_shape(int shape, double u, double v) {
  const double r2 = u * u + v * v;
  switch (shape) {
    case 0: return r2 < 1.0;
    case 1: return std::abs(u) < 0.8 && std::abs(v) < 0.8;
    case 2: return v > -0.75 && v < 0.9 && std::abs(u) < (0.9 - v) * 0.62;
    case 3: return r2 < 1.0 && r2 > 0.36;
    default: return (std::abs(u) < 0.3 && std::abs(v) < 1.0) || (std::abs(v) < 0.3 && std::abs(u) < 1.0);
  }
}

// Texture `cls` at shape-local coordinates (u, v) (shape radius 1) and image-global
// coordinates (gx, gy) in cycles: true where the second colour shows.
inline bool texture(int cls, double u, double v, double gx, double gy) {
  constexpr double tau = 2 * std::numbers::pi;
  switch (cls) {
    case 0: return std::sin(tau * gy) > 0;
    case 1: return std::sin(tau * gx) > 0;
    case 2: return std::sin(tau * (gx + gy) * 0.7071) > 0;
    case 3: return std::sin(tau * (gx - gy) * 0.7071) > 0;
    case 4: return (std::sin(tau * gx) > 0) != (std::sin(tau * gy) > 0);
    case 5: return std::cos(tau * gx) * std::cos(tau * gy) > 0.5;
    case 6: return std::sin(tau * 1.6 * std::sqrt(u * u + v * v)) > 0;
    case 7: return false;
    case 8: return std::cos(tau * gx) > 0.6 || std::cos(tau * gy) > 0.6;
    default: return std::sin(tau * (gy + 0.35 * std::sin(tau * gx))) > 0;
  }
}

}  // namespace detail

/// Draws a synthetic dataset. Pixels are normalised to about zero mean and unit spread ((x - 0.5) / 0.25).
/// @throws config_error for an image under 8 pixels, channels other than 1 or 3, count < 1, or a class outside 0-9.
template <Scalar S>
labelled_images<S> make_synthetic(const synthetic_options& o) {
  if (o.image < 8) throw config_error(vpdarts::detail::cat("make_synthetic: image size ", o.image, " is below 8"));
  if (o.channels != 1 && o.channels != 3)
    throw config_error(vpdarts::detail::cat("make_synthetic: channels is ", o.channels, ", must be 1 or 3"));
  if (o.count < 1) throw config_error(vpdarts::detail::cat("make_synthetic: count is ", o.count));
  std::vector<int> classes = o.classes;
  if (classes.empty())
    for (int k = 0; k < 10; ++k) classes.push_back(k);
  labelled_images<S> out;
  for (std::size_t i = 0; i < classes.size(); ++i) {
    const int k = classes[i];
    if (k < 0 || k > 9) throw config_error(vpdarts::detail::cat("make_synthetic: class ", k, " is outside 0-9"));
    if (std::find(classes.begin(), classes.begin() + static_cast<std::ptrdiff_t>(i), k) != classes.begin() + static_cast<std::ptrdiff_t>(i))
      throw config_error(vpdarts::detail::cat("make_synthetic: class ", k, " is listed twice"));
    out.class_names.push_back(synthetic_class_names()[static_cast<std::size_t>(k)]);
  }
  const index n = o.count, s = o.image, c = o.channels;
  vpdarts::detail::check_allocation(static_cast<double>(n) * static_cast<double>(c * s * s) * sizeof(S),
                                    vpdarts::detail::cat("make_synthetic: ", n, " images of ", c, "x", s, "x", s));
  out.images = image_batch<S>(n, c, s, s);
  out.labels.resize(static_cast<std::size_t>(n));
  // balanced labels in a seeded random order
  std::vector<int> order(static_cast<std::size_t>(n));
  for (index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = static_cast<int>(i % static_cast<index>(classes.size()));
  std::mt19937_64 shuffle_rng(o.seed * 0x9E3779B97F4A7C15ull + 1);
  std::shuffle(order.begin(), order.end(), shuffle_rng);
  std::vector<double> rgb(static_cast<std::size_t>(3 * s * s));
  for (index i = 0; i < n; ++i) {
    const int label = order[static_cast<std::size_t>(i)];
    out.labels[static_cast<std::size_t>(i)] = label;
    const int cls = classes[static_cast<std::size_t>(label)];
    std::mt19937_64 rng(o.seed * 1000003ull + static_cast<std::uint64_t>(i) * 7919ull + 17);
    std::uniform_real_distribution<double> u01(0.0, 1.0);
    std::normal_distribution<double> gauss(0.0, 1.0);
    // background: a base colour with a gradient and a low-frequency texture
    std::array<double, 3> bg{}, fg{}, fg2{}, blob{};
    for (auto& x : bg) x = 0.15 + 0.7 * u01(rng);
    double lum_bg = (bg[0] + bg[1] + bg[2]) / 3;
    do {
      for (auto& x : fg) x = u01(rng);
    } while (std::abs((fg[0] + fg[1] + fg[2]) / 3 - lum_bg) < 0.2);
    do {
      for (auto& x : fg2) x = u01(rng);
    } while (std::abs((fg2[0] + fg2[1] + fg2[2]) - (fg[0] + fg[1] + fg[2])) < 0.6);
    for (auto& x : blob) x = u01(rng);
    const int shape = static_cast<int>(u01(rng) * 5) % 5;
    const double gx = 0.3 * (u01(rng) - 0.5), gy = 0.3 * (u01(rng) - 0.5);
    const double tf = 0.5 + 1.5 * u01(rng), tp = 6.3 * u01(rng);
    const double cx = s * (0.35 + 0.3 * u01(rng)), cy = s * (0.35 + 0.3 * u01(rng));
    const double radius = s * (0.28 + 0.12 * u01(rng));
    const double angle = 2 * std::numbers::pi * u01(rng);
    const double period = 4.0 + 2.0 * u01(rng), phase_x = u01(rng), phase_y = u01(rng);
    const double bx = s * u01(rng), by = s * u01(rng), br = s * (0.05 + 0.06 * u01(rng));
    const double ca = std::cos(angle), sa = std::sin(angle);
    for (index y = 0; y < s; ++y)
      for (index x = 0; x < s; ++x) {
        const double px = static_cast<double>(x) + 0.5, py = static_cast<double>(y) + 0.5;
        const double tex = 0.08 * std::sin(tf * px / s * 6.3 + tp) * std::cos(tf * py / s * 6.3);
        std::array<double, 3> col;
        for (int ch = 0; ch < 3; ++ch) col[ch] = bg[ch] + gx * (px / s - 0.5) + gy * (py / s - 0.5) + tex;
        if ((px - bx) * (px - bx) + (py - by) * (py - by) < br * br) col = blob;
        const double dx = (px - cx) / radius, dy = (py - cy) / radius;
        const double uu = ca * dx + sa * dy, vv = -sa * dx + ca * dy;
        if (detail::inside_shape(shape, uu, vv))
          col = detail::texture(cls, uu, vv, px / period + phase_x, py / period + phase_y) ? fg2 : fg;
        for (int ch = 0; ch < 3; ++ch)
          rgb[static_cast<std::size_t>((ch * s + y) * s + x)] = col[ch] + o.noise * gauss(rng);
      }
    S* dst = out.images.pixels.row(i).data();
    for (index p = 0; p < s * s; ++p) {
      if (c == 3) {
        for (int ch = 0; ch < 3; ++ch)
          dst[ch * s * s + p] = static_cast<S>((rgb[static_cast<std::size_t>(ch * s * s + p)] - 0.5) / 0.25);
      } else {
        const double g = (rgb[static_cast<std::size_t>(p)] + rgb[static_cast<std::size_t>(s * s + p)] +
                          rgb[static_cast<std::size_t>(2 * s * s + p)]) / 3;
        dst[p] = static_cast<S>((g - 0.5) / 0.25);
      }
    }
  }
  return out;
}

}  // namespace vpdarts::data
