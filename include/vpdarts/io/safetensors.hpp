#pragma once
/// @file safetensors.hpp
/// The safetensors format: an 8-byte little-endian header length n, n bytes of
/// JSON `{name: {"dtype", "shape", "data_offsets": [begin, end)}, "__metadata__": {...}}`,
/// then the raw little-endian data (offsets relative to the byte after the header).
///
/// Reading validates everything before any value is touched: a truncated file,
/// a header length past the end, non-JSON, an unknown dtype, offsets outside
/// the data, a size that disagrees with the shape, overlapping tensors or holes
/// each raise an io_error naming the file and the tensor. F32, F64, F16, BF16
/// convert to the caller's scalar; I64/I32/U8 read as integers. Writing
/// produces F32 (F64 for double values) and is atomic (a temporary file in the same folder, then rename).

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../detail/bf16.hpp"
#include "../detail/format.hpp"
#include "../error.hpp"
#include "json.hpp"
#include "../fwd.hpp"
#include "atomic_file.hpp"

namespace vpdarts::io {

/// One tensor of a safetensors file.
struct tensor_entry {
  std::string name;                 ///< the key in the header
  std::string dtype;                ///< "F32", "F64", "F16", "BF16", "I64", "I32", "U8", ...
  std::vector<std::int64_t> shape;  ///< empty for a scalar
  std::size_t begin = 0;            ///< first byte in the data section
  std::size_t end = 0;              ///< one past the last byte in the data section

  /// Number of elements (1 for a scalar).
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  /// "(3, 4)".
  std::string shape_str() const {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ")";
  }
};

namespace detail {

inline std::size_t dtype_size(const std::string& d) {
  static const std::map<std::string, std::size_t> sizes{{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                                                        {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};
  auto it = sizes.find(d);
  return it == sizes.end() ? 0 : it->second;
}

inline std::uint64_t read_u64_le(const std::byte* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}

template <class T>
T read_le(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) {
    auto* b = reinterpret_cast<std::byte*>(&v);
    std::reverse(b, b + sizeof(T));
  }
  return v;
}

inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}


}  // namespace detail

/// A parsed safetensors file held in memory.
class safetensors {
 public:
  /// Reads and validates a file. @throws io_error naming the file and the problem.
  static safetensors read(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw io_error(vpdarts::detail::cat("safetensors: cannot open '", path.string(), "'"));
    in.seekg(0, std::ios::end);
    const auto size = static_cast<std::size_t>(in.tellg());
    in.seekg(0);
    std::vector<std::byte> bytes(size);
    if (size && !in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size)))
      throw io_error(vpdarts::detail::cat("safetensors: cannot read '", path.string(), "'"));
    return parse(std::move(bytes), path.string());
  }

  /// Validates a file's bytes; `origin` names it in errors. @throws io_error.
  static safetensors parse(std::vector<std::byte> bytes, std::string origin) {
    safetensors f;
    f.origin_ = std::move(origin);
    f.bytes_ = std::move(bytes);
    f.validate();
    return f;
  }

  /// The file's name, as given.
  const std::string& origin() const noexcept { return origin_; }
  /// Every tensor, in data order.
  const std::vector<tensor_entry>& tensors() const noexcept { return tensors_; }
  /// The `__metadata__` strings.
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  /// The tensor of that name, or nullptr.
  const tensor_entry* find(const std::string& name) const {
    for (const auto& t : tensors_)
      if (t.name == name) return &t;
    return nullptr;
  }
  /// The tensor of that name. @throws io_error when absent.
  const tensor_entry& at(const std::string& name) const {
    if (const tensor_entry* t = find(name)) return *t;
    throw io_error(vpdarts::detail::cat("safetensors: '", origin_, "' has no tensor '", name, "'"));
  }

  /// A floating-point tensor's values, converted to S, in row-major order into `out` (numel values).
  /// @throws io_error for a non-float dtype or a size mismatch.
  template <Scalar S>
  void copy_to(const tensor_entry& t, std::span<S> out) const {
    if (static_cast<std::int64_t>(out.size()) != t.numel())
      throw io_error(vpdarts::detail::cat("safetensors: '", origin_, "': tensor '", t.name, "' has ", t.numel(),
                                          " values, the destination ", out.size()));
    const std::byte* p = data() + t.begin;
    const std::size_t n = out.size();
    if (t.dtype == "F32") {
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<S>(detail::read_le<float>(p + 4 * i));
    } else if (t.dtype == "F64") {
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<S>(detail::read_le<double>(p + 8 * i));
    } else if (t.dtype == "F16") {
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<S>(detail::half_to_float(detail::read_le<std::uint16_t>(p + 2 * i)));
    } else if (t.dtype == "BF16") {
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<S>(vpdarts::detail::from_bf16(detail::read_le<std::uint16_t>(p + 2 * i)));
    } else {
      throw io_error(vpdarts::detail::cat("safetensors: '", origin_, "': tensor '", t.name, "' is ", t.dtype,
                                          ", not a floating-point tensor (F32, F64, F16, BF16)"));
    }
  }

  /// A floating-point tensor as a rows x cols matrix (rows * cols must equal its size).
  template <Scalar S>
  matrix<S> to_matrix(const std::string& name, index rows, index cols) const {
    matrix<S> m(rows, cols);
    copy_to<S>(at(name), std::span<S>(m.data(), static_cast<std::size_t>(m.size())));
    return m;
  }

  /// An integer tensor (I64, I32, U8) as int64 values. @throws io_error for another dtype.
  std::vector<std::int64_t> integers(const std::string& name) const {
    const tensor_entry& t = at(name);
    std::vector<std::int64_t> out(static_cast<std::size_t>(t.numel()));
    const std::byte* p = data() + t.begin;
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (t.dtype == "I64") out[i] = detail::read_le<std::int64_t>(p + 8 * i);
      else if (t.dtype == "I32") out[i] = detail::read_le<std::int32_t>(p + 4 * i);
      else if (t.dtype == "U8") out[i] = static_cast<std::uint8_t>(p[i]);
      else
        throw io_error(vpdarts::detail::cat("safetensors: '", origin_, "': tensor '", name, "' is ", t.dtype,
                                            ", not an integer tensor (I64, I32, U8)"));
    }
    return out;
  }

 private:
  const std::byte* data() const { return bytes_.data() + 8 + header_len_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw io_error(vpdarts::detail::cat("safetensors: '", origin_, "': ", what));
  }

  void validate() {
    if (bytes_.size() < 8) fail(vpdarts::detail::cat("file is ", bytes_.size(), " bytes, too short for the 8-byte header length"));
    const std::uint64_t n = detail::read_u64_le(bytes_.data());
    if (n > bytes_.size() - 8)
      fail(vpdarts::detail::cat("header length ", n, " runs past the end of the file (", bytes_.size(), " bytes)"));
    header_len_ = static_cast<std::size_t>(n);
    const std::size_t body = bytes_.size() - 8 - header_len_;
    nlohmann::json header;
    try {
      header = parse_json(std::string_view(reinterpret_cast<const char*>(bytes_.data() + 8), header_len_), "header");
    } catch (const io_error& e) {
      fail(e.message());
    }
    if (!header.is_object()) fail("header is not a JSON object");
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (!it.value().is_object()) fail("__metadata__ is not an object");
        for (auto m = it.value().begin(); m != it.value().end(); ++m) {
          if (!m.value().is_string()) fail(vpdarts::detail::cat("__metadata__ value '", m.key(), "' is not a string"));
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const auto& v = it.value();
      tensor_entry t;
      t.name = it.key();
      auto bad = [&](const std::string& why) { fail(vpdarts::detail::cat("tensor '", t.name, "': ", why)); };
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
        bad("entry needs dtype, shape and data_offsets");
      if (!v["dtype"].is_string()) bad("dtype is not a string");
      t.dtype = v["dtype"].get<std::string>();
      const std::size_t item = detail::dtype_size(t.dtype);
      if (item == 0) bad(vpdarts::detail::cat("unknown dtype '", t.dtype, "'"));
      if (!v["shape"].is_array()) bad("shape is not an array");
      std::uint64_t numel = 1;
      for (const auto& d : v["shape"]) {
        if (!d.is_number_integer() || d.get<std::int64_t>() < 0) bad("shape holds a value that is not a size");
        const auto dim = d.get<std::uint64_t>();
        if (dim != 0 && numel > std::numeric_limits<std::uint64_t>::max() / 8 / dim) bad("shape is too large");
        numel *= dim;
        t.shape.push_back(static_cast<std::int64_t>(dim));
      }
      const auto& off = v["data_offsets"];
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_integer() || !off[1].is_number_integer() ||
          off[0].get<std::int64_t>() < 0 || off[1].get<std::int64_t>() < 0)
        bad("data_offsets is not a pair of non-negative integers");
      const auto b = off[0].get<std::uint64_t>(), e = off[1].get<std::uint64_t>();
      if (b > e || e > body)
        bad(vpdarts::detail::cat("data_offsets [", b, ", ", e, ") lie outside the ", body, " data bytes"));
      if (e - b != numel * item)
        bad(vpdarts::detail::cat("data_offsets span ", e - b, " bytes but ", t.dtype, " ", t.shape_str(), " needs ",
                                 numel * item));
      t.begin = static_cast<std::size_t>(b);
      t.end = static_cast<std::size_t>(e);
      tensors_.push_back(std::move(t));
    }
    std::sort(tensors_.begin(), tensors_.end(), [](const auto& x, const auto& y) { return x.begin < y.begin; });
    std::size_t pos = 0;
    for (const auto& t : tensors_) {
      if (t.begin < pos) fail(vpdarts::detail::cat("tensor '", t.name, "' overlaps the tensor before it"));
      if (t.begin > pos) fail(vpdarts::detail::cat("hole of ", t.begin - pos, " bytes before tensor '", t.name, "'"));
      pos = t.end;
    }
    if (pos != body) fail(vpdarts::detail::cat(body - pos, " bytes after the last tensor are not described"));
  }

  std::string origin_;
  std::vector<std::byte> bytes_;
  std::size_t header_len_ = 0;
  std::vector<tensor_entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// A tensor to write: a name, a shape and row-major values.
template <Scalar S>
struct tensor_view {
  std::string name;                 ///< the key to write
  std::vector<std::int64_t> shape;  ///< its product must equal values.size()
  std::span<const S> values;        ///< row-major; must stay valid until written
};

/// Writes the tensors (sorted by name; F64 for double values, F32 otherwise) and
/// metadata atomically: a crash leaves either the old file or the new one, never half of one.
/// @throws io_error when the file cannot be written, a name repeats, or a shape disagrees with its values;
/// value_error when a tensor holds NaN or Inf (nothing is written: a checkpoint never carries them).
template <Scalar S>
void write_safetensors(const std::filesystem::path& path, std::vector<tensor_view<S>> tensors,
                       const std::map<std::string, std::string>& metadata = {}) {
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  using stored = std::conditional_t<std::is_same_v<S, double>, double, float>;
  using bits_t = std::conditional_t<std::is_same_v<S, double>, std::uint64_t, std::uint32_t>;
  constexpr std::size_t item = sizeof(stored);
  nlohmann::json header = nlohmann::json::object();
  std::size_t offset = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (i > 0 && tensors[i - 1].name == t.name)
      throw io_error(vpdarts::detail::cat("write_safetensors: '", path.string(), "': tensor '", t.name, "' appears twice"));
    std::int64_t n = 1;
    for (auto d : t.shape) n *= d;
    if (n != static_cast<std::int64_t>(t.values.size()))
      throw io_error(vpdarts::detail::cat("write_safetensors: '", path.string(), "': tensor '", t.name, "' has ",
                                          t.values.size(), " values for a shape of ", n));
    if (!std::all_of(t.values.begin(), t.values.end(), [](S v) { return std::isfinite(v); }))
      throw value_error(vpdarts::detail::cat("write_safetensors: '", path.string(), "': tensor '", t.name,
                                             "' holds NaN or Inf; nothing written"));
    header[t.name] = {{"dtype", item == 8 ? "F64" : "F32"},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + item * t.values.size()}}};
    offset += item * t.values.size();
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  atomic_write(path, [&](std::ostream& out) {
    char len[8];
    std::uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xffu);
    out.write(len, 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    std::vector<char> buf;
    for (const auto& t : tensors) {
      buf.resize(item * t.values.size());
      for (std::size_t i = 0; i < t.values.size(); ++i) {
        const bits_t bits = std::bit_cast<bits_t>(static_cast<stored>(t.values[i]));
        for (std::size_t k = 0; k < item; ++k) buf[item * i + k] = static_cast<char>((bits >> (8 * k)) & 0xffu);
      }
      out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
    }
  });
}

}  // namespace vpdarts::io
