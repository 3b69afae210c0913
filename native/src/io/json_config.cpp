#include "io/json_config.h"

#include <fstream>

namespace asd {

JsonConfig JsonConfig::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw_error(ASD_ERR_IO, "cannot open config '" + path + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw_error(ASD_ERR_FORMAT, "config '" + path + "' is not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw_error(ASD_ERR_FORMAT, "config '" + path + "' is not a JSON object");
  return JsonConfig(std::move(j), path);
}

JsonConfig::JsonConfig(nlohmann::json j, std::string source) : j_(std::move(j)), source_(std::move(source)) {
  if (!j_.is_object()) throw_error(ASD_ERR_FORMAT, "config '" + source_ + "' is not a JSON object");
}

bool JsonConfig::has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }

std::vector<int64_t> JsonConfig::int_or_list(const std::string& key, int64_t fallback, size_t count) const {
  if (!has(key)) return std::vector<int64_t>(count, fallback);
  const nlohmann::json& v = j_.at(key);
  if (v.is_number_integer()) return std::vector<int64_t>(count, v.get<int64_t>());
  if (!v.is_array()) throw_error(ASD_ERR_FORMAT, "config '" + source_ + "': key '" + key + "' must be an int or a list of ints");
  if (v.size() != count) {
    throw_error(ASD_ERR_FORMAT, "config '" + source_ + "': key '" + key + "' has " + std::to_string(v.size()) + " entries, expected " +
                                    std::to_string(count));
  }
  std::vector<int64_t> out;
  for (const auto& e : v) {
    if (!e.is_number_integer()) throw_error(ASD_ERR_FORMAT, "config '" + source_ + "': key '" + key + "' must contain ints");
    out.push_back(e.get<int64_t>());
  }
  return out;
}

void JsonConfig::expect(const std::string& key, const nlohmann::json& supported) const {
  if (!has(key)) return;
  if (j_.at(key) != supported) unsupported(key, "only " + supported.dump() + " is supported");
}

std::string JsonConfig::one_of(const std::string& key, const std::string& fallback, const std::vector<std::string>& allowed) const {
  const std::string value = get<std::string>(key, fallback);
  for (const auto& a : allowed) {
    if (a == value) return value;
  }
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  unsupported(key, "supported values: " + list);
}

void JsonConfig::unsupported(const std::string& key, const std::string& why) const {
  throw_error(ASD_ERR_UNSUPPORTED, "config '" + source_ + "': unsupported value for '" + key + "' = " +
                                       (j_.contains(key) ? j_.at(key).dump() : std::string("(absent)")) + " (" + why + ")");
}

}  // namespace asd
