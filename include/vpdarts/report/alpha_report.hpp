#pragma once
/// @file alpha_report.hpp
/// What a search leaves for a reader: the alpha trajectory as CSV (epoch,
/// layer, op, weight) and as a picture (a line per operator, a panel per layer),
/// and a labelled heatmap of softmax(alpha) (layers x operators, the strongest
/// operator of each layer framed, the value in every cell).

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

/// The colour of series k in a line chart (eight distinct colours, then again).
inline rgb series_colour(std::size_t k) {
  static constexpr rgb palette[8] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40},
                                     {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127}};
  return palette[k % 8];
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

/// Draws the alpha trajectory: one panel per layer, each operator's softmax(alpha)
/// weight over the epochs as a line (y from 0 to 1, x from the first epoch to the
/// last), one colour per operator with a legend at the top.
/// @throws value_error for no epoch, matrices of different shapes or that do not match the names, or NaN.
inline canvas alpha_trajectory(const std::vector<matrix<double>>& history, const std::vector<std::string>& ops,
                               const std::string& title = "softmax(alpha) over the epochs, per layer") {
  if (history.empty()) throw value_error("alpha_trajectory: no epoch to draw");
  const index layers = history[0].rows(), k_count = static_cast<index>(ops.size());
  for (std::size_t e = 0; e < history.size(); ++e) {
    if (history[e].rows() != layers || history[e].cols() != k_count || layers == 0)
      throw value_error(vpdarts::detail::cat("alpha_trajectory: epoch ", e + 1, " is ", history[e].rows(), "x",
                                             history[e].cols(), ", expected ", layers, "x", k_count, " (layers x operators)"));
    if (!history[e].allFinite()) throw value_error(vpdarts::detail::cat("alpha_trajectory: epoch ", e + 1, " holds NaN or Inf"));
  }
  const int s = 2, line = canvas::text_height(s), pad = 12, plot_w = 420, plot_h = 90;
  const int label_w = canvas::text_width(vpdarts::detail::cat("layer ", layers - 1), s);
  const int axis_w = canvas::text_width("1.0", s);
  const int left = pad + label_w + pad + axis_w + 6;
  // legend: a swatch and the name of every operator, wrapped to the plot's width
  const int legend_top = pad + line + pad;
  std::vector<std::pair<int, int>> at;  // (x, row) of every legend entry
  {
    int x = left, row = 0;
    for (const auto& n : ops) {
      const int w = 24 + 6 + canvas::text_width(n, s) + 2 * pad;
      if (x + w > left + plot_w && x > left) {
        x = left;
        ++row;
      }
      at.emplace_back(x, row);
      x += w;
    }
  }
  const int legend_rows = at.empty() ? 1 : at.back().second + 1;
  const int top = legend_top + legend_rows * (line + 6) + pad;
  const int panel_h = plot_h + pad + line / 2;
  const int footer = line + pad;
  const int width = std::max(left + plot_w + 2 * pad, pad + canvas::text_width(title, s) + pad);
  canvas img(width, top + panel_h * static_cast<int>(layers) + footer + pad);
  const rgb ink{20, 20, 20}, grid{215, 215, 215};
  img.text(pad, pad, title, ink, s);
  for (std::size_t k = 0; k < ops.size(); ++k) {
    const auto [x, row] = at[k];
    const int y = legend_top + row * (line + 6);
    img.fill(x, y + line / 2 - 2, 24, 5, detail::series_colour(k));
    img.text(x + 30, y, ops[k], ink, s);
  }
  const int epochs = static_cast<int>(history.size());
  auto px = [&](int e) { return left + (epochs == 1 ? plot_w / 2 : e * (plot_w - 1) / (epochs - 1)); };
  for (index l = 0; l < layers; ++l) {
    const int y0 = top + panel_h * static_cast<int>(l);
    auto py = [&](double w) { return y0 + static_cast<int>(std::lround((1.0 - std::clamp(w, 0.0, 1.0)) * (plot_h - 1))); };
    img.text(pad, y0 + plot_h / 2 - line / 2, vpdarts::detail::cat("layer ", l), ink, s);
    for (double g : {0.0, 0.5, 1.0}) img.fill(left, py(g), plot_w, 1, grid);
    img.text(left - 6 - axis_w, py(1.0) - line / 2 + 2, "1.0", ink, s);
    img.text(left - 6 - axis_w, py(0.0) - line / 2 - 2, "0.0", ink, s);
    img.fill(left, y0, 1, plot_h, ink);
    for (index k = 0; k < k_count; ++k) {
      const rgb c = detail::series_colour(static_cast<std::size_t>(k));
      for (int e = 0; e < epochs; ++e) {
        const int x = px(e), y = py(history[static_cast<std::size_t>(e)](l, k));
        if (e == 0) img.fill(x - 1, y - 1, 3, 3, c);
        else img.line(px(e - 1), py(history[static_cast<std::size_t>(e - 1)](l, k)), x, y, 3, c);
      }
    }
  }
  const int fy = top + panel_h * static_cast<int>(layers);
  img.text(left, fy, "epoch 1", ink, s);
  const std::string last = vpdarts::detail::cat("epoch ", epochs);
  if (epochs > 1) img.text(left + plot_w - canvas::text_width(last, s), fy, last, ink, s);
  return img;
}

/// alpha_trajectory(...) saved as a PNG file (atomically).
inline void write_alpha_trajectory(const std::filesystem::path& path, const std::vector<matrix<double>>& history,
                                   const std::vector<std::string>& ops) {
  alpha_trajectory(history, ops).save_png(path);
}

/// alpha_heatmap(...) saved as a PNG file (atomically).
inline void write_alpha_heatmap(const std::filesystem::path& path, const matrix<double>& weights,
                                const std::vector<std::string>& ops) {
  alpha_heatmap(weights, ops).save_png(path);
}

}  // namespace vpdarts::report
