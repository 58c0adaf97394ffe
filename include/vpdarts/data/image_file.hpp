#pragma once
/// @file image_file.hpp
/// Reading image files (PNG, JPEG, BMP, and whatever else stb_image decodes)
/// into images and model-ready batches.

#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <stb_image.h>

#include "../detail/format.hpp"
#include "../detail/memory.hpp"
#include "../error.hpp"
#include "image_batch.hpp"
#include "transforms.hpp"

namespace vpdarts::data {

/// The most decoded bytes per file byte an image format can reach: deflate's
/// limit (1032:1) times the 8x of a 1-bit PNG decoded to bytes, rounded up.
/// RLE (TGA, BMP, PSD, HDR, PIC) and LZW (GIF) stay below it.
inline constexpr double max_image_expansion = 10000;

/// Decodes an image file as it is (its own size and channels, 0..1 scale).
/// The header's size is checked before decoding: against what the file's
/// bytes could hold (max_image_expansion; 21 bytes cannot hold an
/// 8448x10052 image, and decoding one spins for seconds on nothing) and
/// against the machine's memory.
/// @throws io_error naming the file when it cannot be read or is not an image stb_image decodes.
inline image load_image(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw io_error(vpdarts::detail::cat("load_image: '", path.string(), "' is a folder, not an image file"));
  if (std::filesystem::is_symlink(path, ec) && !std::filesystem::exists(path, ec))
    throw io_error(vpdarts::detail::cat("load_image: '", path.string(), "' is a symbolic link to '",
                                        std::filesystem::read_symlink(path, ec).string(), "', which does not exist"));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(vpdarts::detail::cat("load_image: cannot open '", path.string(), "'"));
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) throw io_error(vpdarts::detail::cat("load_image: '", path.string(), "' is empty"));
  if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw io_error(vpdarts::detail::cat("load_image: '", path.string(), "' is too large"));
  int w = 0, h = 0, c = 0;
  if (stbi_info_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &c) && w > 0 && h > 0 && c > 0) {
    const double decoded = static_cast<double>(w) * static_cast<double>(h) * static_cast<double>(c);
    if (decoded > max_image_expansion * static_cast<double>(bytes.size()) + (1 << 20))
      throw io_error(vpdarts::detail::cat("load_image: '", path.string(), "' says it is a ", w, "x", h, "x", c,
                                          " image, but its ", bytes.size(), " bytes cannot hold that much (no format "
                                          "compresses more than ", max_image_expansion, ":1): a corrupt or hostile header"));
    if (decoded * (1 + sizeof(float)) > vpdarts::detail::usable_memory_bytes())
      throw io_error(vpdarts::detail::cat("load_image: '", path.string(), "' is a ", w, "x", h, "x", c,
                                          " image, more than ", vpdarts::detail::usable_memory().what, " holds decoded"));
  }
  std::unique_ptr<stbi_uc, void (*)(void*)> px(
      stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &c, 0), stbi_image_free);
  if (!px) throw io_error(vpdarts::detail::cat("load_image: '", path.string(), "' is not a readable image: ", stbi_failure_reason()));
  return from_bytes(px.get(), h, w, c);
}

/// Decodes an image file and makes it what a model of `channels` x `size` x
/// `size` inputs reads: channels converted, bilinear resize, normalised.
/// @throws io_error naming the file; value_error for a bad normalisation.
template <Scalar S>
void load_image_into(const std::filesystem::path& path, index channels, index size, const normalization& norm,
                     std::span<S> row) {
  to_row<S>(resize(to_channels(load_image(path), channels), size, size), norm, row);
}

/// The files as one batch (channels x size x size each).
/// @throws io_error naming the first file that cannot be read.
template <Scalar S>
image_batch<S> load_images(std::span<const std::filesystem::path> paths, index channels, index size,
                           const normalization& norm) {
  image_batch<S> out(static_cast<index>(paths.size()), channels, size, size);
  for (std::size_t i = 0; i < paths.size(); ++i)
    load_image_into<S>(paths[i], channels, size, norm,
                       std::span<S>(out.pixels.row(static_cast<index>(i)).data(), static_cast<std::size_t>(out.pixels.cols())));
  return out;
}

}  // namespace vpdarts::data
