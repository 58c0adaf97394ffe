#pragma once
/// @file checkpoint.hpp
/// The resumable state of a search: what search() writes after every epoch
/// and reads back on resume, so that an interrupted search ends where an
/// uninterrupted one does. One safetensors file holds the model's state (w
/// and alpha), both optimisers' state, and, in its metadata, the settings
/// fingerprint (which must match on resume) and the loop's state (epoch, data
/// order, random generator, history).

#include <algorithm>
#include <filesystem>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../data/split.hpp"
#include "../detail/hash.hpp"
#include "../detail/parallel.hpp"
#include "../io/json.hpp"
#include "../io/metadata_keys.hpp"
#include "../io/safetensors.hpp"
#include "bilevel.hpp"
#include "prompted_vit.hpp"

namespace vpdarts {

/// A search's loop state after some epochs. The model's parameters and the
/// optimisers' state are saved and restored beside it (save(), load()).
struct search_state {
  long epoch = 0;                              ///< epochs done
  std::mt19937_64 rng;                         ///< the generator of the split and the shuffles
  data::row_split rows;                        ///< search-train and search-val rows, in their current order
  index val_pos = 0;                           ///< next search-val row to draw
  std::vector<matrix<double>> alpha_history;   ///< softmax(alpha) after every epoch
  std::vector<double> train_loss;              ///< per-epoch mean search-train loss
  std::vector<double> val_loss;                ///< per-epoch mean search-val loss (NaN in warm-up epochs)
  double seconds = 0;                          ///< wall-clock time of the epochs done
  std::vector<double> expected_cost;           ///< with a cost term: per epoch, the expected total cost (NaN in warm-up)
  std::vector<double> cost_lambda;             ///< with a cost term: per epoch, lambda after it

  /// Writes the state, the model's w and alpha, and both optimisers' state,
  /// atomically, with `fingerprint` (the settings a resume must share).
  /// @throws value_error when a tensor holds NaN or Inf (nothing is written then).
  template <Scalar S, OpList Ops>
  void save(const std::filesystem::path& path, prompted_vit<S, Ops>& model, bilevel_optimizer<S, Ops>& opt,
            const nlohmann::json& fingerprint) const {
    std::vector<io::tensor_view<S>> views;
    auto add = [&](std::string name, const matrix<S>& m) {
      views.push_back({std::move(name), {m.rows(), m.cols()},
                       std::span<const S>(m.data(), static_cast<std::size_t>(m.size()))});
    };
    for (parameter<S>* p : model.state_parameters()) {
      const std::vector<index> sh = p->shape();  // returned by value
      const std::vector<std::int64_t> shape(sh.begin(), sh.end());
      views.push_back({p->name(), shape, std::span<const S>(p->value().data(), static_cast<std::size_t>(p->size()))});
    }
    std::size_t i = 0;
    for (const auto& g : opt.w_optimizer().groups())
      for (parameter<S>* p : g.params) add("optim.w.momentum." + p->name(), opt.w_optimizer().momentum_buffers()[i++]);
    add("optim.alpha.m", opt.alpha_optimizer().first_moments()[0]);
    add("optim.alpha.v", opt.alpha_optimizer().second_moments()[0]);
    nlohmann::json history = nlohmann::json::array();
    for (const auto& a : alpha_history) history.push_back(io::matrix_to_json(a));
    std::ostringstream rng_text;
    rng_text << rng;
    const nlohmann::json state = {{"epoch", epoch},
                                  {"alpha_steps", opt.alpha_optimizer().steps()},
                                  {"rng", rng_text.str()},
                                  {"train_rows", rows.train},
                                  {"val_rows", rows.val},
                                  {"val_pos", val_pos},
                                  {"alpha_history", history},
                                  {"train_loss", io::numbers_to_json(train_loss)},
                                  {"val_loss", io::numbers_to_json(val_loss)},
                                  {"seconds", seconds}};
    nlohmann::json full = state;
    if (const cost_objective& c = opt.cost(); c.cost.size() > 0) {
      full["cost"] = {{"table", io::matrix_to_json(c.cost)},
                      {"fixed", c.fixed},
                      {"lambda", c.lambda},
                      {"expected_cost", io::numbers_to_json(expected_cost)},
                      {"cost_lambda", io::numbers_to_json(cost_lambda)}};
    }
    const std::string state_text = full.dump(), settings_text = fingerprint.dump();
    io::write_safetensors<S>(path, views,
                             {{io::keys::search_settings, settings_text},
                              {io::keys::search_state, state_text},
                              {io::keys::search_checksum, checksum(settings_text + state_text, views)},
                              {io::keys::genotype, model.derive().to_json().dump()},
                              {io::keys::prompts, std::to_string(model.options().prompts)},
                              {io::keys::search_threads, std::to_string(detail::max_threads())}});
  }

  /// The OpenMP threads the search that wrote the checkpoint at `path` ran with; empty when the
  /// file is missing, unreadable or older than the record. A resume that wants the bits of an
  /// uninterrupted run runs with as many threads. Never throws.
  static std::optional<int> threads_of(const std::filesystem::path& path) noexcept {
    try {
      std::error_code ec;
      if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
      const io::safetensors f = io::safetensors::read(path);
      const auto it = f.metadata().find(io::keys::search_threads);
      if (it == f.metadata().end()) return std::nullopt;
      const long n = std::stol(it->second);
      if (n < 1 || n > 4096) return std::nullopt;
      return static_cast<int>(n);
    } catch (...) {
      return std::nullopt;
    }
  }

  /// Reads what save() wrote into the model, the optimiser and a new state.
  /// The state must fit a search over `images` images split as `expected`
  /// (sizes), with at most `epochs` epochs. Nothing is changed unless it all fits.
  /// @throws io_error for a file that is not a search checkpoint of this model
  /// or holds an inconsistent state; config_error naming the settings that
  /// differ from `fingerprint`.
  template <Scalar S, OpList Ops>
  static search_state load(const std::filesystem::path& path, prompted_vit<S, Ops>& model,
                           bilevel_optimizer<S, Ops>& opt, const nlohmann::json& fingerprint, index images,
                           index n_val, long epochs) {
    return load(io::safetensors::read(path), model, opt, fingerprint, images, n_val, epochs);
  }

  /// load() of an already parsed file.
  template <Scalar S, OpList Ops>
  static search_state load(const io::safetensors& f, prompted_vit<S, Ops>& model, bilevel_optimizer<S, Ops>& opt,
                           const nlohmann::json& fingerprint, index images, index n_val, long epochs) {
    const std::filesystem::path path = f.origin();
    const std::string where = detail::cat("search: '", path.string(), "'");
    const auto& meta = f.metadata();
    if (!meta.count(io::keys::search_settings) || !meta.count(io::keys::search_state))
      throw io_error(detail::cat(where, " is not a search checkpoint (no vpdarts.search metadata)"));
    const nlohmann::json saved = io::parse_json(meta.at(io::keys::search_settings), where + " " + io::keys::search_settings);
    if (!saved.is_object()) throw io_error(detail::cat(where, ": the search settings are not a JSON object"));
    std::vector<std::string> differ;
    for (auto it = fingerprint.begin(); it != fingerprint.end(); ++it)
      if (!saved.contains(it.key()) && (it.key() == "precision" || it.key() == "fp32_products")) {
        // checkpoints of vpdarts 0.1 did not record them
      } else if (!saved.contains(it.key()) || saved[it.key()] != it.value())
        differ.push_back(detail::cat(it.key(), " (checkpoint ", saved.contains(it.key()) ? saved[it.key()].dump() : "none",
                                     ", now ", it.value().dump(), ")"));
    if (!differ.empty())
      throw config_error(detail::cat("search: cannot resume from '", path.string(), "': settings differ: ", detail::join(differ, "; ")));
    {  // the state and every tensor as written: an edited or damaged checkpoint is refused
      std::vector<io::tensor_view<S>> views;
      std::vector<std::vector<S>> values;
      values.reserve(f.tensors().size());
      for (const auto& t : f.tensors()) {
        values.emplace_back(static_cast<std::size_t>(t.numel()));
        f.copy_to<S>(t, std::span<S>(values.back()));
        views.push_back({t.name, t.shape, std::span<const S>(values.back())});
      }
      const auto it = meta.find(io::keys::search_checksum);
      if (it == meta.end() || it->second != checksum(meta.at(io::keys::search_settings) + meta.at(io::keys::search_state), views))
        throw io_error(detail::cat(where, ": the checkpoint's checksum does not match its contents (edited or damaged); "
                                          "start afresh without --resume"));
    }
    const nlohmann::json st = io::parse_json(meta.at(io::keys::search_state), where + " " + io::keys::search_state);
    if (!st.is_object()) throw io_error(detail::cat(where, ": the search state is not a JSON object"));
    search_state s;
    long alpha_steps = 0;
    std::optional<cost_objective> cost_table;  // set on the optimiser once everything is read
    try {
      s.epoch = st.at("epoch").get<long>();
      alpha_steps = st.at("alpha_steps").get<long>();
      std::istringstream rng_in(st.at("rng").get<std::string>());
      rng_in >> s.rng;
      if (!rng_in) throw io_error(detail::cat(where, ": unreadable random generator state"));
      s.rows.train = st.at("train_rows").get<std::vector<index>>();
      s.rows.val = st.at("val_rows").get<std::vector<index>>();
      s.val_pos = st.at("val_pos").get<index>();
      s.train_loss = io::numbers_from_json(st.at("train_loss"), where + " train_loss");
      s.val_loss = io::numbers_from_json(st.at("val_loss"), where + " val_loss");
      for (const auto& a : st.at("alpha_history"))
        s.alpha_history.push_back(io::matrix_from_json(a, model.config().depth, static_cast<index>(Ops::size),
                                                       where + ": an alpha_history entry"));
      s.seconds = st.at("seconds").get<double>();
      if (st.contains("cost") != (opt.cost().cost.size() > 0))
        throw io_error(detail::cat(where, st.contains("cost") ? ": the checkpoint's search had a cost term, this one has none"
                                                              : ": this search has a cost term, the checkpoint's had none"));
      if (st.contains("cost")) {
        const nlohmann::json& c = st.at("cost");
        cost_objective restored = opt.cost();
        restored.cost = io::matrix_from_json(c.at("table"), restored.cost.rows(), restored.cost.cols(), where + ": the cost table");
        restored.fixed = c.at("fixed").get<double>();
        restored.lambda = c.at("lambda").get<double>();
        s.expected_cost = io::numbers_from_json(c.at("expected_cost"), where + " expected_cost");
        s.cost_lambda = io::numbers_from_json(c.at("cost_lambda"), where + " cost_lambda");
        if (s.expected_cost.size() != static_cast<std::size_t>(s.epoch) || s.cost_lambda.size() != static_cast<std::size_t>(s.epoch))
          throw io_error(detail::cat(where, ": the cost history does not have one entry per epoch"));
        try {
          cost_table = std::move(restored);
          cost_table->check(model.config().depth, static_cast<index>(Ops::size), "search");
        } catch (const config_error& e) {
          throw io_error(detail::cat(where, ": ", e.message()));
        }
      }
      if (alpha_steps < 0) throw io_error(detail::cat(where, ": alpha_steps is ", alpha_steps));
    } catch (const nlohmann::json::exception& e) {
      throw io_error(detail::cat(where, ": unreadable search state: ", e.what()));
    }
    s.check(where, images, n_val, epochs);
    // the tensors, all checked before any is copied
    std::vector<parameter<S>*> state = model.state_parameters();
    std::vector<std::pair<const io::tensor_entry*, matrix<S>*>> extra;
    auto find = [&](const std::string& name, matrix<S>& m) {
      const io::tensor_entry* t = f.find(name);
      if (!t || t->numel() != m.size())
        throw io_error(detail::cat(where, ": missing or mis-shaped optimiser tensor '", name, "'"));
      extra.emplace_back(t, &m);
    };
    std::size_t i = 0;
    for (const auto& g : opt.w_optimizer().groups())
      for (parameter<S>* p : g.params) find("optim.w.momentum." + p->name(), opt.w_optimizer().momentum_buffers()[i++]);
    find("optim.alpha.m", opt.alpha_optimizer().first_moments()[0]);
    find("optim.alpha.v", opt.alpha_optimizer().second_moments()[0]);
    io::load_options lo;
    lo.allow_unexpected = true;  // the optimiser tensors
    io::load_parameters<S>(f, state, lo);
    for (auto& [t, m] : extra) f.copy_to<S>(*t, std::span<S>(m->data(), static_cast<std::size_t>(m->size())));
    opt.alpha_optimizer().set_steps(alpha_steps);
    if (cost_table) opt.set_cost(std::move(*cost_table));
    return s;
  }

 private:
  /// FNV-1a over the state text and every tensor (name, shape, values), in name order.
  template <Scalar S>
  static std::string checksum(const std::string& state_text, std::vector<io::tensor_view<S>> views) {
    std::sort(views.begin(), views.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    detail::fnv1a h;
    h.add(state_text);
    for (const auto& v : views) {
      h.add(v.name);
      h.add(v.shape.data(), v.shape.size() * sizeof(std::int64_t));
      h.add(v.values.data(), v.values.size() * sizeof(S));
    }
    return h.hex();
  }

  /// @throws io_error when the state cannot be the state of a search over `images` rows.
  void check(const std::string& where, index images, index n_val, long epochs) const {
    auto fail = [&](const std::string& why) { throw io_error(detail::cat(where, ": inconsistent search state: ", why)); };
    if (epoch < 1 || epoch > epochs) fail(detail::cat("epoch ", epoch, " is not in 1..", epochs));
    if (static_cast<index>(rows.val.size()) != n_val || static_cast<index>(rows.train.size()) != images - n_val)
      fail(detail::cat(rows.train.size(), " search-train and ", rows.val.size(), " search-val rows, not ", images - n_val,
                       " and ", n_val));
    std::vector<char> seen(static_cast<std::size_t>(images), 0);
    for (const auto* part : {&rows.train, &rows.val})
      for (index r : *part) {
        if (r < 0 || r >= images || seen[static_cast<std::size_t>(r)]) fail(detail::cat("row ", r, " is out of range or repeated"));
        seen[static_cast<std::size_t>(r)] = 1;
      }
    if (val_pos < 0 || val_pos > n_val) fail(detail::cat("val_pos ", val_pos, " is not in 0..", n_val));
    const auto e = static_cast<std::size_t>(epoch);
    if (alpha_history.size() != e || train_loss.size() != e || val_loss.size() != e)
      fail(detail::cat(alpha_history.size(), " alpha_history, ", train_loss.size(), " train_loss and ", val_loss.size(),
                       " val_loss entries for ", epoch, " epochs"));
    if (!(seconds >= 0)) fail(detail::cat("seconds is ", seconds));
  }
};

}  // namespace vpdarts
