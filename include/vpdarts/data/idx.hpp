#pragma once
/// @file idx.hpp
/// IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed (zlib): the
/// raw arrays, and labelled image sets with class filtering and first-N or
/// per-class sampling (VTAB-1k style).
///
/// An IDX file is: two zero bytes, a type byte (0x08: unsigned bytes), the
/// number of dimensions, each dimension as a big-endian 32-bit integer, then
/// the values. Every size is checked against the bytes actually present.

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "../detail/format.hpp"
#include "../error.hpp"
#include "labelled_images.hpp"
#include "transforms.hpp"

namespace vpdarts::data {

/// An IDX array of unsigned bytes: its dimensions and values (row-major).
struct idx_array {
  std::vector<std::int64_t> dims;    ///< e.g. {60000, 28, 28} for images, {60000} for labels
  std::vector<std::uint8_t> values;  ///< the product of dims values, row-major
};

/// The whole content of a file, decompressed when it is gzip (magic 1f 8b).
/// @throws io_error naming the file when it cannot be read or the gzip stream is corrupt or ends early.
inline std::vector<std::uint8_t> read_maybe_gzip(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(vpdarts::detail::cat("read: cannot open '", path.string(), "'"));
  std::vector<std::uint8_t> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (raw.size() < 2 || raw[0] != 0x1f || raw[1] != 0x8b) return raw;
  std::vector<std::uint8_t> out;
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK) throw io_error(vpdarts::detail::cat("read: zlib cannot start on '", path.string(), "'"));
  z.next_in = raw.data();
  z.avail_in = static_cast<uInt>(raw.size());
  std::array<std::uint8_t, 1 << 16> chunk;
  // A gzip file may hold several members one after another (gzip -d reads them all): each
  // Z_STREAM_END is followed by a reset while input remains.
  for (;;) {
    z.next_out = chunk.data();
    z.avail_out = static_cast<uInt>(chunk.size());
    const int rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      const std::string why = rc == Z_BUF_ERROR ? "the gzip stream ends early (truncated file?)"
                                                : vpdarts::detail::cat("corrupt gzip data (", z.msg ? z.msg : "zlib error", ")");
      inflateEnd(&z);
      throw io_error(vpdarts::detail::cat("read: '", path.string(), "': ", why));
    }
    out.insert(out.end(), chunk.data(), chunk.data() + (chunk.size() - z.avail_out));
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      if (inflateReset(&z) != Z_OK) {
        inflateEnd(&z);
        throw io_error(vpdarts::detail::cat("read: '", path.string(), "': corrupt gzip data after a member"));
      }
      continue;
    }
    if (z.avail_in == 0 && z.avail_out != 0) {
      inflateEnd(&z);
      throw io_error(vpdarts::detail::cat("read: '", path.string(), "': the gzip stream ends early (truncated file?)"));
    }
  }
  inflateEnd(&z);
  return out;
}

/// Reads an IDX file of unsigned bytes (type 0x08), plain or gzip.
/// @throws io_error naming the file for a bad magic number, another type, or sizes that disagree with the bytes.
inline idx_array read_idx(const std::filesystem::path& path) {
  const std::vector<std::uint8_t> b = read_maybe_gzip(path);
  auto bad = [&](const std::string& why) { return io_error(vpdarts::detail::cat("read_idx: '", path.string(), "': ", why)); };
  if (b.size() < 4) throw bad(vpdarts::detail::cat("only ", b.size(), " bytes, not an IDX file"));
  if (b[0] != 0 || b[1] != 0)
    throw bad(vpdarts::detail::cat("bad magic number (first bytes ", int(b[0]), " ", int(b[1]), ", expected 0 0)"));
  if (b[2] != 0x08) throw bad(vpdarts::detail::cat("value type 0x", std::hex, int(b[2]), " is not supported (only 0x08, unsigned bytes)"));
  const std::size_t nd = b[3];
  if (nd < 1 || nd > 4) throw bad(vpdarts::detail::cat(nd, " dimensions (1 to 4 are supported)"));
  if (b.size() < 4 + 4 * nd) throw bad("the header is cut short");
  idx_array a;
  std::uint64_t count = 1;
  for (std::size_t d = 0; d < nd; ++d) {
    const std::uint64_t v = (std::uint64_t{b[4 + 4 * d]} << 24) | (std::uint64_t{b[5 + 4 * d]} << 16) |
                            (std::uint64_t{b[6 + 4 * d]} << 8) | std::uint64_t{b[7 + 4 * d]};
    a.dims.push_back(static_cast<std::int64_t>(v));
    // checked before multiplying: a product that wraps around 2^64 could pass for the file's size
    if (v != 0 && count > (std::uint64_t{1} << 40) / v) throw bad("the dimensions are impossibly large");
    count *= v;
  }
  const std::uint64_t have = b.size() - 4 - 4 * nd;
  if (have != count)
    throw bad(vpdarts::detail::cat("the header says ", vpdarts::detail::join(a.dims, "x"), " = ", count, " values but the file holds ",
                                   have, have < count ? " (truncated)" : " (trailing bytes)"));
  a.values.assign(b.begin() + static_cast<std::ptrdiff_t>(4 + 4 * nd), b.end());
  return a;
}

/// How load_idx builds a labelled set.
struct idx_options {
  /// Keep only these labels, relabelled 0..k-1 in this order; empty keeps all.
  std::vector<int> classes = {};
  /// At most this many images per kept class (0: all), taken in file order, or at random with `sample_seed`.
  index per_class = 0;
  /// At most this many images in all (0: all), after the per-class limit.
  index limit = 0;
  /// Draw the per-class images at random (seeded) instead of the first ones.
  bool random_sample = false;
  std::uint64_t sample_seed = 0;  ///< seed of the random per-class draw
  /// Resize to image x image (0: keep the file's size).
  index image = 0;
  /// 1 (grey, as stored) or 3 (grey repeated).
  index channels = 1;
  normalization norm = {{0.5}, {0.5}};  ///< applied after resizing
  /// Names of the file's labels (0..9); empty: "0", "1", ...
  std::vector<std::string> label_names = {};
};

/// Fashion-MNIST's ten class names, in label order.
inline std::vector<std::string> fashion_mnist_class_names() {
  return {"t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"};
}

/// Fashion-MNIST's pixel mean and standard deviation (training set, 0..1 scale).
inline normalization fashion_mnist_normalization() { return {{0.2860}, {0.3530}}; }

/// A labelled image set from an IDX image file (N x H x W) and label file (N).
/// @throws io_error naming a file that is bad or when the two disagree in N;
/// config_error for a class that does not occur or a set that ends up empty.
template <Scalar S>
labelled_images<S> load_idx(const std::filesystem::path& images, const std::filesystem::path& labels, const idx_options& o = {}) {
  const idx_array im = read_idx(images), lb = read_idx(labels);
  if (im.dims.size() != 3)
    throw io_error(vpdarts::detail::cat("load_idx: '", images.string(), "' has ", im.dims.size(), " dimensions, expected 3 (N x H x W)"));
  if (lb.dims.size() != 1)
    throw io_error(vpdarts::detail::cat("load_idx: '", labels.string(), "' has ", lb.dims.size(), " dimensions, expected 1 (N)"));
  if (im.dims[0] != lb.dims[0])
    throw io_error(vpdarts::detail::cat("load_idx: '", images.string(), "' holds ", im.dims[0], " images but '", labels.string(),
                                        "' ", lb.dims[0], " labels"));
  const index n = im.dims[0], h = im.dims[1], w = im.dims[2];
  if (n < 1 || h < 1 || w < 1)
    throw io_error(vpdarts::detail::cat("load_idx: '", images.string(), "' holds ", n, " images of ", h, "x", w,
                                        ": nothing to load"));
  int max_label = 0;
  for (auto v : lb.values) max_label = std::max(max_label, int(v));
  std::vector<int> keep = o.classes;
  if (keep.empty())
    for (int c = 0; c <= max_label; ++c) keep.push_back(c);
  std::vector<int> slot(256, -1);
  for (std::size_t k = 0; k < keep.size(); ++k) {
    if (keep[k] < 0 || keep[k] > 255) throw config_error(vpdarts::detail::cat("load_idx: class ", keep[k], " is not a byte label"));
    if (slot[static_cast<std::size_t>(keep[k])] >= 0)
      throw config_error(vpdarts::detail::cat("load_idx: class ", keep[k], " is listed twice"));
    slot[static_cast<std::size_t>(keep[k])] = static_cast<int>(k);
  }
  std::vector<std::vector<index>> by_class(keep.size());
  for (index i = 0; i < n; ++i)
    if (int s = slot[lb.values[static_cast<std::size_t>(i)]]; s >= 0) by_class[static_cast<std::size_t>(s)].push_back(i);
  std::mt19937_64 rng(o.sample_seed);
  std::vector<index> rows;
  for (std::size_t k = 0; k < keep.size(); ++k) {
    auto& v = by_class[k];
    if (v.empty())
      throw config_error(vpdarts::detail::cat("load_idx: class ", keep[k], " has no image in '", labels.string(), "'"));
    if (o.random_sample) std::shuffle(v.begin(), v.end(), rng);
    if (o.per_class > 0 && static_cast<index>(v.size()) > o.per_class) v.resize(static_cast<std::size_t>(o.per_class));
    rows.insert(rows.end(), v.begin(), v.end());
  }
  std::sort(rows.begin(), rows.end());  // file order: classes interleave as in the file
  if (o.limit > 0 && static_cast<index>(rows.size()) > o.limit) rows.resize(static_cast<std::size_t>(o.limit));
  const index side = o.image > 0 ? o.image : h;
  if (o.image == 0 && h != w)
    throw config_error(vpdarts::detail::cat("load_idx: images are ", h, "x", w, "; give a square size to resize to"));
  labelled_images<S> out;
  out.images = image_batch<S>(static_cast<index>(rows.size()), o.channels, side, side);
  for (std::size_t k = 0; k < keep.size(); ++k)
    out.class_names.push_back(static_cast<std::size_t>(keep[k]) < o.label_names.size()
                                  ? o.label_names[static_cast<std::size_t>(keep[k])]
                                  : std::to_string(keep[k]));
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const std::uint8_t* px = im.values.data() + rows[r] * h * w;
    image img = resize(to_channels(from_bytes(px, h, w, 1), o.channels), side, side);
    to_row<S>(img, o.norm, std::span<S>(out.images.pixels.row(static_cast<index>(r)).data(),
                                         static_cast<std::size_t>(out.images.pixels.cols())));
    out.labels.push_back(slot[lb.values[static_cast<std::size_t>(rows[r])]]);
  }
  return out;
}

}  // namespace vpdarts::data
