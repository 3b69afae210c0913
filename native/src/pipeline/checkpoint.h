// AnomalySD checkpoints: one directory that is a loadable diffusers folder (model_index.json, unet/, vae/,
// text_encoder/, scheduler/) plus
//   anomalysd.json        format + version, engine version, architecture fingerprint, the host's metadata
//                         (categories with prompts and noise_strength, options, distance), training counters
//   optimizer.pt          Adam state of the UNet fine-tuning (for resuming), optional
//   prototype_banks.safetensors  (written by the host through the prototype-bank API), optional
// The directory is written beside the target and renamed into place, so a failure never leaves a
// half-written checkpoint behind.
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "pipeline/sd_pipeline.h"

namespace asd::pipeline {

constexpr const char* kCheckpointFormat = "anomalysd-checkpoint";
constexpr int kCheckpointFormatVersion = 1;

/// A short hash of the architecture (UNet, VAE and text-encoder configs, scheduler prediction type):
/// checkpoints of different architectures have different fingerprints.
std::string architecture_fingerprint(const SdComponents& components);

/// Writes `components` and anomalysd.json (with `metadata`, any JSON object the host wants stored) to
/// `directory`. `extra(dir)` may add files (optimizer state, banks) into the staging directory before it is
/// renamed into place. An existing checkpoint at `directory` is replaced only once the new one is complete.
void save_checkpoint(const SdComponents& components, const std::string& directory, const nlohmann::json& metadata,
                     const nlohmann::json& training = nlohmann::json::object(),
                     const std::function<void(const std::string&)>& extra = {});

/// True if `directory` holds anomalysd.json (an AnomalySD checkpoint rather than a plain diffusers folder).
bool is_checkpoint(const std::string& directory);

/// Reads and validates anomalysd.json: ASD_ERR_FORMAT for a corrupt file or another format, ASD_ERR_UNSUPPORTED
/// for a checkpoint written by an incompatible engine (another format_version), both naming the file.
nlohmann::json read_checkpoint_manifest(const std::string& directory);

/// ASD_ERR_UNSUPPORTED if the checkpoint's architecture fingerprint is not `expected` (e.g. resuming a
/// `compact` checkpoint with an SD model), naming both.
void check_architecture(const nlohmann::json& manifest, const std::string& expected, const std::string& directory);

}  // namespace asd::pipeline
