#pragma once
/// @file png.hpp
/// A small RGB canvas with filled rectangles and text (stb_easy_font's
/// segments, scaled), saved as PNG through stb_image_write, atomically.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <stb_image_write.h>

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wconversion"
#endif
#include <stb_easy_font.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include "../detail/format.hpp"
#include "../error.hpp"
#include "../io/atomic_file.hpp"

namespace vpdarts::report {

/// An 8-bit RGB colour.
using rgb = std::array<std::uint8_t, 3>;

/// An RGB image in memory (row-major, 3 bytes a pixel).
class canvas {
 public:
  /// A width x height canvas filled with `background`. @throws value_error for a non-positive or huge size.
  canvas(int width, int height, rgb background = {255, 255, 255}) : w_(width), h_(height) {
    if (width <= 0 || height <= 0 || width > 16384 || height > 16384)
      throw value_error(detail::cat("canvas: size ", width, "x", height, " is not in 1..16384"));
    px_.resize(static_cast<std::size_t>(w_) * static_cast<std::size_t>(h_) * 3);
    fill(0, 0, w_, h_, background);
  }

  /// Width in pixels.
  int width() const noexcept { return w_; }
  /// Height in pixels.
  int height() const noexcept { return h_; }
  /// The colour at (x, y). @throws value_error outside the canvas.
  rgb at(int x, int y) const {
    if (x < 0 || y < 0 || x >= w_ || y >= h_)
      throw value_error(detail::cat("canvas::at: (", x, ", ", y, ") is outside ", w_, "x", h_));
    const std::size_t i = 3 * (static_cast<std::size_t>(y) * static_cast<std::size_t>(w_) + static_cast<std::size_t>(x));
    return {px_[i], px_[i + 1], px_[i + 2]};
  }

  /// Fills the rectangle [x, x+w) x [y, y+h), clipped to the canvas.
  void fill(int x, int y, int w, int h, rgb c) {
    const int x0 = std::max(x, 0), y0 = std::max(y, 0), x1 = std::min(x + w, w_), y1 = std::min(y + h, h_);
    for (int yy = y0; yy < y1; ++yy)
      for (int xx = x0; xx < x1; ++xx) {
        const std::size_t i = 3 * (static_cast<std::size_t>(yy) * static_cast<std::size_t>(w_) + static_cast<std::size_t>(xx));
        px_[i] = c[0];
        px_[i + 1] = c[1];
        px_[i + 2] = c[2];
      }
  }

  /// Draws the outline of a rectangle, `thickness` pixels wide, inside it.
  void frame(int x, int y, int w, int h, int thickness, rgb c) {
    fill(x, y, w, thickness, c);
    fill(x, y + h - thickness, w, thickness, c);
    fill(x, y, thickness, h, c);
    fill(x + w - thickness, y, thickness, h, c);
  }

  /// Draws a straight line from (x0, y0) to (x1, y1) with a square pen `thickness` pixels wide, clipped.
  void line(int x0, int y0, int x1, int y1, int thickness, rgb c) {
    const int steps = std::max(std::abs(x1 - x0), std::abs(y1 - y0));
    const int half = thickness / 2;
    for (int i = 0; i <= steps; ++i) {
      const double t = steps == 0 ? 0.0 : static_cast<double>(i) / steps;
      const int x = static_cast<int>(std::lround(x0 + t * (x1 - x0))), y = static_cast<int>(std::lround(y0 + t * (y1 - y0)));
      fill(x - half, y - half, thickness, thickness, c);
    }
  }

  /// Width in pixels of `text` drawn at `scale`.
  static int text_width(const std::string& text, int scale = 2) {
    std::string copy = text;
    return scale * stb_easy_font_width(copy.data());
  }
  /// Height in pixels of one line of text at `scale`.
  static int text_height(int scale = 2) { return scale * 12; }

  /// Draws `text` with its top-left corner at (x, y), each font unit `scale` pixels.
  void text(int x, int y, const std::string& text, rgb c, int scale = 2) {
    std::string copy = text;
    std::vector<char> buf(copy.size() * 1024 + 1024);  // room for the segments of any character
    unsigned char colour[4] = {c[0], c[1], c[2], 255};
    const int quads = stb_easy_font_print(0, 0, copy.data(), colour, buf.data(), static_cast<int>(buf.size()));
    const float* v = reinterpret_cast<const float*>(buf.data());
    for (int q = 0; q < quads; ++q) {
      const float* quad = v + 16 * q;  // four vertices of x, y, z, colour
      const float qx0 = std::min(quad[0], quad[8]), qx1 = std::max(quad[0], quad[8]);
      const float qy0 = std::min(quad[1], quad[9]), qy1 = std::max(quad[1], quad[9]);
      fill(x + static_cast<int>(qx0 * static_cast<float>(scale)), y + static_cast<int>(qy0 * static_cast<float>(scale)),
           static_cast<int>((qx1 - qx0) * static_cast<float>(scale)),
           static_cast<int>((qy1 - qy0) * static_cast<float>(scale)), c);
    }
  }

  /// Writes the canvas as a PNG file, atomically. @throws io_error when it cannot be written.
  void save_png(const std::filesystem::path& path) const { write_png_bytes(path, w_, h_, 3, px_.data()); }

  /// Writes 8-bit pixels (height x width x channels, channels 1 to 4) as a PNG file, atomically.
  /// @throws io_error when the image cannot be encoded or written.
  static void write_png_bytes(const std::filesystem::path& path, int width, int height, int channels,
                              const std::uint8_t* pixels) {
    std::string bytes;
    auto sink = [](void* ctx, void* data, int size) {
      static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), static_cast<std::size_t>(size));
    };
    if (channels < 1 || channels > 4 || !stbi_write_png_to_func(sink, &bytes, width, height, channels, pixels, channels * width))
      throw io_error(detail::cat("write_png: cannot encode '", path.string(), "' (", width, "x", height, "x", channels, ")"));
    io::atomic_write(path, [&](std::ostream& out) { out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); });
  }

 private:
  int w_, h_;
  std::vector<std::uint8_t> px_;
};

}  // namespace vpdarts::report
