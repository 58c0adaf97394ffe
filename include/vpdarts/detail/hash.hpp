#pragma once
// A 64-bit FNV-1a hash of bytes, for fingerprints (the data and backbone a
// search ran on) and checksums (a search checkpoint's state). Not
// cryptographic: it catches a changed setting, a truncated edit or a flipped
// value, not a forger.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace vpdarts::detail {

/// Incremental FNV-1a (64 bit).
class fnv1a {
 public:
  /// Adds `n` bytes.
  void add(const void* data, std::size_t n) noexcept {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) h_ = (h_ ^ p[i]) * 0x100000001b3ull;
  }
  /// Adds the characters of `s` and its length.
  void add(std::string_view s) noexcept {
    add(s.data(), s.size());
    const std::uint64_t n = s.size();
    add(&n, sizeof n);
  }
  /// The hash so far as 16 hex digits.
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h_));
    return buf;
  }

 private:
  std::uint64_t h_ = 0xcbf29ce484222325ull;
};

}  // namespace vpdarts::detail
