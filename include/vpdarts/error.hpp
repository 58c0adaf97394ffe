#pragma once
/// @file error.hpp
/// The one exception family of vpdarts. Every message starts with a tag
/// (`[vpdarts.shape_error]`) and names the function, the argument and the
/// shapes involved, for example
/// `[vpdarts.shape_error] matmul: a is 3x4 and b is 5x2: inner dimensions differ (4 vs 5)`.

#include <stdexcept>
#include <string>

namespace vpdarts {

/// Base of every exception vpdarts throws.
class error : public std::runtime_error {
 public:
  /// @param tag short class tag, such as "shape_error"; @param what the message.
  error(const std::string& tag, const std::string& what)
      : std::runtime_error("[vpdarts." + tag + "] " + what), message_(what) {}
  /// The message without the tag (for wrapping it in another message).
  const std::string& message() const noexcept { return message_; }

 private:
  std::string message_;
};

/// Operand shapes that do not fit an operation.
class shape_error : public error {
 public:
  /// Message `what`; what() reads \"[vpdarts.shape_error] what\".
  explicit shape_error(const std::string& what) : error("shape_error", what) {}
};

/// A value that is out of range or not finite (labels, NaN losses, bad scalars).
class value_error : public error {
 public:
  /// Message `what`; what() reads \"[vpdarts.value_error] what\".
  explicit value_error(const std::string& what) : error("value_error", what) {}
};

/// Misuse of an object's state: a stale tape variable, backward twice, the gradient of a frozen parameter.
class state_error : public error {
 public:
  /// Message `what`; what() reads \"[vpdarts.state_error] what\".
  explicit state_error(const std::string& what) : error("state_error", what) {}
};

/// A file that cannot be read or written, or whose content is malformed.
class io_error : public error {
 public:
  /// Message `what`; what() reads \"[vpdarts.io_error] what\".
  explicit io_error(const std::string& what) : error("io_error", what) {}
};

/// An invalid model, search or tool configuration.
class config_error : public error {
 public:
  /// Message `what`; what() reads \"[vpdarts.config_error] what\".
  explicit config_error(const std::string& what) : error("config_error", what) {}
};

/// A stop asked for while the work ran (Ctrl-C in Python, see train/interrupt.hpp): the work ended at
/// a step boundary, and what it had written (a search's checkpoint of its last whole epoch) is intact.
class interrupted : public error {
 public:
  /// Message `what`; what() reads \"[vpdarts.interrupted] what\".
  explicit interrupted(const std::string& what) : error("interrupted", what) {}
};

}  // namespace vpdarts
