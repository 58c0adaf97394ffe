#pragma once
/// @file search.hpp
/// The search as a library call: split the training data into search-train
/// and search-val, run bi-level DARTS for some epochs (w-only warm-up first),
/// record softmax(alpha) every epoch, checkpoint, and derive the genotype.
/// Retraining the genotype is train/retrain.hpp's.

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../data/labelled_images.hpp"
#include "../data/split.hpp"
#include "../detail/hash.hpp"
#include "../kernels/execution.hpp"
#include "../train/loop.hpp"
#include "bilevel.hpp"
#include "checkpoint.hpp"

namespace vpdarts {

/// Settings of search().
struct search_options {
  bilevel_options bilevel = {};  ///< the optimisers of w and alpha, and the DARTS order
  long epochs = 10;             ///< epochs, each one pass over search-train
  long warmup_epochs = 2;       ///< epochs that train w only, before alpha moves
  index batch = 32;             ///< search-train and search-val batches have this size
  double val_fraction = 0.2;    ///< share of the training data held out as search-val (VTAB-1k: 200 of 1000)
  /// When true, alpha's learning rate is 6 / (planned alpha steps), DARTS's lr x steps
  /// (docs/method.md, section 5); false keeps bilevel.alpha_lr.
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
  /// (1-based), softmax(alpha) and the epoch's mean losses; on every process
  /// of a data-parallel search (write files where parallel.root() only).
  std::function<void(long epoch, const matrix<double>& alpha, double train_loss, double val_loss)> on_epoch = {};
  /// The processes every batch is shared over (train/data_parallel.hpp); one by
  /// default. The result is the single-process one; process 0 alone writes the
  /// checkpoint, and every process reads it on resume (any number of processes
  /// may continue a checkpoint).
  data_parallel parallel = {};
};

/// What search() found.
struct search_result {
  genotype found;                             ///< argmax of alpha per layer (within the budget, when there is one), with the weights
  std::vector<matrix<double>> alpha_history;  ///< softmax(alpha) (L x K) after every epoch
  std::vector<double> train_loss;             ///< per-epoch mean search-train loss
  std::vector<double> val_loss;               ///< per-epoch mean search-val loss
  /// With a cost term (bilevel.cost): per epoch, the expected total cost fixed + E(alpha) at its last
  /// alpha step (NaN in warm-up epochs) and lambda after it.
  std::vector<double> expected_cost, cost_lambda;
  std::vector<std::string> warnings;          ///< layers whose two strongest operators are within 0.02
  double alpha_lr = 0;                        ///< alpha's learning rate as used
  double seconds = 0;                         ///< wall-clock time (the resumed part included)
  long resumed_from = 0;                      ///< epochs read from the checkpoint (0: a fresh start)
};

/// The settings a resumed search must share with the run that wrote the
/// checkpoint: every option the result depends on, the model's shape, and
/// hashes of the training data (images and labels) and of the frozen backbone.
template <Scalar S, OpList Ops>
nlohmann::json search_fingerprint(const search_options& o, prompted_vit<S, Ops>& model, const data::labelled_images<S>& data) {
  const bilevel_options& b = o.bilevel;
  const vit_config& c = model.config();
  detail::fnv1a backbone_hash;
  for (parameter<S>* p : model.backbone().backbone_parameters()) {
    backbone_hash.add(p->name());
    backbone_hash.add(p->value().data(), static_cast<std::size_t>(p->size()) * sizeof(S));
  }
  return {{"epochs", o.epochs},
          {"warmup_epochs", o.warmup_epochs},
          {"batch", o.batch},
          {"val_fraction", o.val_fraction},
          {"lr_warmup_epochs", b.w.warmup_epochs},
          {"seed", o.seed},
          {"order", b.order == darts_order::first ? "first" : "second"},
          {"w_lr", b.w.lr},
          {"w_momentum", b.w.momentum},
          {"w_weight_decay", b.w.weight_decay},
          {"grad_clip", b.w.grad_clip},
          {"op_lr_mult", b.w.op_lr_mult},
          {"head_lr_mult", b.w.head_lr_mult},
          {"alpha_lr", b.alpha_lr},
          {"alpha_weight_decay", b.alpha_weight_decay},
          {"alpha_betas", {b.alpha_beta1, b.alpha_beta2}},
          {"ops", detail::join(Ops::names)},
          {"model", c.describe()},
          {"prompts", model.options().prompts},
          {"images", data.size()},
          {"scalar", sizeof(S) == 8 ? "double" : "float"},
          {"data", data.fingerprint()},
          {"backbone", backbone_hash.hex()},
          {"precision", to_string(b.execution.products)},
          {"fp32_products", to_string(b.execution.fp32_engine())}};
}

namespace detail {
/// The cost term's settings a resumed search must share (its table and lambda travel in the state):
/// none without a cost table, so that checkpoints of searches without one keep their fingerprint.
inline void add_cost_fingerprint(nlohmann::json& f, const cost_objective& c) {
  if (c.cost.size() == 0) return;
  f["cost"] = {{"unit", c.unit},
               {"lambda", c.lambda},
               {"budget", c.budget ? nlohmann::json(*c.budget) : nlohmann::json()},
               {"lambda_rate", c.lambda_rate},
               {"shape", {c.cost.rows(), c.cost.cols()}}};
}
}  // namespace detail

/// Runs a DARTS search on `data` (split seeded into search-train and search-val).
/// Every gradient passes `hook` before its optimiser uses it (see apply_gradients()).
/// @throws config_error for a derived model, fewer than two classes, a batch larger than a split
/// or smaller than the processes of o.parallel;
/// value_error when a loss becomes NaN or Inf (naming the epoch and step).
template <Scalar S, OpList Ops>
search_result search(prompted_vit<S, Ops>& model, const data::labelled_images<S>& data, search_options o,
                     const gradient_hook<S>& hook = {}) {
  if (data.classes() < 2)
    throw config_error(detail::cat("search: the dataset has ", data.classes(), " class; at least two are needed"));
  const index n = data.size();
  const index n_val = data::val_count(n, o.val_fraction, o.batch, "search");
  if (o.epochs <= o.warmup_epochs)
    throw config_error(detail::cat("search: ", o.epochs, " epochs leave no alpha step after ", o.warmup_epochs,
                                   " warm-up epochs"));
  if (o.resume && o.checkpoint.empty()) throw config_error("search: resume needs a checkpoint path");
  o.bilevel.w.validate("search");
  o.bilevel.execution.check("search");
  const data_parallel& dp = o.parallel;
  dp.require_batch(o.batch, "search");
  const long steps = static_cast<long>((n - n_val) / o.batch);
  if (o.auto_alpha_lr) o.bilevel.alpha_lr = 6.0 / static_cast<double>(steps * (o.epochs - o.warmup_epochs));
  search_result r;
  r.alpha_lr = o.bilevel.alpha_lr;
  bilevel_optimizer<S, Ops> optimizer(model, o.bilevel, hook, dp);
  // hashing the data and the backbone costs a pass over both: only a checkpointed search, or one over
  // several processes, needs it
  nlohmann::json fingerprint =
      o.checkpoint.empty() && !dp.active() ? nlohmann::json() : search_fingerprint(o, model, data);
  if (!fingerprint.is_null()) detail::add_cost_fingerprint(fingerprint, o.bilevel.cost);
  // processes that were given other data, settings, backbone or precision would average gradients of
  // different problems (or wait for each other forever): all stop now, naming what differs
  dp.require_same(fingerprint, "search");
  search_state st;
  if (o.resume && std::filesystem::exists(o.checkpoint)) {
    st = search_state::load(o.checkpoint, model, optimizer, fingerprint, n, n_val, o.epochs);
    r.resumed_from = st.epoch;
  } else {
    st.rng.seed(o.seed);
    st.rows = data::split_rows(n, n_val, st.rng);
    st.val_pos = n_val;
  }
  const double seconds_before = st.seconds;
  // Every search-train image once per epoch; search-val batches are drawn in
  // turn from the shuffled search-val split, reshuffled whenever it runs out.
  image_batch<S> tx, vx;
  std::vector<int> ty, vy;
  const loop_plan plan{.name = "search",
                       .epochs = o.epochs,
                       .batch = o.batch,
                       .peak_lr = o.bilevel.w.lr,
                       .warmup_epochs = o.bilevel.w.warmup_epochs,
                       .first_epoch = st.epoch,
                       .progress = o.progress && dp.root()};
  auto step = [&](long e, std::span<const index> rows) {
    const bool update_alpha = e >= o.warmup_epochs;
    data.gather(dp.share_of(rows), tx, ty);
    if (update_alpha) {
      if (st.val_pos + o.batch > n_val) {
        std::shuffle(st.rows.val.begin(), st.rows.val.end(), st.rng);
        st.val_pos = 0;
      }
      data.gather(dp.share_of(std::span<const index>(st.rows.val.data() + st.val_pos, static_cast<std::size_t>(o.batch))),
                  vx, vy);
      st.val_pos += o.batch;
    }
    const bilevel_step_result res = optimizer.step(tx, ty, vx, vy, update_alpha);
    return step_report{.loss = res.train_loss,
                       .images = update_alpha ? 2 * o.batch : o.batch,
                       .val_loss = update_alpha ? res.val_loss : std::numeric_limits<double>::quiet_NaN()};
  };
  const loop_result lr = run_epochs(plan, st.rows.train, st.rng, optimizer.w_optimizer(), step, [&](const epoch_report& e) {
    st.epoch = e.epoch;
    st.train_loss.push_back(e.loss);
    st.val_loss.push_back(e.val_loss);
    st.alpha_history.push_back(model.softmax_alpha());
    if (optimizer.cost().cost.size() > 0) {
      st.expected_cost.push_back(e.epoch > o.warmup_epochs ? optimizer.expected_cost_now() : std::numeric_limits<double>::quiet_NaN());
      st.cost_lambda.push_back(optimizer.cost().lambda);
    }
    st.seconds = seconds_before + e.seconds;
    dp.check_identical<S>(optimizer.parameters(), "search");
    if (!o.checkpoint.empty()) dp.on_root([&] { st.save(o.checkpoint, model, optimizer, fingerprint); });
    if (o.on_epoch) o.on_epoch(e.epoch, st.alpha_history.back(), e.loss, e.val_loss);
  });
  r.found = derive_within(model, optimizer.cost());
  for (std::size_t l = 0; l < r.found.layers.size(); ++l)
    if (r.found.layers[l].margin() < 0.02)
      r.warnings.push_back(detail::cat("layer ", l, ": the two strongest operators are within ",
                                       r.found.layers[l].margin(), " (< 0.02): the choice there is a coin toss"));
  r.alpha_history = std::move(st.alpha_history);
  r.train_loss = std::move(st.train_loss);
  r.val_loss = std::move(st.val_loss);
  r.expected_cost = std::move(st.expected_cost);
  r.cost_lambda = std::move(st.cost_lambda);
  r.seconds = seconds_before + lr.seconds;
  return r;
}

}  // namespace vpdarts
