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
 *   - Strings are UTF-8 and NUL-terminated.
 *   - Arrays cross as pointer + element count; shapes as int64_t arrays. Tensor data is row-major, dense. Input
 *     buffers are read during the call only (copied when kept).
 *   - Lifetimes: a trainer holds a reference to its model, so asd_model_free and asd_trainer_free may come in either
 *     order; every other handle is independent of the others.
 *   - Threads: different handles may be used from different threads at once. One handle must not be used by two
 *     threads at once (a model's scoring calls update its caches and its info string; a trainer updates its
 *     optimizer): serialise calls per handle, or give each thread (each device) its own model. A model and its
 *     trainer count as one handle while the trainer runs. The process-wide calls (versions, devices, threads, seeds,
 *     peak memory, live objects) may be called from any thread.
 *   - Strings returned through `const char**` live as long as the object they come from and until the next call
 *     on it that returns a string (asd_model_info), or, for functions without an object, for the life of the
 *     process (versions); asd_last_error's until the next failing call on the same thread.
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

/** Peak memory accounting for benchmarks. `device` "cpu": the process's peak resident set (Linux VmHWM; the reset
 *  writes /proc/self/clear_refs); "cuda[:N]": the CUDA caching allocator's peak allocated bytes on that device.
 *  ASD_ERR_UNSUPPORTED where the platform gives no such figure. */
ASD_API asd_status asd_peak_memory_reset(const char* device);
ASD_API asd_status asd_peak_memory(const char* device, int64_t* out_bytes);

/** The GEMM throughput of `device` in `dtype` (F32, F16, BF16), measured now: the best of 5 timed n x n matrix products
 *  (after 2 warm-ups), 2 n^3 / seconds / 1e9. The ceiling the benchmark compares the UNet's achieved GFLOP/s with. */
ASD_API asd_status asd_gemm_peak_gflops(const char* device, asd_dtype dtype, int64_t n, double* out_gflops);

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

/* ---------------------------------------------------------------- Stable Diffusion inpainting models */

/** The inpainting model (UNet, VAE, text encoder, DDIM configuration) plus the host's checkpoint metadata and
 *  the per-category prompt conditions. */
typedef struct asd_model asd_model;
typedef struct asd_trainer asd_trainer;

/** The `compact` preset with fresh weights (seeded), for training from scratch. `device`: "cpu", "cuda",
 *  "cuda:N" (ASD_ERR_UNSUPPORTED without CUDA). */
ASD_API asd_status asd_model_create_compact(uint64_t seed, const char* device, asd_model** out_model);

/** A preset architecture with fresh random weights: "compact" (as asd_model_create_compact) or "sd2-inpainting"
 *  (the Stable Diffusion 2 inpainting architecture, for timing without a checkpoint), in `dtype` (F32/F16/BF16). */
ASD_API asd_status asd_model_create_preset(const char* name, uint64_t seed, const char* device, asd_dtype dtype, asd_model** out_model);

/** Loads a diffusers SD inpainting folder, an AnomalySD checkpoint (a folder with anomalysd.json) or a single-file
 *  checkpoint (a file path: see asd_model_load_single_file), converting weights to `dtype` (F32, F16 or BF16). Errors name the file, the key and the shapes (see the README). */
ASD_API asd_status asd_model_load(const char* folder, const char* device, asd_dtype dtype, asd_model** out_model);

/** Options of single-file checkpoints (fill with asd_single_file_options_default; NULL fields = the defaults).
 *  Strings are read during the call only. */
typedef struct asd_single_file_options {
  /** A diffusers-layout folder whose unet/, vae/ and text_encoder/ hold config.json (weights there are ignored) and,
   *  optionally, scheduler/scheduler_config.json, for files that are not a standard model. NULL: the architecture is
   *  read from the weights (head counts: SD 1.x 8 heads, SD 2.x head dimension 64). */
  const char* model_config;
  /** NULL: epsilon (SD's inpainting models), or model_config's scheduler; else "epsilon", "v_prediction" or "sample". */
  const char* prediction_type;
  /** asd_convert_single_file only: a folder with the CLIP BPE files (vocab.json, merges.txt); NULL = model_config/tokenizer. */
  const char* tokenizer;
} asd_single_file_options;

ASD_API asd_status asd_single_file_options_default(asd_single_file_options* out_options);

/** Loads a single-file Stable Diffusion checkpoint in the original (LDM) layout: `.safetensors`, or PyTorch's zip
 *  `.ckpt` read by a restricted unpickler (only tensors and state-dict containers; any other pickle global is refused
 *  and nothing is executed; the legacy pre-1.6 format is refused with how to re-save it). The file is memory-mapped;
 *  each weight is copied once, converted to `dtype` (F32, F16, BF16; ASD_DTYPE_AUTO = the file's). asd_model_load
 *  does the same for a file path with default options. asd_model_info's "single_file" says what was detected.
 *  Errors name the file and the key: ASD_ERR_NOT_FOUND (a missing weight), ASD_ERR_FORMAT (a mis-shaped weight, a
 *  malformed file), ASD_ERR_UNSUPPORTED (a refused pickle global, a compressed entry, a non-inpainting UNet). */
ASD_API asd_status asd_model_load_single_file(const char* path, const asd_single_file_options* options, const char* device,
                                              asd_dtype dtype, asd_model** out_model);

/** Converts a single-file checkpoint to a diffusers folder `out_folder` (unet/, vae/, text_encoder/, tokenizer/,
 *  scheduler/, model_index.json; safetensors in the file's dtype), written atomically (staged beside it, then
 *  renamed). A non-empty `out_folder` that an earlier conversion did not write is refused (ASD_ERR_INVALID_ARGUMENT).
 *  The tokenizer files come from options->tokenizer or model_config/tokenizer (ASD_ERR_IO when neither has them). */
ASD_API asd_status asd_convert_single_file(const char* path, const asd_single_file_options* options, const char* out_folder);

/** Writes the model's UNet, VAE and text encoder as one single-file checkpoint in the original (LDM) layout
 *  (safetensors, atomically, in the model's dtype), with the extra keys real files carry (betas, alphas_cumprod,
 *  model_ema.*; for SD 2.x OpenCLIP's unused last block, text_projection, logit_scale). `sd_version` 1 writes the
 *  text encoder under OpenAI CLIP's names, 2 under OpenCLIP's. For tests and benchmarks. */
ASD_API asd_status asd_model_save_single_file(const asd_model* model, const char* path, int32_t sd_version);

/** Writes an AnomalySD checkpoint to `folder` (atomically: staged, then renamed). `metadata_json` (a JSON object,
 *  may be NULL) is stored in anomalysd.json and returned by asd_model_info after loading. `unet_trainer` (may be
 *  NULL): its optimizer state and step count are saved too, so asd_trainer_resume can continue training. */
ASD_API asd_status asd_model_save(const asd_model* model, const char* folder, const char* metadata_json, const asd_trainer* unet_trainer);

/** A JSON description: {"source", "device", "dtype", "latent_channels", "vae_scale_factor", "scaling_factor",
 *  "parameters": {"unet", "vae", "text_encoder"}, "architecture_fingerprint", "single_file" (null, or {"family", "description",
 *  "file_dtype", "format", "tokenizer_pad_token", "skipped_keys", "model_config"} for a single-file checkpoint), "metadata",
 *  "training"}.
 *  Valid until the next call on this model. */
ASD_API asd_status asd_model_info(asd_model* model, const char** out_json);

/** Sets the condition of `category`: the mean of the text-encoder outputs of its `num_prompts` tokenised prompts
 *  (`token_ids`, num_prompts x length int64, row-major), paper section 4.2. Computed once, reused for every image. */
ASD_API asd_status asd_model_set_category(asd_model* model, const char* category, const int64_t* token_ids,
                                          int64_t num_prompts, int64_t length);

/** Options of asd_model_inpaint (a plain struct). Fill it with asd_inpaint_options_default, then set what you need: a
 *  zero-initialised struct is not the defaults (num_inference_steps 0 is refused, window_context 0 is a tight window,
 *  not `full`). */
typedef struct asd_inpaint_options {
  int64_t num_inference_steps; /**< full DDIM schedule length, >= 1 (default 50) */
  double noise_strength;       /**< λ in [0, 1] (default 0.4) */
  int64_t batch_size;          /**< masks per UNet batch; 0 = from available memory */
  uint64_t seed;               /**< mask i uses noise seeded seed + i */
  int32_t naive;               /**< 1: one mask at a time, everything recomputed (benchmark baseline) */
  /** Inpainting windows (multi-resolution scoring). Each mask is inpainted inside a square window around its
   *  bounding box (side s): S = max(ceil(s (1 + 2 window_context)), max(64, inpaint_size / 4)) pixels rounded up to a
   *  multiple of 16, centred on the
   *  box and shifted inside the image (the whole image when S >= min(height, width)); the window is resampled to
   *  inpaint_size x inpaint_size (bilinear, antialiased when shrinking), inpainted, resampled back and pasted inside
   *  the mask only: outside it the image's pixels are returned bit for bit. window_context < 0 is `full`: the whole
   *  image, nothing pasted (the paper's behaviour). Default -1. */
  double window_context;
  /** Side the model inpaints at, a multiple of the VAE factor (compact: 4, SD: 8); 0 (default) = the image's own
   *  size, allowed with full context only. */
  int64_t inpaint_size;
  /** Where asd_model_inpaint_distances computes D of a window: 0 (default) at the analysis resolution (the window's own
   *  size, on the pasted image), 1 at the inpainting resolution (the window's crop resampled to inpaint_size against the
   *  output pasted at that size), then resampled to the window: both sides then have the same bandwidth. */
  int32_t distance_at_inpaint_size;
} asd_inpaint_options;

ASD_API asd_status asd_inpaint_options_default(asd_inpaint_options* out_options);

/** Inpaints `image` (3 x height x width floats in [-1, 1], planar RGB) under `num_masks` masks (num_masks x
 *  height x width floats, values > 0.5 = inpaint) with the condition of `category` (asd_model_set_category), each
 *  inside its window (see asd_inpaint_options). Writes num_masks x 3 x height x width floats in [-1, 1] to
 *  `out_images`: the image with mask i's inpainting pasted. The whole denoising loop runs in one call.
 *  ASD_ERR_INVALID_ARGUMENT when int(num_inference_steps x noise_strength) < 1 (no denoising step; the message gives
 *  the smallest usable noise_strength). noise_strength 1 starts from pure noise, as diffusers does. */
ASD_API asd_status asd_model_inpaint(asd_model* model, const char* category, const float* image, int64_t height, int64_t width,
                                     const float* masks, int64_t num_masks, const asd_inpaint_options* options, float* out_images);

/** The masks per UNet batch that asd_model_inpaint uses when options.batch_size is 0, for `num_masks` masks at
 *  height x width on the model's device (CUDA: from free memory; CPU: also the L2-sized feature-map rule). */
ASD_API asd_status asd_model_auto_batch_size(const asd_model* model, int64_t height, int64_t width, int64_t num_masks, int64_t* out_batch);

/** FLOPs (in units of 1e9) of one UNet forward of one sample at height x width pixels (latents 1/vae factor of that), counted
 *  from the architecture: convolutions, linear layers and attention products, 2 per multiply-add (norms and activations
 *  not counted). */
ASD_API asd_status asd_model_unet_gflops(const asd_model* model, int64_t height, int64_t width, double* out_gflops);

/* ---------------------------------------------------------------- scoring: backbones, prototype banks, distances */

/** The perceptual distance D of eq. 16-17. */
typedef enum asd_distance_kind {
  ASD_DISTANCE_RESNET18_UNIFORM = 0, /**< the LPIPS formula on the ImageNet ResNet18's layer1-3, uniform weights (offline default) */
  ASD_DISTANCE_LPIPS_ALEX = 1        /**< LPIPS v0.1 with AlexNet, the paper's (needs alexnet and lpips weights) */
} asd_distance_kind;

/** Options of asd_model_set_scoring (fill with asd_scoring_options_default, then set what you need). Strings are
 *  read during the call only. */
typedef struct asd_scoring_options {
  const char* resnet18;          /**< required: torchvision-named ResNet18 safetensors (prototype features eq. 12, the offline distance) */
  int32_t distance;              /**< asd_distance_kind (default RESNET18_UNIFORM) */
  const char* alexnet;           /**< torchvision AlexNet safetensors (LPIPS_ALEX only) */
  const char* lpips;             /**< LPIPS v0.1 linear weights (LPIPS_ALEX only) */
  const int64_t* rotations;      /**< eq. 13 augmentation angles, multiples of 90; NULL = {0, 90, 180, 270} */
  int64_t num_rotations;
  /** PatchCore's local aggregation of prototype features: each feature map is averaged over its k x k neighbourhood
   *  (stride 1, zero padding counted, as torch AvgPool2d) before eq. 12's concatenation. 1 = off (default), 3 =
   *  PatchCore. New banks record it; a loaded bank keeps its own. */
  int64_t feature_aggregation;
  /** 1: each rotation also of the horizontally flipped shot (with the 4 rotations: the 8 dihedral views); 0 (default): no. */
  int32_t horizontal_flip;
} asd_scoring_options;

ASD_API asd_status asd_scoring_options_default(asd_scoring_options* out_options);

/** Configures the backbones used for scoring. ASD_ERR_INVALID_ARGUMENT for a missing path, an unknown distance, an
 *  angle that is not a multiple of 90 or an even/non-positive aggregation size; ASD_ERR_IO / ASD_ERR_FORMAT naming a
 *  weight file that cannot be read. A checkpoint's prototype banks are kept. */
ASD_API asd_status asd_model_set_scoring(asd_model* model, const asd_scoring_options* options);

/** Adds the k shots (k x 3 x height x width in [-1, 1]) of `category` to its prototype bank, each under every
 *  configured rotation (eq. 13). Banks are saved with the checkpoint. */
ASD_API asd_status asd_model_add_prototypes(asd_model* model, const char* category, const float* images, int64_t k, int64_t height,
                                            int64_t width);

/** Replaces the bank of `category` by the k shots (k x 3 x height x width in [-1, 1]) under the views `rotations`
 *  (num_rotations angles, multiples of 90) x (horizontal_flip ? {as is, flipped} : {as is}); the other categories and the
 *  views of later asd_model_add_prototypes calls are unchanged. For scoring with other views than a checkpoint's banks. */
ASD_API asd_status asd_model_set_prototypes(asd_model* model, const char* category, const float* images, int64_t k, int64_t height,
                                            int64_t width, const int64_t* rotations, int64_t num_rotations, int32_t horizontal_flip);

/** The views the bank of `category` was made with: up to `capacity` angles into out_rotations (may be NULL with capacity 0),
 *  their count into *out_count, the flip into *out_horizontal_flip. ASD_ERR_NOT_FOUND for a category without a bank. */
ASD_API asd_status asd_model_prototype_views(const asd_model* model, const char* category, int64_t* out_rotations, int64_t capacity,
                                             int64_t* out_count, int32_t* out_horizontal_flip);

/** Options of the nearest-neighbour search of E (eq. 14). Fill with asd_error_map_options_default. */
typedef struct asd_error_map_options {
  /** < 0 (default -1): global, every patch of the bank (eq. 14). r >= 0: position-aware, each test patch at grid cell (y, x)
   *  is compared only with the bank patches within Chebyshev distance r of (y, x), in each bank view's own feature map; it
   *  needs a bank built at the test image's size. */
  int64_t matching_radius;
} asd_error_map_options;

ASD_API asd_status asd_error_map_options_default(asd_error_map_options* out_options);

/** The error map E (eq. 14) of `image` (3 x height x width in [-1, 1]) against the bank of `category`, written to
 *  `out_map` (capacity floats); out_height x out_width, the layer-2 feature size ceil(height / 8) x ceil(width / 8), are
 *  written after the map, only on success. Call with out_map NULL (image may then be NULL too) to query the size: no
 *  feature is computed. `options` NULL = defaults. ASD_ERR_NOT_FOUND for a category without a bank. */
ASD_API asd_status asd_model_error_map(asd_model* model, const char* category, const float* image, int64_t height, int64_t width,
                                       const asd_error_map_options* options, float* out_map, int64_t capacity, int64_t* out_height,
                                       int64_t* out_width);

/** The error maps E (eq. 14) of `n` images of one size (n x 3 x height x width in [-1, 1]) against the bank of `category`,
 *  in one call: the backbone runs once on the whole batch, then each image is matched against the bank. `out_maps` (capacity
 *  floats) receives n x ceil(height / 8) x ceil(width / 8) floats. A batch gives each image the map it gets alone (tested
 *  within 1e-6 relative; bit for bit where the convolutions pick the same kernels for both batch sizes). `options` NULL =
 *  defaults. */
ASD_API asd_status asd_model_error_maps(asd_model* model, const char* category, const float* images, int64_t n, int64_t height, int64_t width,
                                        const asd_error_map_options* options, float* out_maps, int64_t capacity);

/** The prototype features psi (eq. 12, the backbone and aggregation of the model's banks) of `n` images of one size (n x 3 x
 *  height x width in [-1, 1]): n x channels x ceil(height / 8) x ceil(width / 8) floats into `out_features` (capacity
 *  floats); the three sizes are written to out_channels, out_height, out_width (each may be NULL) after the features. Call
 *  with out_features NULL (images may then be NULL) to query the sizes without computing anything. */
ASD_API asd_status asd_model_prototype_features(asd_model* model, const float* images, int64_t n, int64_t height, int64_t width,
                                                float* out_features, int64_t capacity, int64_t* out_channels, int64_t* out_height,
                                                int64_t* out_width);

/** The error maps E (eq. 14) of already computed prototype features (n x channels x fh x fw, from
 *  asd_model_prototype_features) against the bank of `category`: n x fh x fw floats into `out_maps`. The same maps as
 *  asd_model_error_maps of the images the features came from. */
ASD_API asd_status asd_model_feature_error_maps(asd_model* model, const char* category, const float* features, int64_t n, int64_t channels,
                                                int64_t fh, int64_t fw, const asd_error_map_options* options, float* out_maps,
                                                int64_t capacity);

/** Options of asd_model_mutual_maps. Fill with asd_mutual_options_default. */
typedef struct asd_mutual_options {
  double fraction;          /**< share of the smallest per-reference distances averaged, (0, 1]; default 0.3 (MuSc) */
  int64_t max_chunk_bytes;  /**< bound on the temporary distance block; default 256 MiB */
} asd_mutual_options;

ASD_API asd_status asd_mutual_options_default(asd_mutual_options* out_options);

/** Mutual (transductive, MuSc-style) maps of a set of n >= 2 images of one category from their prototype features (n x
 *  channels x fh x fw): for image i and each of its reference images j, d_j(p) = min over the patches q of j of
 *  ||psi_i(p) - psi_j(q)||^2 (the distance of E); M_i(p) = the mean of the smallest max(1, floor(fraction x K)) of the K values
 *  d_j(p). `refs` (n x refs_per_image int64, row i: distinct indices of other images) or NULL: every other image (K = n - 1).
 *  Each pair of images is compared once (one block serves both directions), as GEMMs on the model's device. n x fh x fw floats
 *  into `out_maps`. `options` NULL = defaults. */
ASD_API asd_status asd_model_mutual_maps(asd_model* model, const float* features, int64_t n, int64_t channels, int64_t fh, int64_t fw,
                                         const int64_t* refs, int64_t refs_per_image, const asd_mutual_options* options, float* out_maps,
                                         int64_t capacity);

/** Inpaints `image` under all masks (as asd_model_inpaint, window by window) and writes the perceptual distance
 *  maps D(x_w, x̂_w) of eq. 16-17, computed on each mask's window and 0 outside it (num_masks x height x width floats),
 *  to `out_distances`; `out_images` (may be NULL) receives the pasted inpaintings (num_masks x 3 x height x width,
 *  [-1, 1]). Windows of the same size are resampled, pasted and scored in batches. One native call per image. */
ASD_API asd_status asd_model_inpaint_distances(asd_model* model, const char* category, const float* image, int64_t height,
                                               int64_t width, const float* masks, int64_t num_masks, const asd_inpaint_options* options,
                                               float* out_distances, float* out_images);

/** Perceptual distance maps D(x, x̂_i) (eq. 16-17) between `image` (3 x height x width in [-1, 1]) and `n` given
 *  images (n x 3 x height x width in [-1, 1]), written to `out_maps` (n x height x width). */
ASD_API asd_status asd_model_distance_maps(asd_model* model, const float* image, int64_t height, int64_t width, const float* others,
                                           int64_t n, float* out_maps);

/** Prototype banks on their own: rows of `category` (0 if it has none), save to / load from a safetensors file
 *  (one [rows, channels] tensor per category; loading replaces the model's banks). */
ASD_API asd_status asd_model_prototype_rows(const asd_model* model, const char* category, int64_t* out_rows);
ASD_API asd_status asd_model_save_prototypes(const asd_model* model, const char* path);
ASD_API asd_status asd_model_load_prototypes(asd_model* model, const char* path);

/** The ResNet18 of `weights_path` (torchvision names + preprocessing metadata, e.g. resnet18_imagenet.safetensors) on
 *  `n` RGB images (n x 3 x height x width, values in [0, 1]): the global average pool of layer4, n x 512 floats
 *  written to `out_pooled` (the ONNX model's output without its classifier). For verifying a conversion. */
ASD_API asd_status asd_resnet18_pooled(const char* weights_path, const float* images, int64_t n, int64_t height, int64_t width,
                                       float* out_pooled);

ASD_API asd_status asd_model_free(asd_model* model);

/* ---------------------------------------------------------------- fine-tuning */

/** Precision of the training forward passes. */
typedef enum asd_mixed_precision {
  ASD_MIXED_PRECISION_NO = 0,   /**< everything in the model dtype (the paper's setting) */
  ASD_MIXED_PRECISION_BF16 = 1, /**< autocast to bfloat16, CPU or CUDA */
  ASD_MIXED_PRECISION_FP16 = 2  /**< autocast to float16 with dynamic loss scaling, CUDA only */
} asd_mixed_precision;

/** Options of asd_trainer_create (fill with asd_trainer_options_default; section 5.1 defaults). Arrays are read
 *  during the call only. */
typedef struct asd_trainer_options {
  int64_t batch_size;              /**< 8 */
  int64_t gradient_accumulation;   /**< micro-batches per optimizer step, 1 */
  double learning_rate;            /**< Adam, 1e-4 */
  uint64_t seed;                   /**< 0 */
  double beta;                     /**< weight of the perceptual term of eq. 9, 0.1 */
  int32_t mixed_precision;         /**< asd_mixed_precision; BF16/FP16 need an F32 model (fp32 master weights) */
  const double* iou_thresholds;    /**< γ candidates of the training masks; NULL = {0, 0.2, 0.5} */
  int64_t num_iou_thresholds;
  double augment_brightness;       /**< additive shift in [-b, b], 0.1 */
  double augment_contrast;         /**< gain in [1 - c, 1 + c], 0.1 */
  double augment_scale_min;        /**< zoom range, 0.9 .. 1.1 */
  double augment_scale_max;
  double augment_rotation_degrees; /**< rotation in [-r, r], 10 */
  /** Windows as in asd_inpaint_options: each training mask (drawn at the shots' resolution) is cropped with the
   *  window inference would give it, resampled to inpaint_size. -1 (default) = full image. */
  double window_context;
  int64_t inpaint_size;            /**< 0 (default) = the shots' own size (full context only) */
} asd_trainer_options;

ASD_API asd_status asd_trainer_options_default(asd_trainer_options* out_options);

/** A trainer of `model`. The trainer keeps the model alive: asd_model_free before asd_trainer_free is safe (the
 *  model is released with its last user). `kind`: "unet" (eq. 7-8), "decoder" (eq. 9-10: decoder only) or
 *  "autoencoder" (encoder + decoder from scratch, for the compact preset). The decoder loss's perceptual term is the
 *  distance configured with asd_model_set_scoring (call it first; without it the loss is MSE only). `options` NULL =
 *  the defaults. ASD_ERR_INVALID_ARGUMENT for an out-of-range field, naming it. */
ASD_API asd_status asd_trainer_create(asd_model* model, const char* kind, const asd_trainer_options* options, asd_trainer** out_trainer);

/** Adds the shots of one category: images k x 3 x height x width in [-1, 1]; foregrounds k x height x width
 *  (m_f, 1 = foreground; NULL = whole image); token_ids num_prompts x length int64 (its prompt set T_c). */
ASD_API asd_status asd_trainer_add_category(asd_trainer* trainer, const char* category, const float* images, const float* foregrounds,
                                            int64_t k, int64_t height, int64_t width, const int64_t* token_ids, int64_t num_prompts,
                                            int64_t length);

/** Runs `steps` optimizer steps; the mean loss of those steps goes to `out_mean_loss` (may be NULL). */
ASD_API asd_status asd_trainer_run(asd_trainer* trainer, int64_t steps, double* out_mean_loss);

/** Continues a "unet" trainer from the optimizer state and step count saved in checkpoint `folder` (the
 *  model must have been loaded from it). Call after adding the categories. */
ASD_API asd_status asd_trainer_resume(asd_trainer* trainer, const char* folder);

/** Optimizer steps done so far. */
ASD_API asd_status asd_trainer_steps(const asd_trainer* trainer, int64_t* out_steps);

ASD_API asd_status asd_trainer_free(asd_trainer* trainer);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ANOMALYSD_H */
