#pragma once
/// @file alpha_report.hpp
/// What a search leaves for a reader: the alpha trajectory as CSV (epoch,
/// layer, op, weight) and a labelled heatmap of softmax(alpha) (layers x
/// operators, the strongest operator of each layer framed, the value in
/// every cell).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "../detail/format.hpp"
#include "../error.hpp"
#include "../fwd.hpp"
#include "../io/atomic_file.hpp"
#include "png.hpp"

namespace vpdarts::report {

/// Writes `alpha.csv`: a header `epoch,layer,op,weight`, then one row per
/// epoch (1-based), layer (0-based) and operator of `history` (softmax(alpha) per epoch, L x K).
/// @throws value_error when a matrix does not have one column per operator name; io_error when the file cannot be written.
inline void write_alpha_csv(const std::filesystem::path& path, const std::vector<matrix<double>>& history,
                            const std::vector<std::string>& ops) {
  for (std::size_t e = 0; e < history.size(); ++e)
    if (history[e].cols() != static_cast<index>(ops.size()))
      throw value_error(detail::cat("write_alpha_csv: epoch ", e + 1, " has ", history[e].cols(), " columns for ",
                                    ops.size(), " operators"));
  io::atomic_write(
      path,
      [&](std::ostream& out) {
        out << "epoch,layer,op,weight\n";
        char buf[64];
        for (std::size_t e = 0; e < history.size(); ++e)
          for (index l = 0; l < history[e].rows(); ++l)
            for (index k = 0; k < history[e].cols(); ++k) {
              std::snprintf(buf, sizeof buf, "%.9g", history[e](l, k));
              out << e + 1 << ',' << l << ',' << ops[static_cast<std::size_t>(k)] << ',' << buf << '\n';
            }
      },
      std::ios::out);
}

namespace detail {

/// A perceptual colour ramp (dark purple, blue, teal, green, yellow) at t in [0, 1].
inline rgb ramp(double t) {
  static constexpr double stops[5][3] = {
      {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  t = std::clamp(t, 0.0, 1.0) * 4.0;
  const int i = std::min(3, static_cast<int>(t));
  const double f = t - i;
  rgb c;
  for (int ch = 0; ch < 3; ++ch)
    c[static_cast<std::size_t>(ch)] =
        static_cast<std::uint8_t>(std::lround(stops[i][ch] * (1 - f) + stops[i + 1][ch] * f));
  return c;
}

}  // namespace detail

/// Draws softmax(alpha) (L x K, rows summing to one) as a labelled heatmap:
/// a row per layer, a column per operator, the value printed in each cell,
/// the strongest operator of each layer framed, and the colour scale under it.
/// @throws value_error when the matrix is empty, does not match the names, or holds NaN.
inline canvas alpha_heatmap(const matrix<double>& weights, const std::vector<std::string>& ops,
                            const std::string& title = "softmax(alpha): layers x operators") {
  if (weights.size() == 0 || weights.cols() != static_cast<index>(ops.size()))
    throw value_error(vpdarts::detail::cat("alpha_heatmap: a ", weights.rows(), "x", weights.cols(), " matrix for ",
                                           ops.size(), " operator names"));
  if (!weights.allFinite()) throw value_error("alpha_heatmap: the weights hold NaN or Inf");
  const int s = 2, line = canvas::text_height(s), pad = 12;
  int label_w = 0;
  for (index l = 0; l < weights.rows(); ++l)
    label_w = std::max(label_w, canvas::text_width(vpdarts::detail::cat("layer ", l), s));
  int cell_w = canvas::text_width("0.000", s) + 2 * pad;
  for (const auto& n : ops) cell_w = std::max(cell_w, canvas::text_width(n, s) + 2 * pad);
  const int cell_h = line + 2 * pad;
  const int left = pad + label_w + pad, top = pad + line + pad + line + pad;
  const int grid_w = cell_w * static_cast<int>(ops.size()), grid_h = cell_h * static_cast<int>(weights.rows());
  const int legend_h = line + pad + 16 + pad;
  const int width = std::max(left + grid_w + pad, pad + canvas::text_width(title, s) + pad);
  canvas img(width, top + grid_h + pad + legend_h + pad);
  const rgb ink{20, 20, 20};
  img.text(pad, pad, title, ink, s);
  const double lo = weights.minCoeff(), hi = weights.maxCoeff();
  const double span = hi - lo > 1e-12 ? hi - lo : 1.0;
  for (std::size_t k = 0; k < ops.size(); ++k) {
    const int x = left + cell_w * static_cast<int>(k);
    img.text(x + (cell_w - canvas::text_width(ops[k], s)) / 2, pad + line + pad, ops[k], ink, s);
  }
  char buf[32];
  for (index l = 0; l < weights.rows(); ++l) {
    const int y = top + cell_h * static_cast<int>(l);
    img.text(pad, y + pad, vpdarts::detail::cat("layer ", l), ink, s);
    index best;
    weights.row(l).maxCoeff(&best);
    for (index k = 0; k < weights.cols(); ++k) {
      const int x = left + cell_w * static_cast<int>(k);
      const double t = hi - lo > 1e-12 ? (weights(l, k) - lo) / span : 0.5;
      const rgb c = detail::ramp(t);
      img.fill(x, y, cell_w, cell_h, c);
      const bool light = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 140;
      std::snprintf(buf, sizeof buf, "%.3f", weights(l, k));
      const rgb fg = light ? rgb{0, 0, 0} : rgb{255, 255, 255};
      img.text(x + (cell_w - canvas::text_width(buf, s)) / 2, y + pad, buf, fg, s);
      if (k == best) img.frame(x + 1, y + 1, cell_w - 2, cell_h - 2, 4, light ? rgb{0, 0, 0} : rgb{255, 255, 255});
    }
  }
  // legend: the colour scale from the smallest to the largest weight
  const int ly = top + grid_h + pad;
  std::snprintf(buf, sizeof buf, "%.3f", lo);
  const std::string lo_s = buf;
  std::snprintf(buf, sizeof buf, "%.3f", hi);
  const std::string hi_s = buf;
  const int bar_x = pad + canvas::text_width(lo_s, s) + pad;
  const int bar_w = std::max(60, std::min(grid_w, width - bar_x - canvas::text_width(hi_s, s) - 2 * pad));
  img.text(pad, ly + 2, lo_s, ink, s);
  for (int i = 0; i < bar_w; ++i) img.fill(bar_x + i, ly, 1, 16 + 4, detail::ramp(static_cast<double>(i) / (bar_w - 1)));
  img.text(bar_x + bar_w + pad, ly + 2, hi_s, ink, s);
  img.text(pad, ly + 16 + pad, "framed: the strongest operator of the layer", ink, s);
  return img;
}

/// alpha_heatmap(...) saved as a PNG file (atomically).
inline void write_alpha_heatmap(const std::filesystem::path& path, const matrix<double>& weights,
                                const std::vector<std::string>& ops) {
  alpha_heatmap(weights, ops).save_png(path);
}

}  // namespace vpdarts::report
