// A restricted unpickler for the state dicts that torch.save writes (pickle protocol 2, as PyTorch writes it; the
// few protocol-4 framing opcodes are accepted too). It builds plain values and never calls anything: the only
// globals it accepts are the ones torch.load(weights_only=True) accepts for a state dict, and REDUCE is only
// interpreted for the three allowed callables. Anything else is refused with an error that names the global or the
// opcode. Format: Python's Lib/pickletools.py (opcode table), PyTorch's torch/serialization.py (persistent ids).
//
//   allowed globals      collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter,
//                        torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage
//   persistent ids       ('storage', <a torch.*Storage>, key: str, location: str, numel: int)
//
// Values live in an arena owned by the Unpickler: references between them are plain pointers, so neither a cycle
// made through the memo nor a deeply nested structure can recurse or leak. Limits: 64 levels of nesting, 10^7
// values, 10^5 open MARKs.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace asd::pickle {

/// A storage record from a persistent id: the data lives in the zip entry data/<key>.
struct Storage {
  torch::ScalarType dtype = torch::kFloat32;
  std::string key;
  std::string location;
  int64_t numel = 0;
};

/// A tensor view of a storage (torch._utils._rebuild_tensor_v2): element offset, sizes and strides in elements.
struct Tensor {
  const Storage* storage = nullptr;
  int64_t offset = 0;
  std::vector<int64_t> sizes, strides;
};

struct Value {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kBytes, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
  Kind kind = Kind::kNone;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::string text;                                  ///< kString, kBytes, kGlobal ("module.name")
  std::vector<const Value*> items;                   ///< kTuple, kList
  std::vector<std::pair<const Value*, const Value*>> entries;  ///< kDict, in insertion order
  const Storage* storage = nullptr;                  ///< kStorage
  const Tensor* tensor = nullptr;                    ///< kTensor
  int depth = 0;                                     ///< nesting depth (0 for scalars)
};

/// Parses one pickle. `source` names the pickle in error messages ("'model.ckpt' (archive/data.pkl)"). Throws
/// asd::Error(ASD_ERR_FORMAT) for a malformed pickle (truncated, unknown opcode, memo index out of range, stack
/// underflow, nesting beyond the limit) and asd::Error(ASD_ERR_UNSUPPORTED) for a disallowed global or callable,
/// naming it.
class Unpickler {
 public:
  Unpickler(const uint8_t* data, uint64_t size, std::string source);
  /// The value the pickle's STOP returns; lives as long as the Unpickler.
  const Value& load();

  /// The storages the persistent ids named, one per key.
  const std::vector<std::unique_ptr<Storage>>& storages() const { return storages_; }

 private:
  Value* make(Value::Kind kind);
  [[noreturn]] void fail(const std::string& problem) const;
  [[noreturn]] void refuse(const std::string& problem) const;
  void push(Value* v);
  Value* pop();
  Value* top();
  size_t pop_mark();
  uint64_t read_uint(int bytes);
  std::string read_bytes(uint64_t n);
  std::string read_line();
  Value* global(const std::string& module, const std::string& name);
  Value* reduce(const Value& callable, const Value& args);
  Value* persistent_load(const Value& pid);
  void add_child(Value& container, const Value* child);

  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  uint64_t op_pos_ = 0;
  std::string source_;
  std::vector<std::unique_ptr<Value>> arena_;
  std::vector<std::unique_ptr<Tensor>> tensors_;
  std::vector<std::unique_ptr<Storage>> storages_;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
};

}  // namespace asd::pickle
