#pragma once
/// @file cost.hpp
/// What each candidate operator costs, and the search's cost objective
/// (docs/method.md, section 5.4):
///
/// * **the cost table** C (L x K): per layer l and operator k, its trainable values
///   (exact) or its batch-1 latency around its block (the median of many timed runs
///   on this machine, op_latency()), plus what every genotype costs besides (the
///   head's values; the patch embedding, final norm and head in ms);
/// * **the expected cost** E(alpha) = sum_l sum_k softmax(alpha_l)_k C_lk, whose
///   gradient is dE / d alpha_lj = p_lj (C_lj - sum_k p_lk C_lk);
/// * **the objective** of alpha: L_val + lambda E(alpha) / R, R = sum_l (max_k C_lk -
///   min_k C_lk), so that lambda = 1 prices the step from the cheapest genotype to the
///   costliest at one nat of loss (FBNet and ProxylessNAS add such a term);
/// * **a budget** B on a genotype's total cost: the search sets lambda itself by dual
///   ascent, lambda <- max(0, lambda + rate (fixed + E - B) / R) after every alpha
///   step, and the genotype it derives, its perturbation-based selection and the
///   best-of-runs keep within B (choose_within_budget()).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "../report/metrics.hpp"
#include "genotype.hpp"
#include "prompted_vit.hpp"

namespace vpdarts {

/// Which cost a search's objective or budget counts.
enum class cost_kind {
  params,  ///< trainable values (operator parameters; the head is the fixed part)
  latency  ///< batch-1 milliseconds (each operator around its block; the embedding and head are the fixed part)
};

/// "params" or "latency".
inline const char* to_string(cost_kind k) { return k == cost_kind::params ? "params" : "latency"; }

/// The cost of every candidate of a search model, layer by layer.
struct op_costs {
  matrix<double> params;       ///< L x K trainable values of operator k at layer l (+inf where k is no candidate)
  matrix<double> latency_ms;   ///< L x K median batch-1 ms of operator k around block l (empty until measured)
  double fixed_params = 0;     ///< values every genotype trains besides: the head
  double fixed_latency_ms = 0; ///< ms of the rest of a batch-1 pass: patch embedding, final norm, pooling, head
  int latency_runs = 0;        ///< timed runs behind each latency (after warm-up runs)

  /// The table of `kind`. @throws config_error when the latency was not measured.
  const matrix<double>& of(cost_kind kind) const {
    if (kind == cost_kind::latency && latency_ms.size() == 0)
      throw config_error("op_costs: the latency table is empty (measure it with op_latency())");
    return kind == cost_kind::params ? params : latency_ms;
  }
  /// The fixed part of `kind`.
  double fixed(cost_kind kind) const { return kind == cost_kind::params ? fixed_params : fixed_latency_ms; }
};

/// A cost term of alpha's objective, with an optional budget (see the file comment).
struct cost_objective {
  matrix<double> cost = {};      ///< L x K cost of each candidate; empty: no cost term
  double fixed = 0;              ///< what every genotype costs besides (for the budget)
  double lambda = 0;             ///< weight of E(alpha) / R; with a budget, its start (then the search sets it)
  std::optional<double> budget;  ///< the total (fixed included) a genotype may cost
  double lambda_rate = 0.1;      ///< step of lambda's dual ascent per alpha step (with a budget)
  std::string unit = "";         ///< the cost's unit, for messages ("trainable values", "ms")
  /// The largest lambda and rate accepted: lambda = 1 already prices the whole spread at one nat.
  static constexpr double max_lambda = 1e6;

  /// True when the term changes alpha's gradient or a budget holds.
  bool active() const { return cost.size() > 0 && (lambda > 0 || budget.has_value()); }
  /// R: the spread between the costliest and the cheapest genotype (1 when every genotype costs the same).
  double range() const {
    double r = 0;
    for (index l = 0; l < cost.rows(); ++l) r += cost.row(l).maxCoeff() - cost.row(l).minCoeff();
    return r > 0 ? r : 1.0;
  }
  /// The cheapest genotype's total cost.
  double cheapest() const { return fixed + (cost.size() ? cost.rowwise().minCoeff().sum() : 0.0); }
  /// The costliest genotype's total cost.
  double costliest() const { return fixed + (cost.size() ? cost.rowwise().maxCoeff().sum() : 0.0); }
  /// The total cost of a choice of operator positions, one per layer.
  double of(std::span<const std::size_t> ops) const {
    double c = fixed;
    for (std::size_t l = 0; l < ops.size(); ++l) c += cost(static_cast<index>(l), static_cast<index>(ops[l]));
    return c;
  }

  /// Checks the term against a model of `layers` x `ops` (`who` names the caller).
  /// @throws config_error for a table of another shape, a cost that is negative or not finite,
  /// a negative lambda or rate, or a budget below the cheapest genotype.
  void check(index layers, index ops, const std::string& who) const {
    if (cost.size() == 0) {
      if (budget) throw config_error(detail::cat(who, ": a budget needs a cost table"));
      return;
    }
    if (cost.rows() != layers || cost.cols() != ops)
      throw config_error(detail::cat(who, ": the cost table is ", detail::shape_str(cost.rows(), cost.cols()),
                                     ", the search space is ", detail::shape_str(layers, ops), " (layers x operators)"));
    if (!cost.allFinite() || cost.minCoeff() < 0 || !std::isfinite(fixed) || fixed < 0)
      throw config_error(detail::cat(who, ": the cost table holds a negative or non-finite cost"));
    if (!(lambda >= 0 && lambda <= max_lambda) || !(lambda_rate >= 0 && lambda_rate <= max_lambda))
      throw config_error(detail::cat(who, ": the cost weight is ", lambda, " and its rate ", lambda_rate, "; both must be in 0..",
                                     max_lambda, " (more would swamp the loss's gradient in float)"));
    if (budget && !(*budget >= cheapest()))
      throw config_error(detail::cat(who, ": the budget of ", *budget, " ", unit, " is below the cheapest genotype (",
                                     cheapest(), " ", unit, ")"));
  }
};

/// E = sum_l sum_k softmax(alpha_l)_k cost_lk; with `grad`, also dE/dalpha (L x K).
/// @throws shape_error when the two differ in shape.
template <Scalar S>
double expected_cost(const matrix<S>& alpha, const matrix<double>& cost, matrix<double>* grad = nullptr) {
  if (alpha.rows() != cost.rows() || alpha.cols() != cost.cols())
    throw shape_error(detail::cat("expected_cost: alpha is ", detail::shape_str(alpha.rows(), alpha.cols()),
                                  ", the cost table ", detail::shape_str(cost.rows(), cost.cols())));
  if (grad) grad->resize(alpha.rows(), alpha.cols());
  double total = 0;
  Eigen::RowVectorXd p;
  for (index l = 0; l < alpha.rows(); ++l) {
    p = alpha.row(l).template cast<double>();
    p = (p.array() - p.maxCoeff()).exp();
    p /= p.sum();
    const double e = p.dot(cost.row(l));
    total += e;
    if (grad) grad->row(l) = p.array() * (cost.row(l).array() - e);
  }
  return total;
}

/// Per layer the operator position of a genotype within `budget` that keeps as much of the
/// weights `w` (L x K, softmax(alpha) rows) as it can: the operators maximising
/// sum_l log w_l,k_l - mu sum_l C_l,k_l for the smallest mu >= 0 that fits, then, while
/// it still fits, any layer raised to a more likely operator (the largest gain first).
/// With no budget, or one the argmax fits, it is the argmax.
/// @throws config_error when even the cheapest genotype exceeds the budget.
inline std::vector<std::size_t> choose_within_budget(const matrix<double>& w, const cost_objective& c) {
  const index layers = w.rows(), k_count = w.cols();
  auto pick = [&](double mu) {
    std::vector<std::size_t> ops(static_cast<std::size_t>(layers));
    for (index l = 0; l < layers; ++l) {
      double best = -std::numeric_limits<double>::infinity();
      for (index k = 0; k < k_count; ++k) {
        const double v = std::log(std::max(w(l, k), 1e-300)) - mu * (c.cost.size() ? c.cost(l, k) : 0.0);
        if (v > best) {
          best = v;
          ops[static_cast<std::size_t>(l)] = static_cast<std::size_t>(k);
        }
      }
    }
    return ops;
  };
  std::vector<std::size_t> ops = pick(0);
  if (!c.budget || c.cost.size() == 0 || c.of(ops) <= *c.budget) return ops;
  if (c.cheapest() > *c.budget)
    throw config_error(detail::cat("choose_within_budget: the budget of ", *c.budget, " ", c.unit,
                                   " is below the cheapest genotype (", c.cheapest(), " ", c.unit, ")"));
  const double scale = 1.0 / c.range();  // mu in units of the log-weights per whole range
  double lo = 0, hi = 1;
  while (c.of(pick(hi * scale)) > *c.budget && hi < 1e300) hi *= 2;
  for (int it = 0; it < 100; ++it) {
    const double mid = 0.5 * (lo + hi);
    (c.of(pick(mid * scale)) > *c.budget ? lo : hi) = mid;
  }
  ops = pick(hi * scale);
  for (;;) {  // raise layers to more likely operators while the budget allows
    double gain = 0, spent = c.of(ops);
    index at = -1, to = -1;
    for (index l = 0; l < layers; ++l) {
      const auto now = static_cast<index>(ops[static_cast<std::size_t>(l)]);
      for (index k = 0; k < k_count; ++k) {
        const double g = std::log(std::max(w(l, k), 1e-300)) - std::log(std::max(w(l, now), 1e-300));
        if (g > gain && spent - c.cost(l, now) + c.cost(l, k) <= *c.budget) {
          gain = g;
          at = l;
          to = k;
        }
      }
    }
    if (at < 0) break;
    ops[static_cast<std::size_t>(at)] = static_cast<std::size_t>(to);
  }
  return ops;
}

/// The search model's genotype within the budget of `c` (prompted_vit::derive() when there is none).
/// @throws config_error as choose_within_budget().
template <Scalar S, OpList Ops>
genotype derive_within(const prompted_vit<S, Ops>& model, const cost_objective& c) {
  genotype g = model.derive();
  if (!c.budget || c.cost.size() == 0) return g;
  const std::vector<std::size_t> ops = choose_within_budget(model.softmax_alpha(), c);
  for (std::size_t l = 0; l < ops.size(); ++l) g.layers[l].op = std::string(Ops::names[ops[l]]);
  return g;
}

/// The operator positions of a genotype over `Ops`. @throws config_error for an unknown name.
template <OpList Ops>
std::vector<std::size_t> op_positions(const genotype& g) {
  std::vector<std::size_t> out;
  for (const auto& l : g.layers) out.push_back(Ops::index_of(l.op));
  return out;
}

/// Trainable values of every candidate at every layer (exact), and the head's.
template <Scalar S, OpList Ops>
op_costs param_costs(prompted_vit<S, Ops>& model) {
  op_costs c;
  const index layers = model.config().depth, k_count = static_cast<index>(Ops::size);
  c.params = matrix<double>::Constant(layers, k_count, std::numeric_limits<double>::infinity());
  for (index l = 0; l < layers; ++l)
    for (std::size_t k : model.layer(l).candidates()) {
      double n = 0;
      for (const auto& p : model.op_parameters(l, k)) n += static_cast<double>(p.size());
      c.params(l, static_cast<index>(k)) = n;
    }
  c.fixed_params = static_cast<double>(model.head().weight.size() + model.head().bias.size());
  return c;
}

/// How op_latency() times.
struct latency_options {
  int runs = 20;    ///< timed runs of each candidate (their median is its latency)
  int warmup = 3;   ///< untimed runs before
  /// How the tape runs its kernels (the search's own, so that the costs are those it will run at).
  execution_config execution = {};
};

/// Adds the latency table to `c`: every candidate of every layer run around its block on one
/// image's tokens (seeded random values), no gradient recorded, o.warmup + o.runs times; the
/// candidates take turns run by run, so that a machine busy with other work weighs on them alike.
/// The fixed part is the rest of a batch-1 pass (the blocks skipped), timed the same way.
/// @throws config_error for runs < 1 or warmup < 0.
template <Scalar S, OpList Ops>
void op_latency(prompted_vit<S, Ops>& model, op_costs& c, const latency_options& o = {}) {
  if (o.runs < 1 || o.warmup < 0)
    throw config_error(detail::cat("op_latency: runs ", o.runs, " and warmup ", o.warmup, " (runs >= 1, warmup >= 0)"));
  o.execution.check("op_latency");
  const vit_config& cfg = model.config();
  const index layers = cfg.depth, k_count = static_cast<index>(Ops::size);
  std::mt19937_64 rng(1);
  std::normal_distribution<double> n01;
  matrix<S> tokens(cfg.tokens(), cfg.dim);
  for (index i = 0; i < tokens.size(); ++i) tokens.data()[i] = static_cast<S>(n01(rng));
  image_batch<S> image(1, cfg.channels, cfg.image, cfg.image);
  for (index i = 0; i < image.pixels.size(); ++i) image.pixels.data()[i] = static_cast<S>(n01(rng));
  tape<S> t(o.execution);
  no_grad<S> guard(t);
  std::vector<std::vector<double>> times(static_cast<std::size_t>(layers * k_count + 1));
  auto timed = [&](std::size_t slot, bool keep, auto&& run) {
    t.reset();
    const auto start = std::chrono::steady_clock::now();
    run();
    if (keep) times[slot].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  };
  auto skip_blocks = [](index, vit_block<S>&, const var<S>& x, index) { return x; };
  for (int r = 0; r < o.warmup + o.runs; ++r) {
    const bool keep = r >= o.warmup;
    for (index l = 0; l < layers; ++l)
      for (std::size_t k : model.layer(l).candidates())
        timed(static_cast<std::size_t>(l * k_count + static_cast<index>(k)), keep, [&] {
          model.layer(l).forward_one(t, k, model.backbone().blocks[static_cast<std::size_t>(l)], t.constant(tokens), 1);
        });
    timed(times.size() - 1, keep, [&] { model.backbone().logits(t, image, skip_blocks); });
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? std::numeric_limits<double>::infinity() : report::quantile(v, 0.5);
  };
  c.latency_ms.resize(layers, k_count);
  for (index l = 0; l < layers; ++l)
    for (index k = 0; k < k_count; ++k) c.latency_ms(l, k) = median(times[static_cast<std::size_t>(l * k_count + k)]);
  c.fixed_latency_ms = median(times.back());
  c.latency_runs = o.runs;
}

/// The cost term of `kind` from a table: its costs and fixed part, with weight `lambda` and an optional budget.
inline cost_objective make_cost_objective(const op_costs& c, cost_kind kind, double lambda = 0,
                                          std::optional<double> budget = std::nullopt) {
  cost_objective o;
  o.cost = c.of(kind);
  o.fixed = c.fixed(kind);
  o.lambda = lambda;
  o.budget = budget;
  o.unit = kind == cost_kind::params ? "trainable values" : "ms";
  return o;
}

}  // namespace vpdarts
