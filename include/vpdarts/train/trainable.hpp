#pragma once
/// @file trainable.hpp
/// What the training loops need of a model: the Trainable concept, which
/// prompted_vit (search/prompted_vit.hpp) meets, so that retraining, evaluation
/// and the lr grid (train/) do not depend on the search's model, and a model of
/// a user's own trains with them.

#include <concepts>
#include <vector>

#include "../autodiff.hpp"
#include "../data/image_batch.hpp"
#include "../optim/sgd.hpp"
#include "../vit/config.hpp"

namespace vpdarts {

/// Which parameter groups a forward pass records gradients for (a DARTS step
/// needs only one group at a time; the other costs no gradient work).
enum class grad_target : unsigned { none = 0, weights = 1, alpha = 2, all = 3 };

/// A model train(), evaluate() and choose_w_lr() can train: logits recording gradients for a group,
/// its trainable weights w (and their SGD groups with per-operator and head lr multipliers), its
/// backbone's shape and its count of trainable values.
template <class M, class S>
concept Trainable = Scalar<S> && requires(M& m, tape<S>& t, const image_batch<S>& x, const std::vector<double>& mult) {
  { m.logits(t, x, grad_target::weights) } -> std::same_as<var<S>>;
  { m.weights() } -> std::same_as<std::vector<parameter<S>*>>;
  { m.weight_groups(mult, 1.0) } -> std::same_as<std::vector<optim::param_group<S>>>;
  { m.config() } -> std::convertible_to<const vit_config&>;
  { m.trainable_params() } -> std::convertible_to<index>;
};

}  // namespace vpdarts
