#pragma once
// A progress bar for long loops: epoch, step, loss, accuracy, images/s, ETA.
// On a terminal it redraws one line; otherwise it prints a plain line every
// `every` steps and at the end of each epoch.

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <cstdio>
#include <string>

namespace vpdarts::detail {

class progress {
 public:
  progress(std::string label, long epochs, long steps_per_epoch, long every = 10)
      : label_(std::move(label)), epochs_(epochs), steps_(steps_per_epoch), every_(every),
        tty_(isatty(fileno(stdout)) != 0), start_(clock::now()) {}

  /// Marks the epochs before `epoch` (1-based) as done before this run started
  /// (a resumed run), so that images/s and the ETA count this run's steps only.
  void resume_at(long epoch) noexcept { skipped_ = (epoch - 1) * steps_; }

  /// Reports step `step` (1-based) of epoch `epoch` (1-based): the running mean
  /// loss, the accuracy (not shown when negative), a validation loss (not shown
  /// when NaN), and the images this step consumed.
  void update(long epoch, long step, double loss, double accuracy, long images,
              double val_loss = std::numeric_limits<double>::quiet_NaN()) {
    images_ += images;
    const double elapsed = std::chrono::duration<double>(clock::now() - start_).count();
    const long done = (epoch - 1) * steps_ + step - skipped_, total = epochs_ * steps_ - skipped_;
    const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total - done) : 0;
    const bool end = step == steps_;
    if (!tty_ && !end && step % every_ != 0) return;
    char extra[64] = "";
    int n = 0;
    if (std::isfinite(val_loss)) n += std::snprintf(extra + n, sizeof extra - static_cast<std::size_t>(n), "  val %.4f", val_loss);
    if (accuracy >= 0) std::snprintf(extra + n, sizeof extra - static_cast<std::size_t>(n), "  acc %.3f", accuracy);
    std::printf("%s%s epoch %ld/%ld step %ld/%ld  loss %.4f%s  %.1f img/s  ETA %s%s", tty_ ? "\r" : "", label_.c_str(),
                epoch, epochs_, step, steps_, loss, extra, elapsed > 0 ? static_cast<double>(images_) / elapsed : 0.0,
                clock_str(eta).c_str(), tty_ ? (end ? "\n" : "   ") : "\n");
    std::fflush(stdout);
  }

  double seconds() const { return std::chrono::duration<double>(clock::now() - start_).count(); }

  static std::string clock_str(double s) {
    const long t = static_cast<long>(s + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
    return buf;
  }

 private:
  using clock = std::chrono::steady_clock;
  std::string label_;
  long epochs_, steps_, every_;
  bool tty_;
  clock::time_point start_;
  long images_ = 0;
  long skipped_ = 0;
};

}  // namespace vpdarts::detail
