#pragma once
/// @file atomic_file.hpp
/// Atomic file writing: write a temporary file beside the target, then rename
/// it over the target, so a crash never leaves a half-written file. The
/// temporary's name holds the writer's process id (`NAME.tmp-PID-RANDOM`, NAME
/// cut short where the whole would pass the file system's 255 bytes);
/// temporaries of the same target left by a process that no longer runs (a
/// kill -9 mid-write) are removed by the next write. Files that belong
/// together (a model and its metrics) are written under an atomic_group and
/// replace the old ones only once every new one is written. check_writable()
/// tells before any work whether a name can be written at all.

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../detail/format.hpp"
#include "../error.hpp"

namespace vpdarts::io {

/// The longest file name (one path component) and the longest path, in bytes, that Linux file systems take.
inline constexpr std::size_t max_name_bytes = 255, max_path_bytes = 4095;

namespace detail {

/// The longest suffix a temporary adds to its target's name: ".tmp-" PID (at most 10 digits) "-" 8 hex digits.
inline constexpr std::size_t temporary_suffix_bytes = 24;

/// The start of the names of `path`'s temporaries: its file name, cut so that a temporary's name still fits.
inline std::string temporary_prefix(const std::filesystem::path& path) {
  const std::string name = path.filename().string();
  return name.substr(0, std::min(name.size(), max_name_bytes - temporary_suffix_bytes)) + ".tmp-";
}

/// Removes `path`'s temporaries whose writer process has ended.
inline void remove_stale_temporaries(const std::filesystem::path& path) {
  std::error_code ec;
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const std::string prefix = temporary_prefix(path);
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

/// Checks, before any work, that a file `path` (and the temporary it is written through) can be named:
/// no component over max_name_bytes, the whole path (with a temporary's suffix) within max_path_bytes.
/// `flag` (say "--out") is named in the message.
/// @throws io_error naming the path, the part that is too long and the limit.
inline void check_writable(const std::filesystem::path& path, const std::string& flag = "") {
  const std::string who = flag.empty() ? std::string("check_writable") : flag;
  for (const auto& part : path) {
    const std::string name = part.string();
    if (name.size() > max_name_bytes)
      throw io_error(vpdarts::detail::cat(who, ": cannot write '", path.string(), "': its part '", name.substr(0, 40),
                                          "...' is ", name.size(), " bytes long, over the ", max_name_bytes,
                                          " a file name may have"));
  }
  const std::size_t longest = path.string().size() + detail::temporary_suffix_bytes;
  if (longest > max_path_bytes)
    throw io_error(vpdarts::detail::cat(who, ": cannot write '", path.string().substr(0, 60), "...' (", path.string().size(),
                                        " bytes): with the suffix of the temporary it is written through, the path is ",
                                        longest, " bytes, over the ", max_path_bytes, " a path may have"));
}

/// Files that must change together (a model and its metrics): while a group is open on this thread,
/// atomic_write leaves each file it writes as its temporary; commit() renames them all, in the order
/// they were written. A group that ends without commit() removes its temporaries, so the old files
/// stay as they were when any write of the group fails. Groups nest: the innermost one collects.
class atomic_group {
 public:
  atomic_group() : outer_(current()) { current() = this; }
  atomic_group(const atomic_group&) = delete;
  atomic_group& operator=(const atomic_group&) = delete;
  ~atomic_group() {
    current() = outer_;
    for (const auto& [tmp, target] : pending_) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
    }
  }
  /// The open group of this thread (null when none).
  static atomic_group*& current() noexcept {
    thread_local atomic_group* open = nullptr;
    return open;
  }
  /// Moves every written file to its target, in the order written.
  /// @throws io_error when a rename fails (the files before it are already in place).
  void commit() {
    while (!pending_.empty()) {
      const auto [tmp, target] = pending_.front();
      std::error_code ec;
      std::filesystem::rename(tmp, target, ec);
      if (ec)
        throw io_error(vpdarts::detail::cat("atomic_group: cannot rename '", tmp.string(), "' to '", target.string(),
                                            "': ", ec.message()));
      pending_.erase(pending_.begin());
    }
  }
  /// Called by atomic_write: `tmp` becomes `target` at commit().
  void add(std::filesystem::path tmp, std::filesystem::path target) { pending_.emplace_back(std::move(tmp), std::move(target)); }

 private:
  atomic_group* outer_;
  std::vector<std::pair<std::filesystem::path, std::filesystem::path>> pending_;
};

/// Calls write(stream) on a temporary file in the target's folder, then renames it to `path` (or, inside
/// an atomic_group, leaves the rename to the group's commit()).
/// On any failure the temporary is removed and the target is untouched.
/// @throws io_error when the file cannot be created, written or renamed (and whatever `write` throws).
template <class Write>
void atomic_write(const std::filesystem::path& path, Write&& write, std::ios::openmode mode = std::ios::binary) {
  detail::remove_stale_temporaries(path);
  std::random_device rd;
  std::filesystem::path tmp = path;
  tmp.replace_filename(vpdarts::detail::cat(detail::temporary_prefix(path), ::getpid(), "-", std::hex, rd()));
  try {
    {
      std::ofstream out(tmp, mode | std::ios::out | std::ios::trunc);
      if (!out) throw io_error(vpdarts::detail::cat("atomic_write: cannot create '", tmp.string(), "' for '", path.string(), "'"));
      write(out);
      out.flush();
      if (!out) throw io_error(vpdarts::detail::cat("atomic_write: writing '", path.string(), "' failed (disk full?)"));
    }
    if (atomic_group* group = atomic_group::current()) {
      group->add(tmp, path);
      return;
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
