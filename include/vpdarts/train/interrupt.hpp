#pragma once
/// @file interrupt.hpp
/// Stopping long work between two steps. While an interrupt_scope lives on a thread, every training
/// loop on that thread (search, retraining, the lr grid, selection, pretraining) asks its poll after
/// each step and, when the poll says stop, throws vpdarts::interrupted: the step that ran is the last,
/// and a search's checkpoint (written after every whole epoch) is left as it was, so the search
/// resumes from it (`search_options::resume`) to the result an uninterrupted run gives.
///
/// ```cpp
/// std::atomic<bool> stop = false;                 // set by a signal handler, a GUI, a time limit
/// vpdarts::interrupt_scope scope([&] { return stop.load(); });
/// try { vpdarts::search(model, data, o); } catch (const vpdarts::interrupted&) { /* resume later */ }
/// ```
///
/// The poll belongs to the thread that created the scope (the one running the loops); scopes nest,
/// the innermost one is asked. Over several processes (data_parallel), each process must be stopped
/// alike, or the others wait in their next collective until its time limit.

#include <functional>
#include <string>
#include <utility>

#include "../detail/format.hpp"
#include "../error.hpp"

namespace vpdarts {

/// Installs `poll` as this thread's stop request for its lifetime (see the file's comment).
class interrupt_scope {
 public:
  /// `poll` is called after every training step; returning true stops the work there.
  explicit interrupt_scope(std::function<bool()> poll) : poll_(std::move(poll)), outer_(current()) { current() = this; }
  ~interrupt_scope() { current() = outer_; }
  interrupt_scope(const interrupt_scope&) = delete;
  interrupt_scope& operator=(const interrupt_scope&) = delete;

  /// True when the innermost scope of this thread asks to stop (false without a scope).
  static bool requested() {
    const interrupt_scope* s = current();
    return s != nullptr && s->poll_ && s->poll_();
  }

 private:
  static interrupt_scope*& current() {
    thread_local interrupt_scope* scope = nullptr;
    return scope;
  }
  std::function<bool()> poll_;
  interrupt_scope* outer_;
};

namespace detail {

/// Throws interrupted naming `who` and the step when this thread's interrupt_scope asks to stop.
inline void check_interrupt(const std::string& who, long epoch, long step) {
  if (interrupt_scope::requested())
    throw interrupted(cat(who, ": stopped at epoch ", epoch, " step ", step, " as asked"));
}

}  // namespace detail

}  // namespace vpdarts
