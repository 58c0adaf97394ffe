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
/// one may be smaller), gathering into the same x and y each time.
template <Scalar S, class Fn>
void for_each_batch(const data::labelled_images<S>& data, index batch, Fn&& fn) {
  if (batch <= 0) throw config_error(detail::cat("for_each_batch: batch is ", batch, ", must be positive"));
  std::vector<index> rows;
  image_batch<S> x;
  std::vector<int> y;
  for (index start = 0; start < data.size(); start += batch) {
    rows.resize(static_cast<std::size_t>(std::min(batch, data.size() - start)));
    std::iota(rows.begin(), rows.end(), start);
    data.gather(rows, x, y);
    fn(start, x, y);
  }
}

/// Top-1 accuracy of `forward(tape, images) -> logits` on `data`, in batches,
/// no gradient recorded. @throws config_error for an empty set.
template <Scalar S, class Forward>
double top1_accuracy(const data::labelled_images<S>& data, index batch, Forward&& forward) {
  if (data.size() == 0) throw config_error("top1_accuracy: the data set is empty");
  tape<S> t;
  no_grad<S> guard(t);
  index correct = 0;
  for_each_batch(data, batch, [&](index, const image_batch<S>& x, const std::vector<int>& y) {
    t.reset();
    correct += count_correct(forward(t, x).value(), y);
  });
  return static_cast<double>(correct) / static_cast<double>(data.size());
}

/// Top-1 accuracy of the ViT's logits on `data`, in batches, no gradient recorded.
/// @throws shape_error when the images do not fit the model.
template <Scalar S>
double accuracy(vit<S>& model, const data::labelled_images<S>& data, index batch = 64) {
  return top1_accuracy(data, batch, [&](tape<S>& t, const image_batch<S>& x) { return model.logits(t, x); });
}

}  // namespace vpdarts
