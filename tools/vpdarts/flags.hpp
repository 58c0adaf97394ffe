#pragma once
// Command-line flags for the vpdarts tool: `--name value`, `--name=value`,
// boolean switches, positional arguments, `--config FILE.json` (keys are flag
// names without the dashes; flags on the command line win), generated --help.
// A bad flag or value throws usage_error, which the tool turns into exit code 2.

#include <cmath>
#include <filesystem>
#include <map>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <vpdarts/detail/format.hpp>
#include <vpdarts/io/json.hpp>

namespace vpdarts_cli {

/// A mistake on the command line (exit code 2).
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class flags {
 public:
  flags(std::string command, std::string summary) : command_(std::move(command)), summary_(std::move(summary)) {}

  /// A flag that takes a value. The target's current value is the default shown by --help.
  void add(const std::string& name, std::string& target, const std::string& help, std::string value_name = "TEXT") {
    specs_.push_back({name, value_name, help, target, [&target](const std::string& v) { target = v; }, false, nullptr});
  }
  void add(const std::string& name, long& target, const std::string& help, std::string value_name = "N") {
    specs_.push_back({name, value_name, help, std::to_string(target),
                      [this, name, &target](const std::string& v) { target = parse_long(name, v); }, false, nullptr});
  }
  void add(const std::string& name, std::uint64_t& target, const std::string& help, std::string value_name = "N") {
    specs_.push_back({name, value_name, help, std::to_string(target),
                      [this, name, &target](const std::string& v) {
                        const auto x = vpdarts::detail::parse_number<std::uint64_t>(v);
                        if (!x) fail("--" + name + " wants an integer in 0.." + std::to_string(UINT64_MAX) + ", got '" + v + "'");
                        target = *x;
                      },
                      false, nullptr});
  }
  void add(const std::string& name, double& target, const std::string& help, std::string value_name = "X") {
    std::ostringstream def;
    def << target;
    specs_.push_back({name, value_name, help, def.str(),
                      [this, name, &target](const std::string& v) { target = parse_double(name, v); }, false, nullptr});
  }
  /// A switch: `--name` sets it, `--no-name` clears it.
  void add_switch(const std::string& name, bool& target, const std::string& help) {
    specs_.push_back({name, "", help, target ? "on" : "off", nullptr, true, &target});
  }
  /// Positional arguments are collected here (the command rejects them when this is not called).
  void positional(std::vector<std::string>& target, std::string name) {
    positional_ = &target;
    positional_name_ = std::move(name);
  }
  /// Every flag given (on the command line or in the config file) with its value as given, by name;
  /// the rest have their defaults.
  const std::map<std::string, std::string>& given() const noexcept { return given_; }
  /// An extra line for --help.
  void note(std::string text) { notes_.push_back(std::move(text)); }

  /// Parses argv[first..]; returns false when --help was asked (the help is printed).
  /// @throws usage_error for an unknown flag, a missing or bad value, or a bad config file.
  bool parse(int argc, char** argv, int first) {
    std::vector<std::pair<std::string, std::string>> given;  // command-line flags, applied after the config
    std::string config;
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        print_help();
        return false;
      }
      if (a.rfind("--", 0) != 0 || a.size() == 2) {
        if (!positional_) fail("unexpected argument '" + a + "'");
        positional_->push_back(a);
        continue;
      }
      std::string name = a.substr(2), value;
      bool has_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      if (name == "config") {
        if (!has_value) {
          if (i + 1 >= argc) fail("--config needs a file");
          value = argv[++i];
        }
        config = value;
        continue;
      }
      const spec* s = find(name);
      bool negated = false;
      if (!s && name.rfind("no-", 0) == 0) {
        s = find(name.substr(3));
        negated = s && s->is_switch;
        if (!negated) s = nullptr;
      }
      if (!s) fail("unknown flag '--" + name + "'" + suggestion(name));
      if (s->is_switch) {
        if (has_value) fail("--" + name + " is a switch and takes no value");
        given.emplace_back(s->name, negated ? "false" : "true");
        continue;
      }
      if (!has_value) {
        if (i + 1 >= argc) fail("--" + name + " needs a value (" + s->value_name + ")");
        value = argv[++i];
      }
      given.emplace_back(s->name, value);
    }
    if (!config.empty()) apply_config(config);
    for (auto& [name, value] : given) set(*find(name), value, "");
    return true;
  }

  void print_help() const {
    std::printf("usage: vpdarts %s [flags]%s\n\n%s\n\nflags:\n", command_.c_str(),
                positional_ ? (" " + positional_name_ + "...").c_str() : "", summary_.c_str());
    for (const auto& s : specs_) {
      std::string left = "  --" + s.name + (s.is_switch ? "" : " " + s.value_name);
      if (left.size() < 30) left.append(30 - left.size(), ' ');
      else left += "\n" + std::string(30, ' ');
      std::printf("%s%s%s\n", left.c_str(), s.help.c_str(),
                  s.default_text.empty() ? "" : (" [" + s.default_text + "]").c_str());
    }
    std::printf("  --config FILE.json          flags from a JSON object {\"flag-name\": value, ...}; the command line wins\n"
                "  --help                      this text\n");
    for (const auto& n : notes_) std::printf("\n%s\n", n.c_str());
  }

 private:
  struct spec {
    std::string name, value_name, help, default_text;
    std::function<void(const std::string&)> set;
    bool is_switch;
    bool* flag;
  };

  [[noreturn]] void fail(const std::string& why) const {
    throw usage_error("vpdarts " + command_ + ": " + why + " (see vpdarts " + command_ + " --help)");
  }

  const spec* find(const std::string& name) const {
    std::string n = name;
    for (auto& c : n)
      if (c == '_') c = '-';
    for (const auto& s : specs_)
      if (s.name == n) return &s;
    return nullptr;
  }

  std::string suggestion(const std::string& name) const {
    // the flag with the longest common prefix, when it shares at least three characters
    std::string best;
    std::size_t best_len = 2;
    for (const auto& s : specs_) {
      std::size_t k = 0;
      while (k < s.name.size() && k < name.size() && s.name[k] == name[k]) ++k;
      if (k > best_len) {
        best_len = k;
        best = s.name;
      }
    }
    return best.empty() ? "" : "; did you mean --" + best + "?";
  }

  /// Sets one flag; `config` names the config file the value came from (empty: the command line).
  void set(const spec& s, const std::string& value, const std::string& config) {
    try {
      if (s.is_switch) {
        if (value != "true" && value != "false") fail("--" + s.name + " wants true or false, got '" + value + "'");
        *s.flag = value == "true";
      } else {
        s.set(value);
      }
      given_[s.name] = value;
    } catch (const usage_error& e) {
      if (config.empty()) throw;
      throw usage_error(std::string(e.what()) + " [key '" + s.name + "' in the config file '" + config + "']");
    }
  }

  void apply_config(const std::string& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) fail("the config file '" + path + "' is a folder, not a JSON file");
    std::ifstream in(path);
    if (!in) fail("cannot open the config file '" + path + "'");
    nlohmann::json j;
    try {
      j = vpdarts::io::parse_json(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()),
                                  "the config file '" + path + "'");
    } catch (const vpdarts::io_error& e) {
      fail(e.message() + " (the config file is not JSON)");
    }
    if (!j.is_object()) fail("the config file '" + path + "' must hold a JSON object of flag names to values");
    for (auto it = j.begin(); it != j.end(); ++it) {
      const spec* s = find(it.key());
      if (!s) fail("unknown key '" + it.key() + "' in the config file '" + path + "'" + suggestion(it.key()));
      const auto& v = it.value();
      std::string text;
      if (v.is_string()) text = v.get<std::string>();
      else if (v.is_boolean()) text = v.get<bool>() ? "true" : "false";
      else if (v.is_number()) text = v.dump();  // exactly as written (a huge integer stays one, and is refused)
      else if (v.is_array()) {
        for (std::size_t i = 0; i < v.size(); ++i) text += (i ? "," : "") + (v[i].is_string() ? v[i].get<std::string>() : v[i].dump());
      } else {
        fail("key '" + it.key() + "' in '" + path + "' has a value of the wrong kind");
      }
      set(*s, text, path);
    }
  }

  long parse_long(const std::string& name, const std::string& v) const {
    const auto x = vpdarts::detail::parse_number<long>(v);
    if (!x) fail("--" + name + " wants an integer, got '" + v + "'");
    return *x;
  }
  double parse_double(const std::string& name, const std::string& v) const {
    const auto x = vpdarts::detail::parse_number<double>(v);
    if (!x) fail("--" + name + " wants a number, got '" + v + "'");
    return *x;
  }

  std::string command_, summary_;
  std::vector<spec> specs_;
  std::map<std::string, std::string> given_;
  std::vector<std::string>* positional_ = nullptr;
  std::string positional_name_;
  std::vector<std::string> notes_;
};

}  // namespace vpdarts_cli
