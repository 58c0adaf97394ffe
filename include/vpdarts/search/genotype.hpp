#pragma once
/// @file genotype.hpp
/// A genotype: one fusion operator per layer, with the softmax weights the
/// search gave every candidate. Saved as JSON:
///
///     {"ops": ["concat", "add", ...],
///      "layers": [{"op": "concat", "weights": {"concat": 0.31, "add": 0.24, ...}}, ...]}

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../detail/format.hpp"
#include "../error.hpp"
#include "../io/atomic_file.hpp"
#include "../io/json.hpp"

namespace vpdarts {

/// One operator per layer, and the candidates' weights.
struct genotype {
  /// One layer's choice.
  struct layer {
    std::string op = {};  ///< The chosen operator's name.
    /// softmax(alpha_l), in the order of `ops` (empty for a hand-written genotype).
    std::vector<double> weights = {};
    /// Weight of the strongest operator minus the second (0 without weights).
    double margin() const {
      if (weights.size() < 2) return 0;
      std::vector<double> w = weights;
      std::partial_sort(w.begin(), w.begin() + 2, w.end(), std::greater<>());
      return w[0] - w[1];
    }
  };
  /// The candidate operator names (alpha's columns).
  std::vector<std::string> ops = {};
  std::vector<layer> layers = {};  ///< One entry per transformer block, first block first.

  /// The same operator at every one of `depth` layers.
  static genotype uniform(const std::string& op, std::size_t depth, std::vector<std::string> ops = {}) {
    genotype g;
    g.ops = ops.empty() ? std::vector<std::string>{op} : std::move(ops);
    g.layers.assign(depth, layer{op, {}});
    return g;
  }

  /// The chosen operator names, layer by layer.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& l : layers) out.push_back(l.op);
    return out;
  }
  /// "concat, add, affine, ...".
  std::string str() const {
    std::string s;
    for (const auto& l : layers) s += (s.empty() ? "" : ", ") + l.op;
    return s;
  }

  /// {"ops": [...], "layers": [{"op": name, "weights": {name: w, ...}}, ...]}, as genotype.json holds it.
  nlohmann::json to_json() const {
    nlohmann::json j;
    j["ops"] = ops;
    j["layers"] = nlohmann::json::array();
    for (const auto& l : layers) {
      nlohmann::json e{{"op", l.op}};
      if (!l.weights.empty()) {
        nlohmann::json w = nlohmann::json::object();
        for (std::size_t k = 0; k < l.weights.size() && k < ops.size(); ++k) w[ops[k]] = l.weights[k];
        e["weights"] = w;
      }
      j["layers"].push_back(e);
    }
    return j;
  }

  /// Parses a genotype. @throws io_error naming `origin` for malformed JSON or missing fields.
  static genotype from_json(const std::string& text, const std::string& origin = "genotype") {
    auto fail = [&](const std::string& why) -> void {
      throw io_error(detail::cat("genotype: '", origin, "': ", why));
    };
    const nlohmann::json j = io::parse_json(text, detail::cat("genotype: '", origin, "'"));
    genotype g;
    if (!j.is_object() || !j.contains("layers") || !j["layers"].is_array())
      fail("expected an object with a \"layers\" array");
    if (j.contains("ops")) {
      if (!j["ops"].is_array()) fail("\"ops\" is not an array");
      for (const auto& o : j["ops"]) {
        if (!o.is_string()) fail("\"ops\" holds a non-string");
        g.ops.push_back(o.get<std::string>());
      }
    }
    for (const auto& l : j["layers"]) {
      layer out;
      if (l.is_string()) out.op = l.get<std::string>();
      else if (l.is_object() && l.contains("op") && l["op"].is_string()) out.op = l["op"].get<std::string>();
      else fail(detail::cat("layer ", g.layers.size(), " has no \"op\" name"));
      if (l.is_object() && l.contains("weights")) {
        if (!l["weights"].is_object()) fail(detail::cat("layer ", g.layers.size(), ": \"weights\" is not an object"));
        for (const auto& name : g.ops) {
          if (!l["weights"].contains(name) || !l["weights"][name].is_number())
            fail(detail::cat("layer ", g.layers.size(), ": no weight for '", name, "'"));
          out.weights.push_back(l["weights"][name].get<double>());
        }
      }
      g.layers.push_back(std::move(out));
    }
    if (g.layers.empty()) fail("no layers");
    if (g.ops.empty()) {
      for (const auto& l : g.layers)
        if (std::find(g.ops.begin(), g.ops.end(), l.op) == g.ops.end()) g.ops.push_back(l.op);
    }
    return g;
  }

  /// Writes the JSON atomically. @throws io_error.
  void save(const std::filesystem::path& path) const {
    const std::string text = to_json().dump(1) + "\n";
    io::atomic_write(path, [&](std::ostream& out) { out << text; }, std::ios::out);
  }

  /// Reads a genotype file. @throws io_error when it cannot be read or is malformed.
  static genotype load(const std::filesystem::path& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec))
      throw io_error(detail::cat("genotype: '", path.string(), "' is a folder, not a genotype file (genotype.json)"));
    std::ifstream in(path);
    if (!in) throw io_error(detail::cat("genotype: cannot open '", path.string(), "'"));
    std::stringstream ss;
    ss << in.rdbuf();
    return from_json(ss.str(), path.string());
  }
};

}  // namespace vpdarts
