#pragma once
/// @file atomic_file.hpp
/// Atomic file writing: write a temporary file beside the target, then rename
/// it over the target, so a crash never leaves a half-written file. The
/// temporary's name holds the writer's process id (`NAME.tmp-PID-RANDOM`);
/// temporaries of the same target left by a process that no longer runs (a
/// kill -9 mid-write) are removed by the next write.

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "../detail/format.hpp"
#include "../error.hpp"

namespace vpdarts::io {

namespace detail {

/// Removes `path`'s temporaries whose writer process has ended.
inline void remove_stale_temporaries(const std::filesystem::path& path) {
  std::error_code ec;
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const std::string prefix = path.filename().string() + ".tmp-";
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    const auto pid = vpdarts::detail::parse_number<long>(rest.substr(0, rest.find('-')));
    if (pid && *pid > 0 && *pid != static_cast<long>(::getpid()) && ::kill(static_cast<pid_t>(*pid), 0) == -1 && errno == ESRCH) {
      std::error_code ignored;
      std::filesystem::remove(it->path(), ignored);
    }
  }
}

}  // namespace detail

/// Calls write(stream) on a temporary file in the target's folder, then renames it to `path`.
/// On any failure the temporary is removed and the target is untouched.
/// @throws io_error when the file cannot be created, written or renamed (and whatever `write` throws).
template <class Write>
void atomic_write(const std::filesystem::path& path, Write&& write, std::ios::openmode mode = std::ios::binary) {
  detail::remove_stale_temporaries(path);
  std::random_device rd;
  std::filesystem::path tmp = path;
  tmp += vpdarts::detail::cat(".tmp-", ::getpid(), "-", std::hex, rd());
  try {
    {
      std::ofstream out(tmp, mode | std::ios::out | std::ios::trunc);
      if (!out) throw io_error(vpdarts::detail::cat("atomic_write: cannot create '", tmp.string(), "' for '", path.string(), "'"));
      write(out);
      out.flush();
      if (!out) throw io_error(vpdarts::detail::cat("atomic_write: writing '", path.string(), "' failed (disk full?)"));
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw io_error(vpdarts::detail::cat("atomic_write: cannot rename '", tmp.string(), "' to '", path.string(), "': ", ec.message()));
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
}

}  // namespace vpdarts::io
