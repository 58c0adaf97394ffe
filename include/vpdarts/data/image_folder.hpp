#pragma once
/// @file image_folder.hpp
/// Image datasets on disk, decoded once into a labelled set:
/// * a folder per class, `root/<class>/*.png|jpg|jpeg|bmp` (class names sorted,
///   files sorted), as torchvision's ImageFolder;
/// * a list file of `path label` lines (VPT's style), paths relative to the
///   list file's folder, labels 0..K-1.
/// Every image is converted to the model's channels, resized (bilinear) and
/// normalised. A file that is not a readable image is an error naming it,
/// unless `skip_bad` is set, in which case it is skipped and reported.

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../detail/format.hpp"
#include "../error.hpp"
#include "image_file.hpp"
#include "labelled_images.hpp"

namespace vpdarts::data {

/// How image_folder and image_list decode images.
struct folder_options {
  index image = 32;      ///< resized to image x image
  index channels = 3;    ///< 1 or 3
  normalization norm = normalization::imagenet();  ///< applied after resizing
  bool skip_bad = false; ///< skip (and report) unreadable files instead of failing
  /// Extensions of image files (lower case, with the dot); other files in a class folder are bad files.
  std::vector<std::string> extensions = {".png", ".jpg", ".jpeg", ".bmp"};
};

/// A decoded dataset and the files that were skipped (with why).
template <Scalar S>
struct file_dataset {
  labelled_images<S> data;           ///< the images that decoded, with labels and class names
  std::vector<std::string> skipped;  ///< "path: reason" for each skipped file (skip_bad only)
};

namespace detail {

inline std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

/// Decodes the listed files into a labelled set (skipping bad ones when asked).
template <Scalar S>
file_dataset<S> decode_files(const std::vector<std::pair<std::filesystem::path, int>>& files,
                             std::vector<std::string> class_names, const folder_options& o, const std::string& origin) {
  o.norm.check(o.channels);
  file_dataset<S> out;
  out.data.class_names = std::move(class_names);
  out.data.images = image_batch<S>(static_cast<index>(files.size()), o.channels, o.image, o.image);
  index n = 0;
  for (const auto& [path, label] : files) {
    try {
      const std::string ext = lower(path.extension().string());
      if (std::find(o.extensions.begin(), o.extensions.end(), ext) == o.extensions.end())
        throw io_error(vpdarts::detail::cat("'", path.string(), "' is not an image file (extensions: ",
                                            vpdarts::detail::join(o.extensions), ")"));
      load_image_into<S>(path, o.channels, o.image, o.norm,
                         std::span<S>(out.data.images.pixels.row(n).data(), static_cast<std::size_t>(out.data.images.pixels.cols())));
    } catch (const io_error& e) {
      if (!o.skip_bad) throw io_error(vpdarts::detail::cat(origin, ": ", e.message()));
      out.skipped.push_back(e.message());
      continue;
    }
    out.data.labels.push_back(label);
    ++n;
  }
  if (n == 0) throw io_error(vpdarts::detail::cat(origin, ": no readable image"));
  out.data.images.pixels.conservativeResize(n, Eigen::NoChange);
  for (std::size_t k = 0; k < out.data.class_names.size(); ++k)
    if (std::find(out.data.labels.begin(), out.data.labels.end(), static_cast<int>(k)) == out.data.labels.end())
      throw io_error(vpdarts::detail::cat(origin, ": class '", out.data.class_names[k], "' has no readable image"));
  return out;
}

}  // namespace detail

/// A folder per class: `root/<class>/<image>`; class names sorted, files sorted.
/// Hidden files (starting with '.') are ignored.
/// @throws io_error naming the folder or file: no such folder, no class folder, an
/// empty class, a file that is not a readable image (unless skip_bad).
template <Scalar S>
file_dataset<S> image_folder(const std::filesystem::path& root, const folder_options& o = {}) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(root)) throw io_error(vpdarts::detail::cat("image_folder: '", root.string(), "' is not a folder"));
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().front() != '.') dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  if (dirs.empty())
    throw io_error(vpdarts::detail::cat("image_folder: '", root.string(), "' has no class folder (expected root/<class>/<image>)"));
  std::vector<std::pair<fs::path, int>> files;
  std::vector<std::string> names;
  for (std::size_t k = 0; k < dirs.size(); ++k) {
    names.push_back(dirs[k].filename().string());
    // class names go into JSON (metrics.json, a model file's metadata): refused here, before any work, not after training
    if (!text::valid_utf8(names.back()))
      throw io_error(vpdarts::detail::cat("image_folder: the class folder '", dirs[k].string(),
                                          "' has a name that is not valid UTF-8 (class names are stored as JSON text); "
                                          "rename it"));
    std::vector<fs::path> in_class;
    // a dangling symbolic link is a file that cannot be read (refused, or skipped and reported with skip_bad), never
    // left out silently
    for (const auto& e : fs::directory_iterator(dirs[k]))
      if ((e.is_regular_file() || (e.is_symlink() && !e.exists())) && e.path().filename().string().front() != '.')
        in_class.push_back(e.path());
    if (in_class.empty())
      throw io_error(vpdarts::detail::cat("image_folder: the class folder '", dirs[k].string(), "' is empty"));
    std::sort(in_class.begin(), in_class.end());
    for (auto& p : in_class) files.emplace_back(std::move(p), static_cast<int>(k));
  }
  return detail::decode_files<S>(files, std::move(names), o, "image_folder '" + root.string() + "'");
}

/// The largest label a list file may use.
inline constexpr int max_list_label = 99999;

/// A list file of `path label` lines (labels 0..K-1, K <= 100000; paths relative to the
/// list file's folder; blank lines and lines starting with '#' are skipped).
/// The label is the last field; the path is everything before it, so it may
/// hold spaces, and may be quoted ("my file.png" 3) or end at a tab. Class
/// names are the labels as text.
/// @throws io_error naming the list file and line for a bad line, or the image file that is bad.
template <Scalar S>
file_dataset<S> image_list(const std::filesystem::path& list, const folder_options& o = {}) {
  if (std::filesystem::is_directory(list))
    throw io_error(vpdarts::detail::cat("image_list: '", list.string(), "' is a folder, not a list file"));
  std::ifstream in(list);
  if (!in) throw io_error(vpdarts::detail::cat("image_list: cannot open '", list.string(), "'"));
  std::vector<std::pair<std::filesystem::path, int>> files;
  int max_label = -1;
  std::string line;
  for (long no = 1; std::getline(in, line); ++no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#' || line.find_first_not_of(" \t") == std::string::npos) continue;
    auto bad = [&] {
      throw io_error(vpdarts::detail::cat("image_list: '", list.string(), "' line ", no, ": expected 'path label' with a label in 0..",
                                          max_list_label, ", got '", line, "'"));
    };
    const auto end = line.find_last_not_of(" \t");
    const auto cut = line.find_last_of(" \t", end);
    if (cut == std::string::npos) bad();
    const int v = vpdarts::detail::parse_number<int>(line.substr(cut + 1, end - cut)).value_or(-1);
    std::string path = line.substr(0, line.find_last_not_of(" \t", cut) + 1);
    path.erase(0, path.find_first_not_of(" \t"));
    if (path.size() >= 2 && path.front() == '"' && path.back() == '"') path = path.substr(1, path.size() - 2);
    if (path.empty() || v < 0 || v > max_list_label) bad();
    files.emplace_back(list.parent_path() / path, v);
    max_label = std::max(max_label, v);
  }
  if (files.empty()) throw io_error(vpdarts::detail::cat("image_list: '", list.string(), "' lists no image"));
  std::vector<std::string> names;
  for (int k = 0; k <= max_label; ++k) names.push_back(std::to_string(k));
  return detail::decode_files<S>(files, std::move(names), o, "image_list '" + list.string() + "'");
}

}  // namespace vpdarts::data
