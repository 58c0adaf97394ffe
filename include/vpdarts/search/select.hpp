#pragma once
/// @file select.hpp
/// Choosing the genotype after a search (docs/method.md, section 5):
///
/// - **argmax** of softmax(alpha) per layer: prompted_vit::derive(), DARTS's own rule;
/// - **perturbation** (Wang et al., ICLR 2021): layer by layer, the operator whose
///   removal from the trained supernet's mixture costs the most search-val accuracy,
///   then that layer fixed to it and w fine-tuned briefly before the next layer;
/// - **best of several genotypes** (DARTS's protocol over search seeds): each genotype
///   trained briefly on search-train from fresh parameters, the best on search-val kept.
///
/// Every rule reads search-train and search-val only (the split search() makes with the
/// same seed and val_fraction); test images are never read.

#include <cmath>
#include <cstdio>
#include <limits>
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "../data/labelled_images.hpp"
#include "../data/split.hpp"
#include "../train/retrain.hpp"
#include "cost.hpp"
#include "prompted_vit.hpp"

namespace vpdarts {

/// Which rule turns a searched supernet into a genotype.
enum class selection_rule { argmax, perturbation };

/// "argmax" or "perturbation".
inline const char* to_string(selection_rule r) { return r == selection_rule::argmax ? "argmax" : "perturbation"; }

/// The rule named "argmax" or "perturbation". @throws config_error for another name.
inline selection_rule parse_selection_rule(const std::string& name) {
  if (name == "argmax") return selection_rule::argmax;
  if (name == "perturbation") return selection_rule::perturbation;
  throw config_error("selection rule '" + name + "' is unknown (expected argmax or perturbation)");
}

/// Top-1 accuracy and mean cross-entropy of a model on a labelled set.
struct val_score {
  double accuracy = 0;  ///< top-1, in [0, 1]
  double loss = 0;      ///< mean cross-entropy per image
  /// Better: higher accuracy, then lower loss.
  bool better_than(const val_score& o) const {
    if (accuracy != o.accuracy) return accuracy > o.accuracy;
    return loss < o.loss;
  }
};

/// Accuracy and mean loss of `model` on `data`, in batches, no gradient recorded
/// (shared over the processes of `parallel`, each its share of the images; the tape runs as `execution` says).
/// @throws config_error for an empty set.
template <Scalar S, OpList Ops>
val_score score(prompted_vit<S, Ops>& model, const data::labelled_images<S>& data, index batch = 64,
                const data_parallel& parallel = {}, const execution_config& execution = {}) {
  if (data.size() == 0) throw config_error("score: the data set is empty");
  index correct = 0;
  double loss = 0;
  for_each_scored_batch(
      data, batch, parallel,
      [&](tape<S>& t, const image_batch<S>& x, const std::vector<int>& y) {
        const var<S> logits = model.logits(t, x, grad_target::none);
        correct += count_correct(logits.value(), y);
        loss += static_cast<double>(cross_entropy(logits, y).item()) * static_cast<double>(y.size());
      },
      execution);
  const double n = static_cast<double>(data.size());
  return {static_cast<double>(parallel.sum(correct)) / n, parallel.sum(loss) / n};
}

/// Settings of select_by_perturbation().
struct perturbation_options {
  long finetune_epochs = 1;     ///< epochs of w-only training on search-train after each layer is fixed (0: none)
  index batch = 32;             ///< batch of the fine-tuning (and of the split, as search())
  double val_fraction = 0.2;    ///< share held out as search-val (as search())
  w_optimizer_options w = {};   ///< w's optimiser during fine-tuning
  std::uint64_t seed = 0;       ///< the split (as search() with this seed) and the shuffling
  bool progress = true;         ///< print one line per layer
  /// The processes the scoring and the fine-tuning are shared over; one by default.
  data_parallel parallel = {};
  /// How the tapes run their kernels (kernels/execution.hpp).
  execution_config execution = {};
  /// With a budget (search/cost.hpp), each layer chooses among the operators that leave the
  /// genotype able to keep within it (the later layers at their cheapest); its lambda is not used.
  cost_objective cost = {};
};

/// What select_by_perturbation() measured.
struct perturbation_result {
  genotype found;                                ///< the chosen operators, with alpha's weights as the search left them
  std::vector<val_score> before;                 ///< per layer: the supernet's search-val score before that layer was decided
  std::vector<std::vector<val_score>> removed;   ///< per layer, per operator: the score with that operator masked out
  std::vector<std::string> argmax_differs;       ///< layers where the choice is not alpha's argmax
};

/// Wang et al.'s perturbation-based selection on a searched supernet: for each layer
/// in order, every operator is masked out of that layer's mixture in turn (softmax
/// renormalised over the others) and the supernet scored on search-val; the operator
/// whose removal costs most (lowest accuracy, then highest loss) is chosen, the layer
/// is fixed to it (weight 1), and w is fine-tuned on search-train for
/// o.finetune_epochs before the next layer. The model's w and alpha are restored
/// afterwards. A layer with one operator keeps it.
/// @throws config_error for a derived model, a bad option, or a batch larger than a split.
template <Scalar S, OpList Ops>
perturbation_result select_by_perturbation(prompted_vit<S, Ops>& model, const data::labelled_images<S>& data,
                                           const perturbation_options& o) {
  if (!model.is_search()) throw config_error("select_by_perturbation: the model is a derived model (no alpha)");
  if (o.finetune_epochs < 0)
    throw config_error(detail::cat("select_by_perturbation: finetune_epochs is ", o.finetune_epochs, ", must be >= 0"));
  if (o.finetune_epochs > 0) o.w.validate("select_by_perturbation");
  o.cost.check(model.config().depth, static_cast<index>(Ops::size), "select_by_perturbation");
  const bool budgeted = o.cost.budget.has_value() && o.cost.cost.size() > 0;
  double spent = o.cost.fixed;  // the layers decided so far, with the fixed part
  std::mt19937_64 rng(o.seed);
  const data::row_split split = data::split_rows(
      data.size(), data::val_count(data.size(), o.val_fraction, o.batch, "select_by_perturbation"), rng);
  const auto train_set = data.select(split.train), val_set = data.select(split.val);

  parameter<S>& alpha = model.alpha();
  values_kept<S> kept(model.state_parameters());  // w and alpha as the search left them, put back at the end
  // A masked operator's logit: far below any trained alpha, so its softmax weight is exactly 0.
  const S masked = S(-1e30);
  const index depth = model.config().depth, k_count = static_cast<index>(Ops::size);

  perturbation_result r;
  r.found = model.derive();
  std::vector<bool> allowed(static_cast<std::size_t>(k_count));
  for (index l = 0; l < depth; ++l) {
    std::fill(allowed.begin(), allowed.end(), false);
    for (std::size_t k : model.layer(l).candidates()) allowed[k] = true;
    if (budgeted) {  // what the later layers cost at the least
      double later = 0;
      for (index m = l + 1; m < depth; ++m) later += o.cost.cost.row(m).minCoeff();
      for (index k = 0; k < k_count; ++k)
        if (spent + o.cost.cost(l, k) + later > *o.cost.budget) allowed[static_cast<std::size_t>(k)] = false;
    }
    std::vector<val_score> removed(static_cast<std::size_t>(k_count),
                                   val_score{std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()});
    r.before.push_back(score(model, val_set, 64, o.parallel, o.execution));
    index chosen = -1;
    const bool live = model.layer(l).is_mixed() && std::count(allowed.begin(), allowed.end(), true) > 1;
    const matrix<S> row = alpha.value().row(l);
    for (index k = 0; k < k_count; ++k) {
      if (!allowed[static_cast<std::size_t>(k)]) continue;
      if (live) {
        alpha.value()(l, k) = masked;
        removed[static_cast<std::size_t>(k)] = score(model, val_set, 64, o.parallel, o.execution);
        alpha.value().row(l) = row;
        // the worst score without k means k helped the most
        if (chosen < 0 || removed[static_cast<std::size_t>(chosen)].better_than(removed[static_cast<std::size_t>(k)])) chosen = k;
      } else if (chosen < 0) {
        chosen = k;
      }
    }
    if (chosen < 0)
      throw config_error(detail::cat("select_by_perturbation: layer ", l, " has no operator within the budget of ",
                                     *o.cost.budget, " ", o.cost.unit));
    if (budgeted) spent += o.cost.cost(l, chosen);
    r.removed.push_back(removed);
    r.found.layers[static_cast<std::size_t>(l)].op = std::string(Ops::names[static_cast<std::size_t>(chosen)]);
    for (index k = 0; k < k_count; ++k) alpha.value()(l, k) = k == chosen ? S(0) : masked;
    if (o.progress && o.parallel.root()) {
      std::printf("perturbation: layer %ld: search-val accuracy %.4f; without", static_cast<long>(l), r.before.back().accuracy);
      for (index k = 0; k < k_count; ++k)
        if (allowed[static_cast<std::size_t>(k)])
          std::printf(" %s %.4f", std::string(Ops::names[static_cast<std::size_t>(k)]).c_str(),
                      removed[static_cast<std::size_t>(k)].accuracy);
      std::printf(" -> %s\n", r.found.layers[static_cast<std::size_t>(l)].op.c_str());
    }
    if (o.finetune_epochs > 0 && l + 1 < depth)
      train(model, train_set,
            {.epochs = o.finetune_epochs, .batch = o.batch, .w = o.w, .seed = o.seed + static_cast<std::uint64_t>(l) + 1,
             .progress = false, .parallel = o.parallel, .execution = o.execution});
  }
  kept.restore();
  const genotype by_argmax = model.derive();
  for (std::size_t l = 0; l < r.found.layers.size(); ++l)
    if (r.found.layers[l].op != by_argmax.layers[l].op)
      r.argmax_differs.push_back(detail::cat("layer ", l, ": ", r.found.layers[l].op, " (argmax of alpha: ",
                                             by_argmax.layers[l].op, ")"));
  return r;
}

/// Settings of score_genotypes().
struct genotype_score_options {
  long epochs = 3;              ///< epochs of training on search-train per genotype
  index batch = 32;             ///< batch of training (and of the split, as search())
  double val_fraction = 0.2;    ///< share held out as search-val (as search())
  w_optimizer_options w = {};   ///< w's optimiser
  index prompts = 8;            ///< prompt tokens of every derived model
  std::uint64_t seed = 0;       ///< the split (as search() with this seed), fresh parameters and shuffling
  /// 1: trained on search-train, scored on search-val (the split search() makes). K > 1:
  /// K-fold cross-validation over all the training images (shuffled by seed): each genotype
  /// trained K times, each time on all folds but one and scored on that one, and its score
  /// is over every image (more images to choose on, K times the training).
  int folds = 1;
  bool progress = true;         ///< print one line per genotype
  /// The processes training and scoring are shared over; one by default.
  data_parallel parallel = {};
  /// How the tapes run their kernels (kernels/execution.hpp).
  execution_config execution = {};
};

/// What score_genotypes() measured.
struct genotype_scores {
  std::vector<val_score> val;       ///< per genotype: search-val score after training
  std::vector<double> train_loss;   ///< per genotype: last-epoch training loss (NaN when it diverged)
  std::vector<index> trainable;     ///< per genotype: trainable values (operator parameters and head)
  std::size_t best = 0;             ///< the best score; on a tie the fewer trainable values, then the first
};

/// DARTS's protocol for choosing among genotypes (for instance those of searches from
/// several seeds): each genotype's derived model is built over `backbone` with fresh
/// parameters, trained on search-train for o.epochs, and scored on search-val (a
/// diverging one scores 0). The backbone is copied, never changed.
/// @throws config_error for no genotype or a bad option; the genotypes' own errors (depth, operator names).
template <Scalar S, OpList Ops = default_ops>
genotype_scores score_genotypes(const vit<S>& backbone, const std::vector<genotype>& genotypes,
                                const data::labelled_images<S>& data, const genotype_score_options& o) {
  if (genotypes.empty()) throw config_error("score_genotypes: no genotype to score");
  if (o.epochs < 1) throw config_error(detail::cat("score_genotypes: epochs is ", o.epochs, ", must be >= 1"));
  if (o.folds < 1 || o.folds > data.size())
    throw config_error(detail::cat("score_genotypes: folds is ", o.folds, ", must be in 1..", data.size(), " (the images)"));
  o.w.validate("score_genotypes");
  std::mt19937_64 rng(o.seed);
  // (train, val) rows: the search's split, or K folds (the images are copied one part at a time)
  std::vector<data::row_split> parts;
  if (o.folds == 1) {
    parts.push_back(
        data::split_rows(data.size(), data::val_count(data.size(), o.val_fraction, o.batch, "score_genotypes"), rng));
  } else {
    std::vector<index> rows(static_cast<std::size_t>(data.size()));
    for (index i = 0; i < data.size(); ++i) rows[static_cast<std::size_t>(i)] = i;
    std::shuffle(rows.begin(), rows.end(), rng);
    for (int f = 0; f < o.folds; ++f) {
      std::vector<index> tr, va;
      for (std::size_t i = 0; i < rows.size(); ++i) (static_cast<int>(i % static_cast<std::size_t>(o.folds)) == f ? va : tr).push_back(rows[i]);
      if (static_cast<index>(tr.size()) < o.batch)
        throw config_error(detail::cat("score_genotypes: a fold leaves ", tr.size(), " training images, fewer than the batch of ", o.batch));
      parts.push_back({std::move(tr), std::move(va)});
    }
  }
  genotype_scores r;
  for (std::size_t i = 0; i < genotypes.size(); ++i) {
    prompted_vit<S, Ops> model(backbone, genotypes[i], {.prompts = o.prompts, .classes = data.classes(), .seed = o.seed});
    values_kept<S> fresh(model.weights());  // every fold starts from the same fresh parameters
    double loss = std::numeric_limits<double>::quiet_NaN();
    val_score s{0, std::numeric_limits<double>::infinity()};
    try {
      double correct = 0, loss_sum = 0, images = 0, train_loss = 0;
      val_score f;
      for (const data::row_split& part : parts) {
        fresh.restore();
        const auto train_set = data.select(part.train), val_set = data.select(part.val);
        train_loss += train(model, train_set, {.epochs = o.epochs, .batch = o.batch, .w = o.w, .seed = o.seed,
                                               .progress = false, .parallel = o.parallel, .execution = o.execution});
        f = score(model, val_set, 64, o.parallel, o.execution);
        const double n = static_cast<double>(val_set.size());
        correct += f.accuracy * n;
        loss_sum += f.loss * n;
        images += n;
      }
      loss = train_loss / static_cast<double>(parts.size());
      s = parts.size() == 1 ? f : val_score{correct / images, loss_sum / images};  // one part: its score as it is
    } catch (const value_error&) {
      // diverged: scores 0
    }
    r.val.push_back(s);
    r.train_loss.push_back(loss);
    r.trainable.push_back(model.trainable_params());
    const bool better = i == 0 || s.better_than(r.val[r.best]) ||
                        (!r.val[r.best].better_than(s) && r.trainable[i] < r.trainable[r.best]);
    if (better) r.best = i;
    if (o.progress && o.parallel.root())
      std::printf("genotype %zu: %s: %s accuracy %.4f, loss %.4f, %ld trainable\n", i, genotypes[i].str().c_str(),
                  o.folds > 1 ? detail::cat(o.folds, "-fold cross-validated").c_str() : "search-val", s.accuracy, s.loss,
                  static_cast<long>(r.trainable[i]));
  }
  return r;
}

}  // namespace vpdarts
