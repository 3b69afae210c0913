// The tensors of one weights file, read in place from a memory mapping: safetensors, or PyTorch's zip checkpoint
// format (torch.save since 1.6: `.ckpt`, `.pt`, `.pth`) through the restricted unpickler of io/pickle.h. The views
// share the mapping (each holds it alive), so loading a model copies every weight exactly once, from the file's
// pages into the module's parameters, and `release` hands those pages back afterwards.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "io/mapped_file.h"
#include "io/tensor_map.h"

namespace asd {

class WeightFile {
 public:
  enum class Format { kSafetensors, kTorchZip };

  /// Opens and validates `path`: the format is read from the content (a zip archive is a PyTorch checkpoint,
  /// anything else must be safetensors). Every offset, shape and stride is checked against the file before a view
  /// is made. A PyTorch checkpoint may hold {"state_dict": {...}} or the state dict itself; values that are not
  /// tensors are skipped. Errors (the message names the file): ASD_ERR_IO (cannot open), ASD_ERR_FORMAT (malformed,
  /// truncated, a storage shorter than its tensors), ASD_ERR_UNSUPPORTED (a disallowed pickle global or opcode, a
  /// compressed zip entry, the legacy pre-1.6 PyTorch format: the message says how to re-save it).
  static std::shared_ptr<WeightFile> open(const std::string& path);

  Format format() const { return format_; }
  const std::string& path() const { return file_->path(); }
  uint64_t file_size() const { return file_->size(); }

  /// Views of the tensors (CPU, the stored dtype, in file / state-dict order). Do not write to them.
  const TensorMap& tensors() const { return tensors_; }

  /// Drops the resident pages under `view` (a tensor of tensors(), or a view of one). A no-op for other tensors.
  void release(const torch::Tensor& view) const;

 private:
  WeightFile() = default;
  void read_safetensors();
  void read_torch_zip();
  torch::Tensor view(const uint8_t* data, torch::ScalarType dtype, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) const;

  std::shared_ptr<MappedFile> file_;
  Format format_ = Format::kSafetensors;
  TensorMap tensors_;
};

}  // namespace asd
