// Definitions of the opaque handle types declared in anomalysd.h, and dtype conversions for the C API.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include "anomalysd.h"
#include "core/live_objects.h"
#include "io/tensor_map.h"
#include "models/lpips.h"
#include "pipeline/finetune.h"
#include "pipeline/inpaint.h"
#include "pipeline/prototype_bank.h"
#include "pipeline/sd_pipeline.h"
#include "pipeline/windows.h"

struct asd_tensor_map : asd::CountedObject {
  asd::TensorMap map;
};

struct asd_model : asd::CountedObject {
  /// Owners: the handle returned to the caller, plus one per trainer created on this model. asd_model_free and
  /// asd_trainer_free release; the last release deletes, so freeing in either order is safe.
  std::atomic<int64_t> references{1};
  asd::pipeline::SdComponents components;
  nlohmann::json metadata = nlohmann::json::object();  ///< host metadata of the checkpoint it was loaded from
  nlohmann::json training = nlohmann::json::object();  ///< training counters of that checkpoint
  std::map<std::string, torch::Tensor> conditions;     ///< category -> averaged prompt embedding [1, L, D]
  std::map<std::string, torch::Tensor> prompt_ids;     ///< category -> token ids [P, L] (the naive baseline re-encodes them)
  std::string info_json;                               ///< storage for asd_model_info's string
  // Scoring (asd_model_set_scoring): prototype backbone, perceptual distance, banks.
  asd::ResNet18 resnet{nullptr};
  std::unique_ptr<asd::Lpips> distance;
  std::unique_ptr<asd::PrototypeBank> bank;
  asd::BankViews views;  ///< views of new banks (asd_scoring_options); a loaded bank's own
};

struct asd_trainer : asd::CountedObject {
  asd_model* model = nullptr;  ///< one reference held (see asd_model::references), released by the destructor
  ~asd_trainer() override;
  std::string kind;  ///< "unet" | "decoder" | "autoencoder"
  asd::pipeline::FinetuneOptions options;
  double beta = 0.1;
  std::vector<asd::pipeline::CategoryShots> data;
  std::unique_ptr<asd::pipeline::UNetFinetuner> unet;
  std::unique_ptr<asd::pipeline::DecoderFinetuner> decoder;
  std::string resume_optimizer;  ///< optimizer file to load when the finetuner is built
  int64_t resume_steps = 0;
};

namespace asd::api {

/// The C options struct as the pipeline's options.
pipeline::InpaintOptions to_inpaint_options(const asd_inpaint_options& options);
/// Its window fields (ASD_ERR_INVALID_ARGUMENT for a non-finite context or a negative size).
pipeline::WindowOptions to_window_options(const asd_inpaint_options& options);
/// The category's condition for inpainting (ASD_ERR_NOT_FOUND for an unknown category).
pipeline::InpaintCondition inpaint_condition(const asd_model& model, const std::string& category, const asd_inpaint_options& options);

/// Copies of caller buffers (row-major, `shape` all > 0, at most 2^40 elements); ASD_ERR_INVALID_ARGUMENT naming `what`
/// for a NULL pointer or a bad shape. The only way C API functions turn caller memory into tensors.
torch::Tensor float_buffer(const float* data, const std::vector<int64_t>& shape, const char* what);
torch::Tensor int64_buffer(const int64_t* data, const std::vector<int64_t>& shape, const char* what);

/// Drops one reference of `model` (NULL is ignored); deletes it with the last one.
void release(asd_model* model);

/// A device string parsed without touching any device: "cpu" (or NULL/""), "cuda" (index 0), "cuda:N" (N digits).
/// ASD_ERR_INVALID_ARGUMENT naming the string for anything else.
struct DeviceName {
  bool cuda = false;
  int index = 0;
};
DeviceName parse_device_name(const char* device);

/// "cpu", "cuda", "cuda:N" -> device; ASD_ERR_UNSUPPORTED when CUDA is asked for and not available.
torch::Device parse_device(const char* device);

/// asd_dtype -> torch type; ASD_DTYPE_AUTO -> nullopt; throws ASD_ERR_INVALID_ARGUMENT for unknown values.
std::optional<torch::ScalarType> to_torch_dtype(asd_dtype dtype);
/// torch type -> asd_dtype; throws ASD_ERR_UNSUPPORTED for types without a code.
asd_dtype from_torch_dtype(torch::ScalarType type);

/// Validates a (shape, ndim) pair from the C API and returns it as a vector (every entry >= 0).
std::vector<int64_t> shape_from_c(const int64_t* shape, int32_t ndim);

}  // namespace asd::api
