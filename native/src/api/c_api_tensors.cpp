// C API: tensor maps and safetensors files.
#include <cstring>

#include <nlohmann/json.hpp>

#include "api/guard.h"
#include "api/handles.h"
#include "io/safetensors.h"

namespace asd::api {

namespace {
const std::pair<asd_dtype, torch::ScalarType> kDtypes[] = {
    {ASD_DTYPE_F32, torch::kFloat32}, {ASD_DTYPE_F16, torch::kFloat16}, {ASD_DTYPE_BF16, torch::kBFloat16},
    {ASD_DTYPE_I64, torch::kInt64},   {ASD_DTYPE_F64, torch::kFloat64}, {ASD_DTYPE_I32, torch::kInt32},
    {ASD_DTYPE_U8, torch::kUInt8},    {ASD_DTYPE_BOOL, torch::kBool},   {ASD_DTYPE_I8, torch::kInt8},
    {ASD_DTYPE_I16, torch::kInt16},
};
}  // namespace

std::optional<torch::ScalarType> to_torch_dtype(asd_dtype dtype) {
  if (dtype == ASD_DTYPE_AUTO) return std::nullopt;
  for (const auto& [code, type] : kDtypes) {
    if (code == dtype) return type;
  }
  throw_error(ASD_ERR_INVALID_ARGUMENT, "unknown asd_dtype value " + std::to_string(static_cast<int>(dtype)));
}

asd_dtype from_torch_dtype(torch::ScalarType type) {
  for (const auto& [code, t] : kDtypes) {
    if (t == type) return code;
  }
  throw_error(ASD_ERR_UNSUPPORTED, std::string("dtype ") + c10::toString(type) + " has no asd_dtype code");
}

std::vector<int64_t> shape_from_c(const int64_t* shape, int32_t ndim) {
  require(ndim >= 0 && ndim <= 64, "ndim must be in [0, 64], got " + std::to_string(ndim));
  require(ndim == 0 || shape != nullptr, "shape is NULL");
  std::vector<int64_t> out(shape, shape + ndim);
  for (int64_t d : out) require(d >= 0, "shape entries must be >= 0, got " + std::to_string(d));
  return out;
}

}  // namespace asd::api

using asd::api::not_null;

namespace {
const asd::TensorMap& map_of(const asd_tensor_map* m) { return not_null(m, "map")->map; }
std::string name_of(const char* name) { return std::string(not_null(name, "name")); }
}  // namespace

extern "C" {

ASD_API asd_status asd_tensor_map_create(asd_tensor_map** out_map) {
  return ASD_GUARD({ *not_null(out_map, "out_map") = new asd_tensor_map(); });
}

ASD_API asd_status asd_safetensors_load(const char* path, asd_dtype dtype, asd_tensor_map** out_map) {
  return ASD_GUARD({
    not_null(out_map, "out_map");
    auto handle = std::make_unique<asd_tensor_map>();
    handle->map = asd::safetensors::load(not_null(path, "path"), asd::api::to_torch_dtype(dtype));
    *out_map = handle.release();
  });
}

ASD_API asd_status asd_safetensors_save(const asd_tensor_map* map, const char* path, const char* metadata_json) {
  return ASD_GUARD({
    std::map<std::string, std::string> metadata;
    if (metadata_json != nullptr) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(metadata_json);
      } catch (const nlohmann::json::exception& e) {
        asd::throw_error(ASD_ERR_INVALID_ARGUMENT, std::string("metadata_json is not valid JSON: ") + e.what());
      }
      asd::require(j.is_object(), "metadata_json must be a JSON object");
      for (auto it = j.begin(); it != j.end(); ++it) {
        asd::require(it.value().is_string(), "metadata value '" + it.key() + "' must be a string");
        metadata[it.key()] = it.value().get<std::string>();
      }
    }
    asd::safetensors::save(not_null(path, "path"), map_of(map), metadata);
  });
}

ASD_API asd_status asd_tensor_map_free(asd_tensor_map* map) {
  return ASD_GUARD({ delete map; });
}

ASD_API asd_status asd_tensor_map_count(const asd_tensor_map* map, int64_t* out_count) {
  return ASD_GUARD({ *not_null(out_count, "out_count") = static_cast<int64_t>(map_of(map).size()); });
}

ASD_API asd_status asd_tensor_map_name(const asd_tensor_map* map, int64_t index, const char** out_name) {
  return ASD_GUARD({
    const asd::TensorMap& m = map_of(map);
    not_null(out_name, "out_name");
    if (index < 0 || index >= static_cast<int64_t>(m.size())) {
      asd::throw_error(ASD_ERR_NOT_FOUND, "index " + std::to_string(index) + " out of range [0, " + std::to_string(m.size()) + ")");
    }
    *out_name = m.names()[static_cast<size_t>(index)].c_str();
  });
}

ASD_API asd_status asd_tensor_map_info(const asd_tensor_map* map, const char* name, asd_dtype* out_dtype,
                                       int32_t* out_ndim, int64_t* shape, int32_t shape_capacity) {
  return ASD_GUARD({
    const torch::Tensor& t = map_of(map).at(name_of(name));
    const auto ndim = static_cast<int32_t>(t.dim());
    if (shape != nullptr) {
      asd::require(shape_capacity >= ndim, "shape_capacity " + std::to_string(shape_capacity) + " < rank " + std::to_string(ndim));
      for (int32_t i = 0; i < ndim; ++i) shape[i] = t.size(i);
    }
    if (out_dtype != nullptr) *out_dtype = asd::api::from_torch_dtype(t.scalar_type());
    if (out_ndim != nullptr) *out_ndim = ndim;
  });
}

ASD_API asd_status asd_tensor_map_get_f32(const asd_tensor_map* map, const char* name, float* buffer, int64_t count) {
  return ASD_GUARD({
    const torch::Tensor& t = map_of(map).at(name_of(name));
    not_null(buffer, "buffer");
    asd::require(count == t.numel(), "buffer holds " + std::to_string(count) + " floats but tensor '" + name_of(name) + "' has " +
                                         std::to_string(t.numel()) + " elements");
    torch::Tensor f = t.to(torch::kCPU, torch::kFloat32).contiguous();
    std::memcpy(buffer, f.data_ptr<float>(), static_cast<size_t>(count) * sizeof(float));
  });
}

ASD_API asd_status asd_tensor_map_set_f32(asd_tensor_map* map, const char* name, const float* data, const int64_t* shape,
                                          int32_t ndim, asd_dtype dtype) {
  return ASD_GUARD({
    not_null(map, "map");
    const std::vector<int64_t> dims = asd::api::shape_from_c(shape, ndim);
    const auto type = asd::api::to_torch_dtype(dtype);
    asd::require(type && c10::isFloatingType(*type), "dtype must be a floating type (F32, F16, BF16 or F64)");
    torch::Tensor t = torch::empty(dims, torch::kFloat32);
    asd::require(t.numel() == 0 || data != nullptr, "data is NULL");
    if (t.numel() > 0) std::memcpy(t.data_ptr<float>(), data, static_cast<size_t>(t.numel()) * sizeof(float));
    map->map.set(name_of(name), t.to(*type));
  });
}

ASD_API asd_status asd_tensor_map_set_i64(asd_tensor_map* map, const char* name, const int64_t* data, const int64_t* shape,
                                          int32_t ndim) {
  return ASD_GUARD({
    not_null(map, "map");
    const std::vector<int64_t> dims = asd::api::shape_from_c(shape, ndim);
    torch::Tensor t = torch::empty(dims, torch::kInt64);
    asd::require(t.numel() == 0 || data != nullptr, "data is NULL");
    if (t.numel() > 0) std::memcpy(t.data_ptr<int64_t>(), data, static_cast<size_t>(t.numel()) * sizeof(int64_t));
    map->map.set(name_of(name), t);
  });
}

}  // extern "C"
