#pragma once
/// @file search.hpp
/// The whole job as a library: split the training data into search-train and
/// search-val, run DARTS for some epochs (w-only warm-up first), record
/// softmax(alpha) every epoch and derive the genotype; then train a model
/// (the derived one, from fresh operator parameters) and evaluate it.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../data/synthetic.hpp"
#include "../data/transforms.hpp"
#include "../detail/progress.hpp"
#include "../io/checkpoint.hpp"
#include "../optim/schedule.hpp"
#include "../train/classifier.hpp"
#include "darts.hpp"

namespace vpdarts {

/// Settings of search().
struct search_options {
  darts_options darts = {};     ///< the DARTS step's settings
  long epochs = 10;             ///< epochs, each one pass over search-train
  long warmup_epochs = 2;       ///< epochs that train w only, before alpha moves
  index batch = 32;             ///< search-train and search-val batches have this size
  double val_fraction = 0.2;    ///< share of the training data held out as search-val (VTAB-1k: 200 of 1000)
  long lr_warmup_epochs = 1;    ///< linear warm-up of w's learning rate, then cosine
  /// When true, alpha's learning rate is 6 / (planned alpha steps), DARTS's lr x steps
  /// (DESIGN.md section 5); false keeps darts.alpha_lr.
  bool auto_alpha_lr = true;
  std::uint64_t seed = 0;       ///< the split and the shuffling
  bool progress = true;         ///< print a progress bar
  /// When set, the whole search state (w, alpha, both optimisers, the data
  /// order, the random generator and the history) is written here atomically
  /// after every epoch, in the model's scalar type.
  std::filesystem::path checkpoint = {};
  /// Continue from `checkpoint` when it exists (a fresh start otherwise): the
  /// result is the one an uninterrupted run gives. The settings must match.
  bool resume = false;
  /// Called after every epoch (after its checkpoint is written) with the epoch
  /// (1-based), softmax(alpha) and the epoch's mean losses.
  std::function<void(long epoch, const matrix<double>& alpha, double train_loss, double val_loss)> on_epoch = {};
};

/// What search() found.
struct search_result {
  genotype found;                             ///< argmax of alpha per layer, with the weights
  std::vector<matrix<double>> alpha_history;  ///< softmax(alpha) (L x K) after every epoch
  std::vector<double> train_loss;             ///< per-epoch mean search-train loss
  std::vector<double> val_loss;               ///< per-epoch mean search-val loss
  std::vector<std::string> warnings;          ///< layers whose two strongest operators are within 0.02
  double alpha_lr = 0;                        ///< alpha's learning rate as used
  double seconds = 0;                         ///< wall-clock time (the resumed part included)
  long resumed_from = 0;                      ///< epochs read from the checkpoint (0: a fresh start)
};

namespace detail {

/// The settings a resumed search must share with the run that wrote the checkpoint.
template <OpList Ops>
nlohmann::json search_fingerprint(const search_options& o, const vit_config& c, index prompts, index images) {
  return {{"epochs", o.epochs},
          {"warmup_epochs", o.warmup_epochs},
          {"batch", o.batch},
          {"val_fraction", o.val_fraction},
          {"lr_warmup_epochs", o.lr_warmup_epochs},
          {"seed", o.seed},
          {"order", o.darts.order == darts_order::first ? "first" : "second"},
          {"w_lr", o.darts.w_lr},
          {"w_momentum", o.darts.w_momentum},
          {"w_weight_decay", o.darts.w_weight_decay},
          {"grad_clip", o.darts.grad_clip},
          {"op_lr_mult", o.darts.op_lr_mult},
          {"head_lr_mult", o.darts.head_lr_mult},
          {"alpha_lr", o.darts.alpha_lr},
          {"alpha_weight_decay", o.darts.alpha_weight_decay},
          {"alpha_betas", {o.darts.alpha_beta1, o.darts.alpha_beta2}},
          {"ops", detail::join(Ops::names)},
          {"model", c.describe()},
          {"prompts", prompts},
          {"images", images}};
}

inline nlohmann::json losses_to_json(const std::vector<double>& v) {
  nlohmann::json out = nlohmann::json::array();
  for (double x : v) out.push_back(std::isfinite(x) ? nlohmann::json(x) : nlohmann::json());
  return out;
}

inline std::vector<double> losses_from_json(const nlohmann::json& j) {
  std::vector<double> out;
  for (const auto& x : j) out.push_back(x.is_null() ? std::numeric_limits<double>::quiet_NaN() : x.get<double>());
  return out;
}

/// The number of search-val images of `data` under `o.val_fraction`, after checking
/// that a batch fits both splits. @throws config_error naming `who` otherwise.
template <Scalar S>
index checked_val_count(const data::labelled_images<S>& data, const search_options& o, const char* who) {
  const index n = data.size();
  const index n_val = static_cast<index>(std::llround(static_cast<double>(n) * o.val_fraction));
  if (o.batch <= 0 || o.batch > std::min(n - n_val, n_val))
    throw config_error(cat(who, ": batch ", o.batch, " does not fit the splits (", n - n_val, " search-train, ", n_val,
                           " search-val images)"));
  return n_val;
}

/// A seeded split of rows 0..n-1 into n - n_val search-train rows and n_val search-val rows.
inline std::pair<std::vector<index>, std::vector<index>> split_rows(index n, index n_val, std::mt19937_64& rng) {
  std::vector<index> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  return {std::vector<index>(order.begin(), order.end() - n_val), std::vector<index>(order.end() - n_val, order.end())};
}

/// Writes the search state after `epoch` epochs (atomically).
/// @throws value_error when a tensor holds NaN or Inf (write_safetensors writes nothing then).
template <Scalar S, OpList Ops>
void save_search_checkpoint(const std::filesystem::path& path, prompted_vit<S, Ops>& model, darts<S, Ops>& d,
                            const nlohmann::json& fingerprint, long epoch, const std::mt19937_64& rng,
                            const std::vector<index>& train_rows, const std::vector<index>& val_rows,
                            index val_pos, const search_result& r, double seconds) {
  std::vector<parameter<S>*> state = model.state_parameters();
  std::vector<io::tensor_view<S>> views;
  auto add = [&](std::string name, const std::vector<index>& shape, const matrix<S>& m) {
    std::vector<std::int64_t> sh(shape.begin(), shape.end());
    views.push_back({std::move(name), sh, std::span<const S>(m.data(), static_cast<std::size_t>(m.size()))});
  };
  for (parameter<S>* p : state) add(p->name(), p->shape(), p->value());
  std::size_t i = 0;
  for (const auto& g : d.w_optimizer().groups())
    for (parameter<S>* p : g.params) {
      const matrix<S>& b = d.w_optimizer().momentum_buffers()[i++];
      add("optim.w.momentum." + p->name(), {b.rows(), b.cols()}, b);
    }
  const matrix<S>& m = d.alpha_optimizer().first_moments()[0];
  const matrix<S>& v = d.alpha_optimizer().second_moments()[0];
  add("optim.alpha.m", {m.rows(), m.cols()}, m);
  add("optim.alpha.v", {v.rows(), v.cols()}, v);
  nlohmann::json history = nlohmann::json::array();
  for (const auto& a : r.alpha_history) {
    nlohmann::json rows = nlohmann::json::array();
    for (index l = 0; l < a.rows(); ++l) {
      nlohmann::json row = nlohmann::json::array();
      for (index k = 0; k < a.cols(); ++k) row.push_back(a(l, k));
      rows.push_back(std::move(row));
    }
    history.push_back(std::move(rows));
  }
  std::ostringstream rng_text;
  rng_text << rng;
  const nlohmann::json meta_state = {{"epoch", epoch},
                                     {"alpha_steps", d.alpha_optimizer().steps()},
                                     {"rng", rng_text.str()},
                                     {"train_rows", train_rows},
                                     {"val_rows", val_rows},
                                     {"val_pos", val_pos},
                                     {"alpha_history", history},
                                     {"train_loss", losses_to_json(r.train_loss)},
                                     {"val_loss", losses_to_json(r.val_loss)},
                                     {"seconds", seconds}};
  io::write_safetensors<S>(path, std::move(views),
                           {{"vpdarts.search.settings", fingerprint.dump()},
                            {"vpdarts.search.state", meta_state.dump()},
                            {"vpdarts.genotype", model.derive().str()},
                            {"vpdarts.prompts", std::to_string(model.options().prompts)}});
}

/// Restores what save_search_checkpoint wrote; returns the number of epochs done.
/// @throws io_error for a file that is not a search checkpoint of this model;
/// config_error when the settings differ from the checkpoint's (naming them).
template <Scalar S, OpList Ops>
long load_search_checkpoint(const std::filesystem::path& path, prompted_vit<S, Ops>& model, darts<S, Ops>& d,
                            const nlohmann::json& fingerprint, std::mt19937_64& rng, std::vector<index>& train_rows,
                            std::vector<index>& val_rows, index& val_pos, search_result& r, double& seconds) {
  const io::safetensors f = io::safetensors::read(path);
  const auto& meta = f.metadata();
  if (!meta.count("vpdarts.search.settings") || !meta.count("vpdarts.search.state"))
    throw io_error(cat("search: '", path.string(), "' is not a search checkpoint (no vpdarts.search metadata)"));
  nlohmann::json saved, st;
  try {
    saved = nlohmann::json::parse(meta.at("vpdarts.search.settings"));
    st = nlohmann::json::parse(meta.at("vpdarts.search.state"));
  } catch (const nlohmann::json::exception& e) {
    throw io_error(cat("search: '", path.string(), "': unreadable search metadata: ", e.what()));
  }
  std::vector<std::string> differ;
  for (auto it = fingerprint.begin(); it != fingerprint.end(); ++it)
    if (!saved.contains(it.key()) || saved[it.key()] != it.value())
      differ.push_back(cat(it.key(), " (checkpoint ", saved.contains(it.key()) ? saved[it.key()].dump() : "none",
                           ", now ", it.value().dump(), ")"));
  if (!differ.empty())
    throw config_error(cat("search: cannot resume from '", path.string(), "': settings differ: ", join(differ, "; ")));
  std::vector<parameter<S>*> state = model.state_parameters();
  io::load_options lo;
  lo.allow_unexpected = true;  // the optimiser tensors
  io::load_parameters<S>(f, state, lo);
  std::size_t i = 0;
  auto read_into = [&](const std::string& name, matrix<S>& m) {
    const io::tensor_entry* t = f.find(name);
    if (!t || t->numel() != m.size())
      throw io_error(cat("search: '", path.string(), "': missing or mis-shaped optimiser tensor '", name, "'"));
    f.copy_to<S>(*t, std::span<S>(m.data(), static_cast<std::size_t>(m.size())));
  };
  for (const auto& g : d.w_optimizer().groups())
    for (parameter<S>* p : g.params) read_into("optim.w.momentum." + p->name(), d.w_optimizer().momentum_buffers()[i++]);
  read_into("optim.alpha.m", d.alpha_optimizer().first_moments()[0]);
  read_into("optim.alpha.v", d.alpha_optimizer().second_moments()[0]);
  try {
    d.alpha_optimizer().set_steps(st.at("alpha_steps").get<long>());
    std::istringstream(st.at("rng").get<std::string>()) >> rng;
    train_rows = st.at("train_rows").get<std::vector<index>>();
    val_rows = st.at("val_rows").get<std::vector<index>>();
    val_pos = st.at("val_pos").get<index>();
    r.train_loss = losses_from_json(st.at("train_loss"));
    r.val_loss = losses_from_json(st.at("val_loss"));
    r.alpha_history.clear();
    for (const auto& a : st.at("alpha_history")) {
      matrix<double> m(static_cast<index>(a.size()), static_cast<index>(a.at(0).size()));
      for (index l = 0; l < m.rows(); ++l)
        for (index k = 0; k < m.cols(); ++k) m(l, k) = a.at(static_cast<std::size_t>(l)).at(static_cast<std::size_t>(k)).get<double>();
      r.alpha_history.push_back(std::move(m));
    }
    seconds = st.at("seconds").get<double>();
    return st.at("epoch").get<long>();
  } catch (const nlohmann::json::exception& e) {
    throw io_error(cat("search: '", path.string(), "': unreadable search state: ", e.what()));
  }
}

}  // namespace detail

/// Runs a DARTS search on `data` (split seeded into search-train and search-val).
/// @throws config_error for a derived model, fewer than two classes, or a batch larger than a split;
/// value_error when a loss becomes NaN or Inf (naming the epoch and step).
template <Scalar S, OpList Ops>
search_result search(prompted_vit<S, Ops>& model, const data::labelled_images<S>& data, search_options o) {
  if (data.classes() < 2)
    throw config_error(detail::cat("search: the dataset has ", data.classes(), " class; at least two are needed"));
  const index n = data.size();
  const index n_val = detail::checked_val_count(data, o, "search");
  const index n_train = n - n_val;
  if (o.epochs <= o.warmup_epochs)
    throw config_error(detail::cat("search: ", o.epochs, " epochs leave no alpha step after ", o.warmup_epochs,
                                   " warm-up epochs"));
  std::mt19937_64 rng(o.seed);
  auto [train_rows, val_rows] = detail::split_rows(n, n_val, rng);
  // Every search-train image once per epoch; search-val batches are drawn in
  // turn from the shuffled search-val split, reshuffled whenever it runs out.
  const long steps = static_cast<long>(n_train / o.batch);
  index val_pos = n_val;
  search_result r;
  if (o.auto_alpha_lr) o.darts.alpha_lr = 6.0 / static_cast<double>(steps * (o.epochs - o.warmup_epochs));
  r.alpha_lr = o.darts.alpha_lr;
  darts<S, Ops> d(model, o.darts);
  const optim::warmup_cosine lr{o.darts.w_lr, o.lr_warmup_epochs * steps, o.epochs * steps};
  const nlohmann::json fingerprint = detail::search_fingerprint<Ops>(o, model.config(), model.options().prompts, n);
  double seconds_before = 0;
  long first = 0;
  if (o.resume && o.checkpoint.empty()) throw config_error("search: resume needs a checkpoint path");
  if (o.resume && std::filesystem::exists(o.checkpoint)) {
    first = detail::load_search_checkpoint(o.checkpoint, model, d, fingerprint, rng, train_rows, val_rows, val_pos, r,
                                           seconds_before);
    r.resumed_from = first;
  }
  detail::progress bar("search", o.epochs, steps);
  bar.resume_at(first + 1);
  image_batch<S> tx, vx;
  std::vector<int> ty, vy;
  for (long e = first; e < o.epochs; ++e) {
    std::shuffle(train_rows.begin(), train_rows.end(), rng);
    const bool update_alpha = e >= o.warmup_epochs;
    double tl = 0, vl = 0;
    for (long s = 0; s < steps; ++s) {
      d.w_optimizer().set_lr(lr(e * steps + s));
      data.gather(std::span<const index>(train_rows.data() + s * o.batch, static_cast<std::size_t>(o.batch)), tx, ty);
      if (update_alpha) {
        if (val_pos + o.batch > n_val) {
          std::shuffle(val_rows.begin(), val_rows.end(), rng);
          val_pos = 0;
        }
        data.gather(std::span<const index>(val_rows.data() + val_pos, static_cast<std::size_t>(o.batch)), vx, vy);
        val_pos += o.batch;
      }
      darts_step_result res;
      try {
        res = d.step(tx, ty, vx, vy, update_alpha);
      } catch (const value_error& err) {
        throw value_error(detail::cat("search: epoch ", e + 1, " step ", s + 1, ": ", err.message()));
      }
      tl += res.train_loss;
      vl += res.val_loss;
      if (o.progress)
        bar.update(e + 1, s + 1, tl / static_cast<double>(s + 1), -1, update_alpha ? 2 * o.batch : o.batch,
                   update_alpha ? vl / static_cast<double>(s + 1) : std::numeric_limits<double>::quiet_NaN());
    }
    r.train_loss.push_back(tl / static_cast<double>(steps));
    r.val_loss.push_back(update_alpha ? vl / static_cast<double>(steps) : std::nan(""));
    r.alpha_history.push_back(model.softmax_alpha());
    if (!o.checkpoint.empty())
      detail::save_search_checkpoint(o.checkpoint, model, d, fingerprint, e + 1, rng, train_rows, val_rows, val_pos, r,
                                     seconds_before + bar.seconds());
    if (o.on_epoch) o.on_epoch(e + 1, r.alpha_history.back(), r.train_loss.back(), r.val_loss.back());
  }
  r.found = model.derive();
  for (std::size_t l = 0; l < r.found.layers.size(); ++l)
    if (r.found.layers[l].margin() < 0.02)
      r.warnings.push_back(detail::cat("layer ", l, ": the two strongest operators are within ",
                                       r.found.layers[l].margin(), " (< 0.02): the choice there is a coin toss"));
  r.seconds = seconds_before + bar.seconds();
  return r;
}

/// Settings of train() (retraining a derived model; linear_probe has its own).
struct train_options {
  long epochs = 10;             ///< passes over the data
  index batch = 32;             ///< images per step
  double lr = 0.05;             ///< SGD peak learning rate
  double momentum = 0.9;        ///< SGD momentum
  double weight_decay = 1e-4;   ///< on every part of w but the head's bias
  long warmup_epochs = 1;       ///< epochs of linear lr warm-up before the cosine decay
  double grad_clip = 5;         ///< gradient-norm clip (0: none)
  std::vector<double> op_lr_mult = {};  ///< lr multiplier per operator, in op-list order (empty: all 1)
  double head_lr_mult = 1;      ///< lr multiplier of the head
  std::uint64_t seed = 0;       ///< shuffling and augmentation
  bool progress = true;         ///< print a progress bar
  data::augment_options augment = {};  ///< random crop and flip of every training batch
};

/// Trains w (operator parameters and head; alpha is not touched) on `data` with
/// SGD, warm-up then cosine; returns the mean loss of the last epoch.
/// @throws config_error for a batch larger than the data; value_error for a NaN or Inf loss.
template <Scalar S, OpList Ops>
double train(prompted_vit<S, Ops>& model, const data::labelled_images<S>& data, const train_options& o) {
  if (o.batch <= 0 || o.batch > data.size())
    throw config_error(detail::cat("train: batch ", o.batch, " does not fit ", data.size(), " images"));
  std::vector<optim::param_group<S>> groups = weight_groups(model, o.op_lr_mult, o.head_lr_mult);
  optim::sgd<S> opt(groups, {o.lr, o.momentum, o.weight_decay});
  std::vector<parameter<S>*> ws = model.weights();
  const long steps = static_cast<long>(data.size() / o.batch);
  const optim::warmup_cosine lr{o.lr, o.warmup_epochs * steps, o.epochs * steps};
  std::vector<index> rows(static_cast<std::size_t>(data.size()));
  std::iota(rows.begin(), rows.end(), 0);
  std::mt19937_64 rng(o.seed);
  tape<S> t;
  image_batch<S> x;
  std::vector<int> y;
  std::vector<S> scratch;
  detail::progress bar("train", o.epochs, steps);
  double last = 0;
  for (long e = 0; e < o.epochs; ++e) {
    std::shuffle(rows.begin(), rows.end(), rng);
    double sum = 0;
    index correct = 0;
    for (long s = 0; s < steps; ++s) {
      opt.set_lr(lr(e * steps + s));
      data.gather(std::span<const index>(rows.data() + s * o.batch, static_cast<std::size_t>(o.batch)), x, y);
      data::augment_batch(x, o.augment, rng, scratch);
      t.reset();
      var<S> l, logits;
      try {
        logits = model.logits(t, x, grad_target::weights);
        l = cross_entropy(logits, y);
      } catch (const value_error& err) {
        throw value_error(detail::cat("train: epoch ", e + 1, " step ", s + 1, ": ", err.message()));
      }
      opt.zero_grad();
      t.backward(l);
      if (o.grad_clip > 0) optim::clip_grad_norm<S>(ws, o.grad_clip);
      opt.step();
      sum += static_cast<double>(l.item());
      correct += detail::count_correct(logits.value(), y);
      if (o.progress)
        bar.update(e + 1, s + 1, sum / static_cast<double>(s + 1),
                   static_cast<double>(correct) / static_cast<double>((s + 1) * o.batch), o.batch);
    }
    last = sum / static_cast<double>(steps);
  }
  return last;
}

/// Top-1 accuracy of a prompted model on `data`, in batches, no gradient recorded.
template <Scalar S, OpList Ops>
double evaluate(prompted_vit<S, Ops>& model, const data::labelled_images<S>& data, index batch = 64) {
  return detail::top1_accuracy(
      data, batch, [&](tape<S>& t, const image_batch<S>& x) { return model.logits(t, x, grad_target::none); });
}

/// What choose_w_lr measured.
struct lr_grid_result {
  std::vector<double> lrs;            ///< the grid, in the order tried
  std::vector<double> val_accuracy;   ///< search-val top-1 accuracy after training w at each lr
  std::vector<double> train_loss;     ///< last-epoch training loss at each lr (NaN when it diverged)
  double best = 0;                    ///< the lr with the best accuracy (the smaller lr on a tie)
};

/// Chooses w's base learning rate on the search-val split (DESIGN.md section 5,
/// VPT's protocol): for every lr of `grid`, trains w alone (alpha fixed) for
/// `epochs` on search-train (the split search() makes with the same seed and
/// val_fraction), measures search-val accuracy, and restores w. A diverging lr
/// scores 0. Returns the grid's results and the best lr; the model is unchanged.
/// @throws config_error for an empty grid, a non-positive lr, or a batch larger than a split.
template <Scalar S, OpList Ops>
lr_grid_result choose_w_lr(prompted_vit<S, Ops>& model, const data::labelled_images<S>& data, const search_options& o,
                           const std::vector<double>& grid, long epochs = 2) {
  if (grid.empty()) throw config_error("choose_w_lr: the lr grid is empty");
  for (double lr : grid)
    if (!(lr > 0)) throw config_error(detail::cat("choose_w_lr: lr ", lr, " in the grid is not positive"));
  std::mt19937_64 rng(o.seed);
  const auto [train_rows, val_rows] = detail::split_rows(data.size(), detail::checked_val_count(data, o, "choose_w_lr"), rng);
  const auto train_set = data.select(train_rows), val_set = data.select(val_rows);
  std::vector<parameter<S>*> ws = model.weights();
  std::vector<matrix<S>> snapshot;
  for (parameter<S>* p : ws) snapshot.push_back(p->value());
  lr_grid_result r;
  r.best = grid.front();
  double best_acc = -1;
  for (double lr : grid) {
    train_options t{.epochs = epochs,
                    .batch = o.batch,
                    .lr = lr,
                    .momentum = o.darts.w_momentum,
                    .weight_decay = o.darts.w_weight_decay,
                    .warmup_epochs = std::min(o.lr_warmup_epochs, epochs),
                    .grad_clip = o.darts.grad_clip,
                    .op_lr_mult = o.darts.op_lr_mult,
                    .head_lr_mult = o.darts.head_lr_mult,
                    .seed = o.seed,
                    .progress = false};
    double loss = std::numeric_limits<double>::quiet_NaN(), acc = 0;
    try {
      loss = train(model, train_set, t);
      acc = evaluate(model, val_set);
    } catch (const value_error&) {
      // diverged: scores 0
    }
    r.lrs.push_back(lr);
    r.val_accuracy.push_back(acc);
    r.train_loss.push_back(loss);
    if (acc > best_acc + 1e-12 || (std::abs(acc - best_acc) <= 1e-12 && lr < r.best)) {
      best_acc = acc;
      r.best = lr;
    }
    for (std::size_t i = 0; i < ws.size(); ++i) ws[i]->value() = snapshot[i];
    if (o.progress) std::printf("lr grid: w lr %-8g search-val accuracy %.4f  train loss %.4f\n", lr, acc, loss);
  }
  return r;
}

}  // namespace vpdarts
