#pragma once
/// @file atomic_file.hpp
/// Atomic file writing: write a temporary file beside the target, then rename
/// it over the target, so a crash never leaves a half-written file.

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "../detail/format.hpp"
#include "../error.hpp"

namespace vpdarts::io {

/// Calls write(stream) on a temporary file in the target's folder, then renames it to `path`.
/// On any failure the temporary is removed and the target is untouched.
/// @throws io_error when the file cannot be created, written or renamed (and whatever `write` throws).
template <class Write>
void atomic_write(const std::filesystem::path& path, Write&& write, std::ios::openmode mode = std::ios::binary) {
  std::random_device rd;
  std::filesystem::path tmp = path;
  tmp += detail::cat(".tmp-", std::hex, rd());
  try {
    {
      std::ofstream out(tmp, mode | std::ios::out | std::ios::trunc);
      if (!out) throw io_error(detail::cat("atomic_write: cannot create '", tmp.string(), "' for '", path.string(), "'"));
      write(out);
      out.flush();
      if (!out) throw io_error(detail::cat("atomic_write: writing '", path.string(), "' failed (disk full?)"));
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw io_error(detail::cat("atomic_write: cannot rename '", tmp.string(), "' to '", path.string(), "': ", ec.message()));
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
}

}  // namespace vpdarts::io
