#pragma once
/// @file accuracy.hpp
/// Top-1 accuracy of any model on a labelled set, in batches with no gradient
/// recorded, and the helpers every trainer shares to count it.

#include <algorithm>
#include <numeric>
#include <span>
#include <vector>

#include "../autodiff/tape.hpp"
#include "../data/labelled_images.hpp"
#include "../vit/vit.hpp"
#include "data_parallel.hpp"

namespace vpdarts {

/// Number of rows of `logits` (B x classes) whose argmax is the label.
template <class Logits>
index count_correct(const Logits& logits, std::span<const int> labels) {
  index correct = 0;
  for (index i = 0; i < logits.rows(); ++i) {
    index arg;
    logits.row(i).maxCoeff(&arg);
    correct += arg == labels[static_cast<std::size_t>(i)];
  }
  return correct;
}

/// Calls fn(start, x, y) for consecutive batches of `data` in order (the last
/// one may be smaller), gathering into the same x and y each time; only rows
/// `first` .. `first + count` when given (count < 0: to the end).
template <Scalar S, class Fn>
void for_each_batch(const data::labelled_images<S>& data, index batch, Fn&& fn, index first = 0, index count = -1) {
  if (batch <= 0) throw config_error(detail::cat("for_each_batch: batch is ", batch, ", must be positive"));
  const index end = count < 0 ? data.size() : first + count;
  if (first < 0 || end > data.size())
    throw config_error(detail::cat("for_each_batch: rows ", first, "..", end, " of ", data.size()));
  std::vector<index> rows;
  image_batch<S> x;
  std::vector<int> y;
  for (index start = first; start < end; start += batch) {
    rows.resize(static_cast<std::size_t>(std::min(batch, end - start)));
    std::iota(rows.begin(), rows.end(), start);
    data.gather(rows, x, y);
    fn(start, x, y);
  }
}

/// Calls fn(tape, x, y) for this process's share of `data` (all of it with one process),
/// in batches, on one tape (running as `execution` says) reset before every batch and recording no gradient.
template <Scalar S, class Fn>
void for_each_scored_batch(const data::labelled_images<S>& data, index batch, const data_parallel& parallel, Fn&& fn,
                           const execution_config& execution = {}) {
  tape<S> t(execution);
  no_grad<S> guard(t);
  const auto share = parallel.share_of(data.size());
  for_each_batch(
      data, batch,
      [&](index, const image_batch<S>& x, const std::vector<int>& y) {
        t.reset();
        fn(t, x, y);
      },
      share.first, share.count);
}

/// Top-1 accuracy of `forward(tape, images) -> logits` on `data`, in batches,
/// no gradient recorded; with `parallel` over several processes each
/// evaluates its share of the images and the counts are summed. The tape runs as `execution` says.
/// @throws config_error for an empty set.
template <Scalar S, class Forward>
double top1_accuracy(const data::labelled_images<S>& data, index batch, Forward&& forward,
                     const data_parallel& parallel = {}, const execution_config& execution = {}) {
  if (data.size() == 0) throw config_error("top1_accuracy: the data set is empty");
  index correct = 0;
  for_each_scored_batch(
      data, batch, parallel,
      [&](tape<S>& t, const image_batch<S>& x, const std::vector<int>& y) {
        correct += count_correct(forward(t, x).value(), y);
      },
      execution);
  return static_cast<double>(parallel.sum(correct)) / static_cast<double>(data.size());
}

/// Top-1 accuracy of the ViT's logits on `data`, in batches, no gradient recorded
/// (shared over the processes of `parallel`, as top1_accuracy()).
/// @throws shape_error when the images do not fit the model.
template <Scalar S>
double accuracy(vit<S>& model, const data::labelled_images<S>& data, index batch = 64, const data_parallel& parallel = {},
                const execution_config& execution = {}) {
  return top1_accuracy(
      data, batch, [&](tape<S>& t, const image_batch<S>& x) { return model.logits(t, x); }, parallel, execution);
}

}  // namespace vpdarts
