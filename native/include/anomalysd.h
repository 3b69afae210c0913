/*
 * anomalysd.h: the only exported surface of the AnomalySD engine (libanomalysd).
 *
 * Conventions (every function follows them):
 *   - Every function returns an asd_status; ASD_OK (0) means success. On failure the thread-local message
 *     of the failure is available from asd_last_error() until the next failing call on the same thread.
 *   - Objects are opaque handles returned through out-parameters; each type has an asd_<type>_free that
 *     accepts NULL. Output pointers are written only on success.
 *   - No C++ exception crosses this boundary: every entry point catches everything, std::bad_alloc and
 *     unknown exceptions included, and turns it into a status and a message.
 *   - Strings are UTF-8 and NUL-terminated. Strings returned through `const char**` stay valid as long as
 *     the object they come from (or, for free functions, for the life of the process).
 *   - Arrays cross as pointer + element count; shapes as int64_t arrays. Tensor data is row-major, dense.
 */
#ifndef ANOMALYSD_H
#define ANOMALYSD_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(ANOMALYSD_BUILDING_DLL)
#    define ASD_API __declspec(dllexport)
#  else
#    define ASD_API __declspec(dllimport)
#  endif
#else
#  define ASD_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Status codes. The numeric values are part of the ABI. */
typedef enum asd_status {
  ASD_OK = 0,
  ASD_ERR_INVALID_ARGUMENT = 1, /**< a NULL pointer, an out-of-range value, a wrong shape */
  ASD_ERR_IO = 2,               /**< a file could not be opened, read, written or renamed */
  ASD_ERR_FORMAT = 3,           /**< a file exists but its content is malformed (corrupt, truncated, hostile) */
  ASD_ERR_NOT_FOUND = 4,        /**< a named key, tensor, category or device does not exist */
  ASD_ERR_UNSUPPORTED = 5,      /**< a valid request this build cannot do (CUDA on a CPU build, a config value) */
  ASD_ERR_OUT_OF_MEMORY = 6,    /**< an allocation failed (std::bad_alloc or a device OOM) */
  ASD_ERR_RUNTIME = 7,          /**< libtorch or the engine failed while computing */
  ASD_ERR_INTERNAL = 8          /**< an unknown exception: a bug, please report it */
} asd_status;

/** Element types of tensors crossing the boundary or stored in safetensors files. */
typedef enum asd_dtype {
  ASD_DTYPE_F32 = 0,
  ASD_DTYPE_F16 = 1,
  ASD_DTYPE_BF16 = 2,
  ASD_DTYPE_I64 = 3,
  ASD_DTYPE_F64 = 4,
  ASD_DTYPE_I32 = 5,
  ASD_DTYPE_U8 = 6,
  ASD_DTYPE_BOOL = 7,
  ASD_DTYPE_I8 = 8,
  ASD_DTYPE_I16 = 9,
  /** "keep the stored type" when loading. */
  ASD_DTYPE_AUTO = -1
} asd_dtype;

/* ---------------------------------------------------------------- errors and process-wide state */

/** The message of the last failure on the calling thread ("" if none). Never NULL; valid until the next
 *  failing call on this thread. This is the one function that does not return a status. */
ASD_API const char* asd_last_error(void);

/** Engine version ("MAJOR.MINOR.PATCH"), static storage. */
ASD_API asd_status asd_engine_version(const char** out_version);

/** Version of the libtorch the engine was built against ("1.13.0", "2.4.1", ...), static storage. */
ASD_API asd_status asd_torch_version(const char** out_version);

/** 1 if this build has CUDA kernels compiled in (ANOMALYSD_CUDA=ON), else 0. */
ASD_API asd_status asd_built_with_cuda(int32_t* out_flag);

/** Whether a CUDA device can be used now (1/0) and how many there are (0 on a CPU build). */
ASD_API asd_status asd_cuda_device_count(int32_t* out_available, int32_t* out_count);

/** Name of CUDA device `index` (0 <= index < count), copied into `buffer` (NUL-terminated, truncated to
 *  `capacity` bytes). ASD_ERR_NOT_FOUND if there is no such device. */
ASD_API asd_status asd_cuda_device_name(int32_t index, char* buffer, size_t capacity);

/** Intra-op CPU threads used by libtorch (>= 1). */
ASD_API asd_status asd_get_num_threads(int32_t* out_threads);
ASD_API asd_status asd_set_num_threads(int32_t threads);

/** Seeds libtorch's CPU and CUDA generators (same seed + same inputs -> same outputs on CPU). */
ASD_API asd_status asd_manual_seed(uint64_t seed);

/** Number of engine objects created and not yet freed (all types), for leak tests. */
ASD_API asd_status asd_live_objects(int64_t* out_count);

/* ---------------------------------------------------------------- tensor maps and safetensors files */

/** An ordered map name -> tensor (CPU), as read from or written to a safetensors file. */
typedef struct asd_tensor_map asd_tensor_map;

/** An empty map. */
ASD_API asd_status asd_tensor_map_create(asd_tensor_map** out_map);

/** Reads a safetensors file. Every header field is validated before any tensor is allocated (header length
 *  vs file size, JSON, dtype, shape x item size == byte range, ranges inside the data section and not
 *  overlapping, no duplicate names). `dtype`: ASD_DTYPE_AUTO keeps stored types; a floating type converts
 *  every floating tensor to it (F16/BF16 -> F32 on load, for instance); integer tensors are never converted.
 *  Errors: ASD_ERR_IO (cannot open/read), ASD_ERR_FORMAT (malformed), message names the file. */
ASD_API asd_status asd_safetensors_load(const char* path, asd_dtype dtype, asd_tensor_map** out_map);

/** Writes the map to `path` as safetensors (stored dtypes kept), atomically: a temporary file in the same
 *  directory is written, flushed and renamed over `path`. `metadata_json` is NULL or a JSON object of
 *  string values stored under "__metadata__". */
ASD_API asd_status asd_safetensors_save(const asd_tensor_map* map, const char* path, const char* metadata_json);

ASD_API asd_status asd_tensor_map_free(asd_tensor_map* map);

/** Number of tensors. */
ASD_API asd_status asd_tensor_map_count(const asd_tensor_map* map, int64_t* out_count);

/** Name of tensor `index` (insertion / file order). Valid while the map lives and is not modified. */
ASD_API asd_status asd_tensor_map_name(const asd_tensor_map* map, int64_t index, const char** out_name);

/** dtype, rank and shape of tensor `name`. `shape` may be NULL to query the rank only; otherwise it must
 *  have room for `shape_capacity` >= rank entries. ASD_ERR_NOT_FOUND if absent. */
ASD_API asd_status asd_tensor_map_info(const asd_tensor_map* map, const char* name, asd_dtype* out_dtype,
                                       int32_t* out_ndim, int64_t* shape, int32_t shape_capacity);

/** Copies tensor `name`, converted to float32, into `buffer` of `count` floats (count == numel). */
ASD_API asd_status asd_tensor_map_get_f32(const asd_tensor_map* map, const char* name, float* buffer, int64_t count);

/** Inserts or replaces tensor `name` from a float32 buffer of prod(shape) elements, stored as `dtype`
 *  (a floating type: F32, F16, BF16 or F64). */
ASD_API asd_status asd_tensor_map_set_f32(asd_tensor_map* map, const char* name, const float* data,
                                          const int64_t* shape, int32_t ndim, asd_dtype dtype);

/** Inserts or replaces tensor `name` from an int64 buffer of prod(shape) elements (stored as I64). */
ASD_API asd_status asd_tensor_map_set_i64(asd_tensor_map* map, const char* name, const int64_t* data,
                                          const int64_t* shape, int32_t ndim);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ANOMALYSD_H */
