// Reading diffusers / transformers config.json files with explicit errors.
//
// Rule: a key we do not know is ignored (configs carry bookkeeping such as "_class_name"), but a known key
// whose value this engine does not implement is an ASD_ERR_UNSUPPORTED error naming the file and the key;
// it is never silently replaced by a default.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace asd {

class JsonConfig {
 public:
  /// Reads and parses `path` (ASD_ERR_IO if unreadable, ASD_ERR_FORMAT if not a JSON object).
  static JsonConfig load(const std::string& path);
  JsonConfig(nlohmann::json j, std::string source);

  const nlohmann::json& json() const { return j_; }
  const std::string& source() const { return source_; }

  /// True if `key` is present and not null.
  bool has(const std::string& key) const;

  /// The value of `key` converted to T, or `fallback` if absent/null. ASD_ERR_FORMAT on a wrong type.
  template <class T>
  T get(const std::string& key, const T& fallback) const {
    if (!has(key)) return fallback;
    return convert<T>(key);
  }
  /// The value of `key`; ASD_ERR_FORMAT naming the key if it is absent or of the wrong type.
  template <class T>
  T require(const std::string& key) const {
    if (!has(key)) throw_error(ASD_ERR_FORMAT, "config '" + source_ + "': missing required key '" + key + "'");
    return convert<T>(key);
  }
  /// An int or a list of ints (e.g. attention_head_dim): a single int is repeated `count` times; a list must
  /// have exactly `count` entries.
  std::vector<int64_t> int_or_list(const std::string& key, int64_t fallback, size_t count) const;

  /// ASD_ERR_UNSUPPORTED unless `key` is absent, null, or equal to `supported`.
  void expect(const std::string& key, const nlohmann::json& supported) const;
  /// ASD_ERR_UNSUPPORTED unless the string value of `key` (or `fallback`) is one of `allowed`; returns it.
  std::string one_of(const std::string& key, const std::string& fallback, const std::vector<std::string>& allowed) const;

  [[noreturn]] void unsupported(const std::string& key, const std::string& why) const;

 private:
  template <class T>
  T convert(const std::string& key) const {
    try {
      return j_.at(key).get<T>();
    } catch (const nlohmann::json::exception&) {
      throw_error(ASD_ERR_FORMAT, "config '" + source_ + "': key '" + key + "' has the wrong type (" + j_.at(key).dump() + ")");
    }
  }
  nlohmann::json j_;
  std::string source_;
};

}  // namespace asd
