#pragma once
/// @file transforms.hpp
/// Image transforms on xtensor arrays of shape (height, width, channels),
/// float values on a 0..1 scale: resizing (bilinear, half-pixel centres as
/// PyTorch's align_corners=False), channel conversion, and normalisation with
/// a per-channel mean and standard deviation, then packing into a batch row
/// (channels first, as the model reads it).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "../detail/format.hpp"
#include "../error.hpp"
#include "../fwd.hpp"
#include "image_batch.hpp"

namespace vpdarts::data {

/// An image: height x width x channels, values on a 0..1 scale.
using image = xt::xtensor<float, 3>;

/// Per-channel normalisation, x' = (x - mean) / std, on a 0..1 pixel scale.
/// One value applies to every channel.
struct normalization {
  std::vector<double> mean = {0.5};  ///< per channel, or one value for all
  std::vector<double> std = {0.25};  ///< per channel, or one value for all; each > 0

  /// The built-in synthetic data's: (x - 0.5) / 0.25.
  static normalization synthetic() { return {{0.5}, {0.25}}; }
  /// ImageNet's RGB statistics (timm's default).
  static normalization imagenet() { return {{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}}; }

  /// The mean and std of channel `ch` (one value serves every channel).
  std::pair<double, double> channel(std::size_t ch) const {
    return {mean[mean.size() == 1 ? 0 : ch], std[std.size() == 1 ? 0 : ch]};
  }
  /// "mean0,mean1,...;std0,std1,..." (what a model file's metadata stores).
  std::string str() const {
    std::ostringstream s;
    s.precision(9);
    for (std::size_t i = 0; i < mean.size(); ++i) s << (i ? "," : "") << mean[i];
    s << ';';
    for (std::size_t i = 0; i < std.size(); ++i) s << (i ? "," : "") << std[i];
    return s.str();
  }
  /// Parses str()'s form. @throws value_error for anything else or a non-positive std.
  static normalization parse(const std::string& text) {
    const auto semi = text.find(';');
    if (semi == std::string::npos) throw value_error(vpdarts::detail::cat("normalization: '", text, "' is not 'mean,...;std,...'"));
    auto numbers = [&](const std::string& part) {
      std::vector<double> out;
      std::stringstream in(part);
      std::string item;
      while (std::getline(in, item, ',')) {
        const auto v = vpdarts::detail::parse_number<double>(item);
        if (!v) throw value_error(vpdarts::detail::cat("normalization: '", item, "' in '", text, "' is not a number"));
        out.push_back(*v);
      }
      return out;
    };
    normalization n{numbers(text.substr(0, semi)), numbers(text.substr(semi + 1))};
    n.check(0);
    return n;
  }
  /// @throws value_error when the lists are empty, of other lengths than 1 or
  /// `channels` (0: not checked), or a std is not positive.
  void check(index channels) const {
    auto fits = [&](std::size_t n) { return n == 1 || channels == 0 || static_cast<index>(n) == channels; };
    if (mean.empty() || std.empty() || !fits(mean.size()) || !fits(std.size()))
      throw value_error(vpdarts::detail::cat("normalization: ", mean.size(), " means and ", std.size(), " stds for ", channels,
                                    " channels"));
    for (double s : std)
      if (!(s >= 1e-6 && s <= 1e6))
        throw value_error(vpdarts::detail::cat("normalization: a std of ", s, " (must be in [1e-6, 1e6]: pixels are on a 0..1 scale)"));
    for (double m : mean)
      if (!(std::abs(m) <= 1e6)) throw value_error(vpdarts::detail::cat("normalization: a mean of ", m, " (must be finite, |mean| <= 1e6)"));
  }
};

/// 8-bit pixels (height x width x channels, row-major, as stb_image returns them) as an image on a 0..1 scale.
inline image from_bytes(const std::uint8_t* pixels, index height, index width, index channels) {
  image out = xt::xtensor<float, 3>::from_shape(
      {static_cast<std::size_t>(height), static_cast<std::size_t>(width), static_cast<std::size_t>(channels)});
  const std::size_t n = out.size();
  for (std::size_t i = 0; i < n; ++i) out.data()[i] = static_cast<float>(pixels[i]) / 255.0f;
  return out;
}

/// Bilinear resize to height x width (half-pixel centres, edges clamped; PyTorch's
/// interpolate(mode="bilinear", align_corners=False) without antialiasing).
/// @throws value_error for an empty image or target.
inline image resize(const image& in, index height, index width) {
  const index ih = static_cast<index>(in.shape(0)), iw = static_cast<index>(in.shape(1)),
              c = static_cast<index>(in.shape(2));
  if (ih < 1 || iw < 1 || c < 1 || height < 1 || width < 1)
    throw value_error(vpdarts::detail::cat("resize: ", ih, "x", iw, "x", c, " to ", height, "x", width));
  if (ih == height && iw == width) return in;
  image out = xt::xtensor<float, 3>::from_shape(
      {static_cast<std::size_t>(height), static_cast<std::size_t>(width), static_cast<std::size_t>(c)});
  const double sy = static_cast<double>(ih) / static_cast<double>(height),
               sx = static_cast<double>(iw) / static_cast<double>(width);
  for (index y = 0; y < height; ++y) {
    const double fy = std::max(0.0, (static_cast<double>(y) + 0.5) * sy - 0.5);
    const index y0 = std::min(static_cast<index>(fy), ih - 1), y1 = std::min(y0 + 1, ih - 1);
    const float wy = static_cast<float>(fy - static_cast<double>(y0));
    for (index x = 0; x < width; ++x) {
      const double fx = std::max(0.0, (static_cast<double>(x) + 0.5) * sx - 0.5);
      const index x0 = std::min(static_cast<index>(fx), iw - 1), x1 = std::min(x0 + 1, iw - 1);
      const float wx = static_cast<float>(fx - static_cast<double>(x0));
      for (index ch = 0; ch < c; ++ch) {
        auto at = [&](index yy, index xx) {
          return in(static_cast<std::size_t>(yy), static_cast<std::size_t>(xx), static_cast<std::size_t>(ch));
        };
        const float top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx;
        const float bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx;
        out(static_cast<std::size_t>(y), static_cast<std::size_t>(x), static_cast<std::size_t>(ch)) =
            top * (1 - wy) + bottom * wy;
      }
    }
  }
  return out;
}

/// The image with `channels` channels: grey to RGB repeats the channel; RGB to
/// grey is ITU-R 601 luma; an alpha channel (2 or 4 channels) is dropped.
/// @throws value_error for a target other than 1 or 3 channels.
inline image to_channels(const image& in, index channels) {
  if (channels != 1 && channels != 3)
    throw value_error(vpdarts::detail::cat("to_channels: ", channels, " channels (1 or 3 are supported)"));
  const std::size_t h = in.shape(0), w = in.shape(1), c = in.shape(2);
  const std::size_t colour = c >= 3 ? 3 : 1;  // drop alpha
  if (static_cast<index>(c) == channels) return in;
  image out = xt::xtensor<float, 3>::from_shape({h, w, static_cast<std::size_t>(channels)});
  for (std::size_t y = 0; y < h; ++y)
    for (std::size_t x = 0; x < w; ++x) {
      if (channels == 3) {
        for (std::size_t ch = 0; ch < 3; ++ch) out(y, x, ch) = in(y, x, colour == 3 ? ch : 0);
      } else {
        out(y, x, 0) = colour == 3 ? 0.299f * in(y, x, 0) + 0.587f * in(y, x, 1) + 0.114f * in(y, x, 2) : in(y, x, 0);
      }
    }
  return out;
}

/// Writes the normalised image into one batch row, channels first (C x H x W).
/// @throws value_error when the row length is not H*W*C or the normalisation does not fit the channels.
template <Scalar S>
void to_row(const image& in, const normalization& norm, std::span<S> row) {
  const std::size_t h = in.shape(0), w = in.shape(1), c = in.shape(2);
  norm.check(static_cast<index>(c));
  if (row.size() != h * w * c)
    throw value_error(vpdarts::detail::cat("to_row: a ", h, "x", w, "x", c, " image into a row of ", row.size()));
  for (std::size_t ch = 0; ch < c; ++ch) {
    const auto [m, s] = norm.channel(ch);
    for (std::size_t y = 0; y < h; ++y)
      for (std::size_t x = 0; x < w; ++x)
        row[ch * h * w + y * w + x] = static_cast<S>((static_cast<double>(in(y, x, ch)) - m) / s);
  }
}

/// Training-time augmentation of a batch.
struct augment_options {
  index crop_padding = 0;  ///< pad every side by this many pixels (zeros, the normalised mean), then crop back at random
  bool flip = false;       ///< mirror left-right with probability 1/2

  /// True when some augmentation is switched on.
  bool active() const noexcept { return crop_padding > 0 || flip; }
};

/// Augments every image of a normalised batch in place (channels first), each
/// with its own random crop offset and flip drawn from `rng`. `scratch` is
/// reused between calls (no allocation once warm). When `x` holds rows
/// `first` .. `first + x.size()` of a batch of `total` rows (one process's
/// share in data-parallel training), the draws of all `total` images are
/// made in order and those of x's rows applied, so every process augments
/// its rows as one process would (total < 0: x is the whole batch).
/// @throws config_error for a negative padding, or one above half the image side (it could blank an image).
template <Scalar S>
void augment_batch(image_batch<S>& x, const augment_options& o, std::mt19937_64& rng, std::vector<S>& scratch,
                   index first = 0, index total = -1) {
  if (o.crop_padding < 0 || o.crop_padding > std::min(x.height, x.width) / 2)
    throw config_error(vpdarts::detail::cat("augment_batch: crop padding ", o.crop_padding, " is not in 0..", std::min(x.height, x.width) / 2,
                                            " (half the ", x.height, "x", x.width, " image)"));
  if (!o.active()) return;
  const std::size_t c = static_cast<std::size_t>(x.channels), h = static_cast<std::size_t>(x.height),
                    w = static_cast<std::size_t>(x.width), n = c * h * w;
  const std::array<std::size_t, 3> shape{c, h, w};
  scratch.resize(n);
  std::uniform_int_distribution<index> offset(0, 2 * o.crop_padding);
  std::bernoulli_distribution coin(0.5);
  if (total < 0) total = x.size();
  if (first < 0 || first + x.size() > total)
    throw config_error(vpdarts::detail::cat("augment_batch: rows ", first, "..", first + x.size(), " of a batch of ", total));
  for (index j = 0; j < total; ++j) {
    const index dy = o.crop_padding > 0 ? offset(rng) - o.crop_padding : 0;
    const index dx = o.crop_padding > 0 ? offset(rng) - o.crop_padding : 0;
    const bool mirror = o.flip && coin(rng);
    const index i = j - first;
    if (i < 0 || i >= x.size()) continue;
    S* row = x.pixels.row(i).data();
    std::copy(row, row + n, scratch.data());  // (copy-assigning one adaptor to another would rebind it, not copy)
    auto img = xt::adapt(row, n, xt::no_ownership(), shape);
    auto src = xt::adapt(static_cast<const S*>(scratch.data()), n, xt::no_ownership(), shape);
    for (std::size_t ch = 0; ch < c; ++ch)
      for (std::size_t y = 0; y < h; ++y) {
        const index sy = static_cast<index>(y) + dy;
        for (std::size_t xx = 0; xx < w; ++xx) {
          const index ox = mirror ? static_cast<index>(w - 1 - xx) : static_cast<index>(xx);
          const index sx = ox + dx;
          img(ch, y, xx) = sy >= 0 && sy < static_cast<index>(h) && sx >= 0 && sx < static_cast<index>(w)
                               ? src(ch, static_cast<std::size_t>(sy), static_cast<std::size_t>(sx))
                               : S(0);
        }
      }
  }
}

}  // namespace vpdarts::data
