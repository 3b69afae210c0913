#include "io/weight_file.h"

#include <algorithm>
#include <limits>

#include "core/error.h"
#include "io/pickle.h"
#include "io/safetensors.h"
#include "io/zip_reader.h"

namespace asd {

namespace {

[[noreturn]] void format_error(const std::string& path, const std::string& problem) {
  throw_error(ASD_ERR_FORMAT, "'" + path + "' is not a valid PyTorch checkpoint: " + problem);
}

/// a * b, or nullopt-like false on overflow of int64.
bool mul_ok(int64_t a, int64_t b, int64_t* out) {
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

}  // namespace

std::shared_ptr<WeightFile> WeightFile::open(const std::string& path) {
  std::shared_ptr<WeightFile> w(new WeightFile());
  w->file_ = MappedFile::open(path);
  w->tensors_.set_source(path);
  const MappedFile& f = *w->file_;
  if (zip::looks_like_zip(f)) {
    w->format_ = Format::kTorchZip;
    w->read_torch_zip();
  } else if (f.size() >= 2 && f.data()[0] == 0x80 && f.data()[1] <= 5) {
    // torch.save before 1.6 (or with _use_new_zipfile_serialization=False): a raw pickle stream.
    throw_error(ASD_ERR_UNSUPPORTED,
                "'" + path + "' is a PyTorch checkpoint in the legacy (pre-1.6, non-zip) format, which this engine does not read. "
                "Re-save it once with PyTorch >= 1.6: python -c \"import torch; torch.save(torch.load('OLD.ckpt', weights_only=True), "
                "'NEW.ckpt')\", or convert it to safetensors");
  } else {
    w->format_ = Format::kSafetensors;
    w->read_safetensors();
  }
  return w;
}

torch::Tensor WeightFile::view(const uint8_t* data, torch::ScalarType dtype, const std::vector<int64_t>& sizes,
                               const std::vector<int64_t>& strides) const {
  std::shared_ptr<MappedFile> keep = file_;
  return torch::from_blob(const_cast<uint8_t*>(data), sizes, strides, [keep](void*) {}, torch::TensorOptions().dtype(dtype));
}

void WeightFile::release(const torch::Tensor& view) const {
  if (!view.defined() || view.numel() == 0) return;
  // The bytes the view can reach: from its first element to its last (strides are non-negative here).
  int64_t last = 0;
  for (int64_t d = 0; d < view.dim(); ++d) last += (view.size(d) - 1) * view.stride(d);
  file_->release(view.data_ptr(), static_cast<uint64_t>(last + 1) * view.element_size());
}

void WeightFile::read_safetensors() {
  const safetensors::Header h = safetensors::read_header(file_->path());
  if (h.data_start + h.data_size != file_->size()) {
    throw_error(ASD_ERR_FORMAT, "'" + file_->path() + "' changed while it was being read");
  }
  for (const safetensors::Entry& e : h.entries) {
    std::vector<int64_t> strides(e.shape.size(), 1);
    for (size_t i = e.shape.size(); i-- > 1;) strides[i - 1] = strides[i] * std::max<int64_t>(e.shape[i], 1);
    tensors_.set(e.name, view(file_->data() + h.data_start + e.begin, e.dtype, e.shape, strides));
  }
}

void WeightFile::read_torch_zip() {
  const std::string& path = file_->path();
  const zip::Archive archive(*file_);
  // The pickle is <prefix>/data.pkl (prefix "archive" since PyTorch 2.x, the file's stem before); storages are
  // <prefix>/data/<key>.
  const zip::Entry* pkl = nullptr;
  for (const zip::Entry& e : archive.entries()) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      if (pkl != nullptr) format_error(path, "two data.pkl entries ('" + pkl->name + "', '" + e.name + "')");
      pkl = &e;
    }
  }
  if (pkl == nullptr) format_error(path, "the zip archive has no <name>/data.pkl entry (not a torch.save file)");
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - std::string("data.pkl").size());
  if (const zip::Entry* order = archive.find(prefix + "byteorder")) {
    const std::string value(reinterpret_cast<const char*>(archive.stored_data(*order)), static_cast<size_t>(order->size));
    if (value != "little") throw_error(ASD_ERR_UNSUPPORTED, "'" + path + "' was saved on a " + value + "-endian machine");
  }

  pickle::Unpickler unpickler(archive.stored_data(*pkl), pkl->size, "'" + path + "' (" + pkl->name + ")");
  const pickle::Value& root = unpickler.load();
  using Kind = pickle::Value::Kind;
  if (root.kind != Kind::kDict) format_error(path, "the pickle holds no dict of tensors");
  const pickle::Value* dict = &root;
  for (const auto& [key, value] : root.entries) {
    if (key->kind == Kind::kString && key->text == "state_dict") {
      if (value->kind != Kind::kDict) format_error(path, "its 'state_dict' is not a dict");
      dict = value;
    }
  }

  // Storages: each one a stored zip entry at least numel x item size bytes long.
  std::unordered_map<const pickle::Storage*, const uint8_t*> storage_data;
  for (const auto& s : unpickler.storages()) {
    const zip::Entry* entry = archive.find(prefix + "data/" + s->key);
    if (entry == nullptr) format_error(path, "storage '" + s->key + "' has no zip entry '" + prefix + "data/" + s->key + "' (missing)");
    const uint8_t* data = archive.stored_data(*entry);
    int64_t bytes = 0;
    if (!mul_ok(s->numel, static_cast<int64_t>(c10::elementSize(s->dtype)), &bytes) || static_cast<uint64_t>(bytes) > entry->size) {
      format_error(path, "storage '" + s->key + "' declares " + std::to_string(s->numel) + " elements of " +
                             std::to_string(c10::elementSize(s->dtype)) + " bytes but its entry holds " + std::to_string(entry->size) + " bytes");
    }
    storage_data[s.get()] = data;
  }

  for (const auto& [key, value] : dict->entries) {
    if (key->kind != Kind::kString) format_error(path, "a state dict key is not a string");
    if (value->kind != Kind::kTensor) continue;  // e.g. ints such as global_step next to the tensors
    const pickle::Tensor& t = *value->tensor;
    const pickle::Storage& s = *t.storage;
    // The largest element index the view reaches, overflow-checked: offset + sum((size - 1) * stride).
    bool empty = false;
    for (int64_t d : t.sizes) empty = empty || d == 0;
    int64_t last = t.offset, numel = 1;
    bool ok = true;
    for (size_t d = 0; d < t.sizes.size() && ok; ++d) {
      int64_t reach = 0;
      ok = mul_ok(t.sizes[d] == 0 ? 0 : t.sizes[d] - 1, t.strides[d], &reach) && reach <= std::numeric_limits<int64_t>::max() - last &&
           mul_ok(numel, t.sizes[d], &numel);
      last += reach;
    }
    if (!ok) format_error(path, "tensor '" + key->text + "' has a shape or strides too large to address (hostile or corrupt)");
    if (!empty && last >= s.numel) {
      format_error(path, "tensor '" + key->text + "' reaches element " + std::to_string(last) + " of storage '" + s.key + "', which has " +
                             std::to_string(s.numel) + " elements (a storage shorter than its tensor)");
    }
    const uint8_t* data = storage_data.at(&s) + (empty ? 0 : t.offset * static_cast<int64_t>(c10::elementSize(s.dtype)));
    tensors_.set(key->text, view(data, s.dtype, t.sizes, t.strides));
  }
}

}  // namespace asd
