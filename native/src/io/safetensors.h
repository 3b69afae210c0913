// safetensors reader and writer (format: https://github.com/huggingface/safetensors, "Format" section):
//   [u64 little-endian N][N bytes of JSON header][data section]
//   header = { "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//              "__metadata__": {"key": "value", ...} (optional) }
//   offsets are relative to the start of the data section.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "io/tensor_map.h"

namespace asd::safetensors {

/// Largest header accepted (the reference implementation's limit): 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

/// One validated header entry.
struct Entry {
  std::string name;
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  ///< byte offset in the data section
  uint64_t end = 0;    ///< one past the last byte
};

struct Header {
  std::vector<Entry> entries;  ///< in file (header) order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  ///< absolute file offset of the data section
  uint64_t data_size = 0;
};

/// Reads and validates the header of `path` without reading tensor data. Every check of the format is
/// done here, before anything proportional to the header's claims is allocated. Throws asd::Error with
/// ASD_ERR_IO (cannot open) or ASD_ERR_FORMAT (malformed), the message starting with the path.
Header read_header(const std::string& path);

/// Loads every tensor of `path` on the CPU. `dtype`: nullopt keeps stored types; a floating type converts
/// floating tensors to it (integer and bool tensors keep their type).
TensorMap load(const std::string& path, std::optional<torch::ScalarType> dtype = std::nullopt);

/// Writes `tensors` (any device, stored with their own dtype) atomically (temp file + rename).
void save(const std::string& path, const TensorMap& tensors, const std::map<std::string, std::string>& metadata = {});

/// safetensors dtype string <-> torch type; dtype_from_string returns nullopt for unknown strings.
std::optional<torch::ScalarType> dtype_from_string(const std::string& s);
std::string dtype_to_string(torch::ScalarType t);

}  // namespace asd::safetensors
