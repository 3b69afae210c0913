// Definitions of the opaque handle types declared in anomalysd.h, and dtype conversions for the C API.
#pragma once

#include <optional>

#include <torch/torch.h>

#include "anomalysd.h"
#include "core/live_objects.h"
#include "io/tensor_map.h"

struct asd_tensor_map : asd::CountedObject {
  asd::TensorMap map;
};

namespace asd::api {

/// asd_dtype -> torch type; ASD_DTYPE_AUTO -> nullopt; throws ASD_ERR_INVALID_ARGUMENT for unknown values.
std::optional<torch::ScalarType> to_torch_dtype(asd_dtype dtype);
/// torch type -> asd_dtype; throws ASD_ERR_UNSUPPORTED for types without a code.
asd_dtype from_torch_dtype(torch::ScalarType type);

/// Validates a (shape, ndim) pair from the C API and returns it as a vector (every entry >= 0).
std::vector<int64_t> shape_from_c(const int64_t* shape, int32_t ndim);

}  // namespace asd::api
