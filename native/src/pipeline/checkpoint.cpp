#include "pipeline/checkpoint.h"

#include <filesystem>
#include <fstream>

#include "core/atomic_dir.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "io/json_config.h"

namespace fs = std::filesystem;

namespace asd::pipeline {

namespace {

/// FNV-1a 64-bit, hex.
std::string fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

nlohmann::json architecture_of(const nlohmann::json& config) {
  nlohmann::json a = config;
  for (const char* volatile_key : {"_class_name", "_diffusers_version", "_name_or_path", "sample_size", "scaling_factor", "force_upcast",
                                   "torch_dtype", "transformers_version"}) {
    a.erase(volatile_key);
  }
  return a;
}

}  // namespace

std::string architecture_fingerprint(const SdComponents& c) {
  const nlohmann::json arch = {{"unet", architecture_of(c.unet_config)},
                               {"vae", architecture_of(c.vae_config)},
                               {"text_encoder", architecture_of(c.text_encoder_config)},
                               {"prediction_type", c.scheduler_config.value("prediction_type", "epsilon")}};
  return fnv1a(arch.dump());
}

void save_checkpoint(const SdComponents& c, const std::string& directory, const nlohmann::json& metadata, const nlohmann::json& training,
                     const std::function<void(const std::string&)>& extra) {
  write_directory_atomically(directory, "checkpoint", [&](const fs::path& staging) {
    save_folder(c, staging.string(), {{"anomalysd_checkpoint", true}});
    if (extra) extra(staging.string());
    const nlohmann::json manifest = {{"format", kCheckpointFormat},
                                     {"format_version", kCheckpointFormatVersion},
                                     {"engine_version", ANOMALYSD_VERSION},
                                     {"architecture_fingerprint", architecture_fingerprint(c)},
                                     {"model_source", c.source},
                                     {"metadata", metadata},
                                     {"training", training}};
    write_file_atomically(staging / "anomalysd.json", [&](std::ostream& out) { out << manifest.dump(2) << "\n"; });
  });
}

bool is_checkpoint(const std::string& directory) { return fs::exists(fs::path(directory) / "anomalysd.json"); }

nlohmann::json read_checkpoint_manifest(const std::string& directory) {
  const std::string path = (fs::path(directory) / "anomalysd.json").string();
  const nlohmann::json m = JsonConfig::load(path).json();
  if (m.value("format", "") != kCheckpointFormat) {
    throw_error(ASD_ERR_FORMAT, "'" + path + "' is not an AnomalySD checkpoint manifest (format '" + m.value("format", "") + "')");
  }
  const int version = m.value("format_version", 0);
  if (version != kCheckpointFormatVersion) {
    throw_error(ASD_ERR_UNSUPPORTED, "checkpoint '" + directory + "' has format_version " + std::to_string(version) + " (written by engine " +
                                         m.value("engine_version", "?") + "); this engine (" + ANOMALYSD_VERSION + ") reads version " +
                                         std::to_string(kCheckpointFormatVersion));
  }
  return m;
}

void check_architecture(const nlohmann::json& manifest, const std::string& expected, const std::string& directory) {
  const std::string found = manifest.value("architecture_fingerprint", "");
  if (found != expected) {
    throw_error(ASD_ERR_UNSUPPORTED, "checkpoint '" + directory + "' was made for another architecture (fingerprint " + found +
                                         ", model source '" + manifest.value("model_source", "?") + "'); expected fingerprint " + expected);
  }
}

}  // namespace asd::pipeline
