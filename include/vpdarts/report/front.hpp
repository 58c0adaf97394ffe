#pragma once
/// @file front.hpp
/// The accuracy-cost front of several genotypes (`vpdarts search --pareto K`): which
/// points no other beats on accuracy and cost at once, as a CSV table and as a
/// picture of two panels, accuracy against trainable values and against latency,
/// the front joined by a line.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../io/atomic_file.hpp"
#include "alpha_report.hpp"
#include "png.hpp"

namespace vpdarts::report {

/// One genotype on the front's picture.
struct front_point {
  std::string label = {};   ///< what the picture writes beside the point (the budget's number)
  double budget = 0;        ///< the budget it was searched within
  double accuracy = 0;      ///< its accuracy (search-val)
  double params = 0;        ///< its trainable values
  double latency_ms = 0;    ///< its batch-1 latency in ms
  std::string note = {};    ///< a last CSV column (the genotype's operators)
  bool on_front = false;    ///< set by mark_front()
};

/// Marks the points no other point dominates: none is at least as accurate, no costlier in
/// trainable values and in latency, and better in one of the three.
inline void mark_front(std::vector<front_point>& points) {
  for (auto& p : points) {
    p.on_front = true;
    for (const auto& q : points) {
      const bool no_worse = q.accuracy >= p.accuracy && q.params <= p.params && q.latency_ms <= p.latency_ms;
      const bool better = q.accuracy > p.accuracy || q.params < p.params || q.latency_ms < p.latency_ms;
      if (no_worse && better) {
        p.on_front = false;
        break;
      }
    }
  }
}

/// Writes `budget,accuracy,trainable_params,latency_ms,on_front,genotype` per point, atomically.
/// @throws io_error when the file cannot be written.
inline void write_front_csv(const std::filesystem::path& path, const std::vector<front_point>& points) {
  std::ostringstream out;
  out << std::setprecision(10) << "budget,accuracy,trainable_params,latency_ms,on_front,genotype\n";
  for (const auto& p : points)
    out << p.budget << ',' << p.accuracy << ',' << p.params << ',' << p.latency_ms << ',' << (p.on_front ? 1 : 0) << ",\""
        << p.note << "\"\n";
  const std::string text = out.str();
  io::atomic_write(path, [&](std::ostream& o) { o << text; }, std::ios::out);
}

/// The front as a picture: accuracy (y) against trainable values and against latency (x, two
/// panels), every point labelled; in each panel the points no other beats on accuracy and that
/// panel's cost are filled and joined in order of cost.
/// @throws value_error for no point or a value that is not finite.
inline canvas front_picture(std::vector<front_point> points, const std::string& title) {
  if (points.empty()) throw value_error("front_picture: no point to draw");
  for (const auto& p : points)
    if (!std::isfinite(p.accuracy) || !std::isfinite(p.params) || !std::isfinite(p.latency_ms))
      throw value_error(vpdarts::detail::cat("front_picture: point ", p.label, " holds a value that is not finite"));
  const int s = 2, line = canvas::text_height(s), pad = 14, plot_w = 380, plot_h = 300;
  const int axis_w = canvas::text_width("0.000", s);
  const int panel_w = axis_w + 8 + plot_w + 2 * pad;
  const int top = pad + line + pad + line + pad;
  const int width = std::max(pad + 2 * panel_w, 2 * pad + canvas::text_width(title, s));
  canvas img(width, top + plot_h + 3 * line + 2 * pad);
  const rgb ink{20, 20, 20}, grid{215, 215, 215}, off{150, 150, 150}, on = detail::series_colour(0);
  img.text(pad, pad, title, ink, s);
  img.text(pad, pad + line + pad / 2, "filled: on the front (no other point is as accurate and cheaper there)", ink, s);
  double a_lo = points[0].accuracy, a_hi = a_lo;
  for (const auto& p : points) a_lo = std::min(a_lo, p.accuracy), a_hi = std::max(a_hi, p.accuracy);
  if (a_hi - a_lo < 1e-6) a_lo -= 0.01, a_hi += 0.01;
  const double a_pad = 0.08 * (a_hi - a_lo);
  a_lo -= a_pad, a_hi += a_pad;
  auto fmt = [](double v, int digits) {
    std::ostringstream o;
    o << std::fixed << std::setprecision(digits) << v;
    return o.str();
  };
  auto panel = [&](int x0, const char* name, auto cost) {
    double lo = cost(points[0]), hi = lo;
    for (const auto& p : points) lo = std::min(lo, cost(p)), hi = std::max(hi, cost(p));
    if (hi - lo <= 1e-12 * std::max(1.0, std::abs(hi))) lo -= 0.5 * std::max(1e-9, std::abs(lo)), hi += 0.5 * std::max(1e-9, std::abs(hi));
    const double c_pad = 0.06 * (hi - lo);
    lo -= c_pad, hi += c_pad;
    const int left = x0 + axis_w + 8;
    auto px = [&](double c) { return left + static_cast<int>(std::lround((c - lo) / (hi - lo) * (plot_w - 1))); };
    auto py = [&](double a) { return top + static_cast<int>(std::lround((a_hi - a) / (a_hi - a_lo) * (plot_h - 1))); };
    for (int g = 0; g <= 4; ++g) {
      const double a = a_lo + (a_hi - a_lo) * g / 4.0;
      img.fill(left, py(a), plot_w, 1, grid);
      img.text(x0, py(a) - line / 2, fmt(a, 3), ink, s);
    }
    img.fill(left, top, 1, plot_h, ink);
    img.fill(left, top + plot_h - 1, plot_w, 1, ink);
    img.text(left, top + plot_h + 4, fmt(lo + c_pad, hi - lo < 10 ? 3 : 0), ink, s);
    const std::string hi_text = fmt(hi - c_pad, hi - lo < 10 ? 3 : 0);
    img.text(left + plot_w - canvas::text_width(hi_text, s), top + plot_h + 4, hi_text, ink, s);
    img.text(left + plot_w / 2 - canvas::text_width(name, s) / 2, top + plot_h + 4 + line, name, ink, s);
    // this panel's front: no other point is as accurate and cheaper in this panel's cost
    std::vector<bool> on2(points.size(), true);
    for (std::size_t i = 0; i < points.size(); ++i)
      for (const auto& q : points)
        if (q.accuracy >= points[i].accuracy && cost(q) <= cost(points[i]) &&
            (q.accuracy > points[i].accuracy || cost(q) < cost(points[i])))
          on2[i] = false;
    std::vector<front_point> front;
    for (std::size_t i = 0; i < points.size(); ++i)
      if (on2[i]) front.push_back(points[i]);
    std::sort(front.begin(), front.end(), [&](const auto& a, const auto& b) { return cost(a) < cost(b); });
    for (std::size_t i = 1; i < front.size(); ++i)
      img.line(px(cost(front[i - 1])), py(front[i - 1].accuracy), px(cost(front[i])), py(front[i].accuracy), 2, on);
    for (std::size_t i = 0; i < points.size(); ++i) {
      const int x = px(cost(points[i])), y = py(points[i].accuracy);
      if (on2[i]) img.fill(x - 5, y - 5, 11, 11, on);
      else img.frame(x - 5, y - 5, 11, 11, 2, off);
      img.text(x + 8, y - line / 2, points[i].label, on2[i] ? ink : off, s);
    }
  };
  panel(pad, "trainable values", [](const front_point& p) { return p.params; });
  panel(pad + panel_w, "latency, ms at batch 1", [](const front_point& p) { return p.latency_ms; });
  return img;
}

/// front_picture(...) saved as a PNG file (atomically).
inline void write_front_png(const std::filesystem::path& path, const std::vector<front_point>& points, const std::string& title) {
  front_picture(points, title).save_png(path);
}

}  // namespace vpdarts::report
