#include "io/pickle.h"

#include <cstring>
#include <limits>

#include "core/error.h"

namespace asd::pickle {

namespace {

constexpr int kMaxDepth = 64;
constexpr size_t kMaxValues = 10'000'000;
constexpr size_t kMaxMarks = 100'000;

/// torch.<Name>Storage -> element type.
bool storage_dtype(const std::string& name, torch::ScalarType* out) {
  static const std::pair<const char*, torch::ScalarType> kTable[] = {
      {"FloatStorage", torch::kFloat32}, {"HalfStorage", torch::kFloat16}, {"BFloat16Storage", torch::kBFloat16},
      {"DoubleStorage", torch::kFloat64}, {"LongStorage", torch::kInt64},  {"IntStorage", torch::kInt32},
      {"ShortStorage", torch::kInt16},   {"CharStorage", torch::kInt8},    {"ByteStorage", torch::kUInt8},
      {"BoolStorage", torch::kBool}};
  for (const auto& [n, t] : kTable) {
    if (name == n) {
      *out = t;
      return true;
    }
  }
  return false;
}

const char* kAllowed =
    "collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the torch.*Storage types";

std::string hex(unsigned v) {
  static const char* digits = "0123456789abcdef";
  return std::string("0x") + digits[(v >> 4) & 15] + digits[v & 15];
}

/// Names of opcodes this reader refuses on purpose (so the error says what the file tried).
const char* refused_opcode_name(uint8_t op) {
  switch (op) {
    case 'i': return "INST";
    case 'o': return "OBJ";
    case 0x81: return "NEWOBJ";
    case 0x92: return "NEWOBJ_EX";
    case 'P': return "PERSID";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 'I': return "INT";
    case 'L': return "LONG";
    case 0x8b: return "LONG4";
    case 'S': return "STRING";
    case 'V': return "UNICODE";
    case 'F': return "FLOAT";
    case 'g': return "GET";
    case 'p': return "PUT";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return nullptr;
  }
}

}  // namespace

Unpickler::Unpickler(const uint8_t* data, uint64_t size, std::string source) : data_(data), size_(size), source_(std::move(source)) {}

void Unpickler::fail(const std::string& problem) const {
  throw_error(ASD_ERR_FORMAT, source_ + ": malformed pickle at byte " + std::to_string(op_pos_) + ": " + problem);
}

void Unpickler::refuse(const std::string& problem) const {
  throw_error(ASD_ERR_UNSUPPORTED, source_ + ": refused (at byte " + std::to_string(op_pos_) + "): " + problem +
                                       ". A checkpoint may only hold tensors; allowed are " + kAllowed +
                                       " (as torch.load(weights_only=True)). Nothing was executed");
}

Value* Unpickler::make(Value::Kind kind) {
  if (arena_.size() >= kMaxValues) fail("more than " + std::to_string(kMaxValues) + " values");
  arena_.push_back(std::make_unique<Value>());
  arena_.back()->kind = kind;
  return arena_.back().get();
}

void Unpickler::push(Value* v) {
  if (stack_.size() >= kMaxValues) fail("the stack grew past " + std::to_string(kMaxValues) + " entries");
  stack_.push_back(v);
}

Value* Unpickler::pop() {
  if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("stack underflow");
  Value* v = stack_.back();
  stack_.pop_back();
  return v;
}

Value* Unpickler::top() {
  if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("stack underflow");
  return stack_.back();
}

size_t Unpickler::pop_mark() {
  if (marks_.empty()) fail("an opcode needs a MARK and there is none");
  const size_t m = marks_.back();
  marks_.pop_back();
  return m;
}

uint64_t Unpickler::read_uint(int bytes) {
  if (size_ - pos_ < static_cast<uint64_t>(bytes)) fail("truncated (an argument runs past the end of the pickle)");
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | data_[pos_ + static_cast<uint64_t>(i)];
  pos_ += static_cast<uint64_t>(bytes);
  return v;
}

std::string Unpickler::read_bytes(uint64_t n) {
  if (size_ - pos_ < n) fail("truncated (a string of " + std::to_string(n) + " bytes runs past the end of the pickle)");
  std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
  pos_ += n;
  return s;
}

std::string Unpickler::read_line() {
  const uint64_t start = pos_;
  while (pos_ < size_ && data_[pos_] != '\n') {
    if (pos_ - start > 256) fail("a GLOBAL name longer than 256 bytes");
    ++pos_;
  }
  if (pos_ >= size_) fail("truncated (a GLOBAL name without its newline)");
  std::string s(reinterpret_cast<const char*>(data_ + start), static_cast<size_t>(pos_ - start));
  ++pos_;
  return s;
}

void Unpickler::add_child(Value& container, const Value* child) {
  if (child->depth + 1 > container.depth) container.depth = child->depth + 1;
  if (container.depth > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth) + " levels");
}

Value* Unpickler::global(const std::string& module, const std::string& name) {
  const std::string full = module + "." + name;
  torch::ScalarType dtype;
  const bool allowed = (module == "collections" && name == "OrderedDict") ||
                       (module == "torch._utils" && (name == "_rebuild_tensor_v2" || name == "_rebuild_parameter")) ||
                       (module == "torch" && storage_dtype(name, &dtype));
  if (!allowed) refuse("the pickle refers to the global '" + full + "'");
  Value* v = make(Value::Kind::kGlobal);
  v->text = full;
  return v;
}

Value* Unpickler::persistent_load(const Value& pid) {
  if (pid.kind != Value::Kind::kTuple || pid.items.size() != 5 || pid.items[0]->kind != Value::Kind::kString || pid.items[0]->text != "storage") {
    refuse("a persistent id that is not a ('storage', type, key, location, numel) record");
  }
  const Value& type = *pid.items[1];
  torch::ScalarType dtype;
  if (type.kind != Value::Kind::kGlobal || type.text.rfind("torch.", 0) != 0 || !storage_dtype(type.text.substr(6), &dtype)) {
    refuse("a storage record whose type is not a torch.*Storage");
  }
  const Value& key = *pid.items[2];
  const Value& location = *pid.items[3];
  const Value& numel = *pid.items[4];
  if (key.kind != Value::Kind::kString || location.kind != Value::Kind::kString || numel.kind != Value::Kind::kInt || numel.integer < 0) {
    fail("a storage record with a malformed key, location or size");
  }
  for (const auto& s : storages_) {
    if (s->key == key.text) {
      if (s->dtype != dtype || s->numel != numel.integer) fail("storage '" + key.text + "' is declared twice with different types or sizes");
      Value* v = make(Value::Kind::kStorage);
      v->storage = s.get();
      return v;
    }
  }
  auto s = std::make_unique<Storage>();
  s->dtype = dtype;
  s->key = key.text;
  s->location = location.text;
  s->numel = numel.integer;
  storages_.push_back(std::move(s));
  Value* v = make(Value::Kind::kStorage);
  v->storage = storages_.back().get();
  return v;
}

Value* Unpickler::reduce(const Value& callable, const Value& args) {
  if (callable.kind != Value::Kind::kGlobal) refuse("REDUCE on a value that is not a callable global");
  if (args.kind != Value::Kind::kTuple) fail("REDUCE arguments are not a tuple");
  const auto& a = args.items;
  auto ints = [&](const Value& v, const char* what) {
    if (v.kind != Value::Kind::kTuple) fail(std::string("tensor ") + what + " is not a tuple");
    if (v.items.size() > 64) fail(std::string("tensor ") + what + " has more than 64 dimensions");
    std::vector<int64_t> out;
    for (const Value* e : v.items) {
      if (e->kind != Value::Kind::kInt || e->integer < 0) fail(std::string("tensor ") + what + " holds a value that is not a non-negative integer");
      out.push_back(e->integer);
    }
    return out;
  };
  if (callable.text == "collections.OrderedDict") {
    if (!a.empty()) refuse("collections.OrderedDict called with arguments");
    return make(Value::Kind::kDict);
  }
  if (callable.text == "torch._utils._rebuild_tensor_v2") {
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if (a.size() != 6 && a.size() != 7) fail("_rebuild_tensor_v2 takes 6 or 7 arguments, got " + std::to_string(a.size()));
    if (a[0]->kind != Value::Kind::kStorage) fail("_rebuild_tensor_v2's first argument is not a storage");
    if (a[1]->kind != Value::Kind::kInt || a[1]->integer < 0) fail("_rebuild_tensor_v2's storage offset is not a non-negative integer");
    if (a[4]->kind != Value::Kind::kBool) fail("_rebuild_tensor_v2's requires_grad is not a bool");
    if (a[5]->kind != Value::Kind::kDict || !a[5]->entries.empty()) refuse("a tensor with backward hooks");
    if (a.size() == 7 && !(a[6]->kind == Value::Kind::kNone || (a[6]->kind == Value::Kind::kDict && a[6]->entries.empty()))) {
      refuse("a tensor with Python metadata");
    }
    auto t = std::make_unique<Tensor>();
    t->storage = a[0]->storage;
    t->offset = a[1]->integer;
    t->sizes = ints(*a[2], "size");
    t->strides = ints(*a[3], "stride");
    if (t->sizes.size() != t->strides.size()) fail("tensor size and stride have different lengths");
    tensors_.push_back(std::move(t));
    Value* v = make(Value::Kind::kTensor);
    v->tensor = tensors_.back().get();
    return v;
  }
  if (callable.text == "torch._utils._rebuild_parameter") {
    // (data, requires_grad, backward_hooks)
    if (a.size() != 3 || a[0]->kind != Value::Kind::kTensor || a[1]->kind != Value::Kind::kBool) fail("malformed _rebuild_parameter arguments");
    if (a[2]->kind != Value::Kind::kDict || !a[2]->entries.empty()) refuse("a parameter with backward hooks");
    Value* v = make(Value::Kind::kTensor);
    v->tensor = a[0]->tensor;
    return v;
  }
  refuse("REDUCE calls '" + callable.text + "', which may not be called");
}

const Value& Unpickler::load() {
  while (true) {
    if (pos_ >= size_) fail("truncated (no STOP opcode)");
    op_pos_ = pos_;
    const uint8_t op = data_[pos_++];
    switch (op) {
      case 0x80: {  // PROTO
        const uint64_t v = read_uint(1);
        if (v < 2 || v > 5) fail("pickle protocol " + std::to_string(v) + " (PyTorch writes 2)");
        break;
      }
      case 0x95:  // FRAME: the frame length, nothing to do when the whole pickle is in memory
        read_uint(8);
        break;
      case '.': {  // STOP
        Value* v = pop();
        if (!marks_.empty()) fail("STOP with an open MARK");
        return *v;
      }
      case '(':  // MARK
        if (marks_.size() >= kMaxMarks) fail("more than " + std::to_string(kMaxMarks) + " open MARKs");
        marks_.push_back(stack_.size());
        break;
      case '0':  // POP
        pop();
        break;
      case '1':  // POP_MARK
        stack_.resize(pop_mark());
        break;
      case '2':  // DUP
        push(top());
        break;
      case 'N':
        push(make(Value::Kind::kNone));
        break;
      case 0x88:
      case 0x89: {
        Value* v = make(Value::Kind::kBool);
        v->boolean = op == 0x88;
        push(v);
        break;
      }
      case 'J': {  // BININT: signed 32-bit
        Value* v = make(Value::Kind::kInt);
        v->integer = static_cast<int32_t>(static_cast<uint32_t>(read_uint(4)));
        push(v);
        break;
      }
      case 'K':
      case 'M': {  // BININT1, BININT2: unsigned
        Value* v = make(Value::Kind::kInt);
        v->integer = static_cast<int64_t>(read_uint(op == 'K' ? 1 : 2));
        push(v);
        break;
      }
      case 0x8a: {  // LONG1: n bytes of two's complement, little-endian
        const uint64_t n = read_uint(1);
        if (n > 8) fail("an integer of " + std::to_string(n) + " bytes (more than 64 bits)");
        uint64_t u = n == 0 ? 0 : read_uint(static_cast<int>(n));
        if (n > 0 && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~uint64_t{0} << (8 * n);  // sign-extend
        Value* v = make(Value::Kind::kInt);
        v->integer = static_cast<int64_t>(u);
        push(v);
        break;
      }
      case 'G': {  // BINFLOAT: big-endian double
        if (size_ - pos_ < 8) fail("truncated BINFLOAT");
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | data_[pos_ + static_cast<uint64_t>(i)];
        pos_ += 8;
        Value* v = make(Value::Kind::kFloat);
        std::memcpy(&v->number, &bits, 8);
        push(v);
        break;
      }
      case 'X':
      case 0x8c:
      case 0x8d:
      case 'T':
      case 'U':
      case 'B':
      case 'C': {  // strings and bytes with a length prefix
        const int width = (op == 0x8c || op == 'U' || op == 'C') ? 1 : op == 0x8d ? 8 : 4;
        const uint64_t n = read_uint(width);
        Value* v = make((op == 'B' || op == 'C') ? Value::Kind::kBytes : Value::Kind::kString);
        v->text = read_bytes(n);
        push(v);
        break;
      }
      case ')':
        push(make(Value::Kind::kTuple));
        break;
      case 't':
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE (from the MARK), TUPLE1..3
        size_t from;
        if (op == 't') {
          from = pop_mark();
        } else {
          const size_t n = op - 0x85 + 1u;
          if (stack_.size() < n || (!marks_.empty() && stack_.size() - n < marks_.back())) fail("stack underflow");
          from = stack_.size() - n;
        }
        Value* t = make(Value::Kind::kTuple);
        for (size_t i = from; i < stack_.size(); ++i) {
          t->items.push_back(stack_[i]);
          add_child(*t, stack_[i]);
        }
        stack_.resize(from);
        push(t);
        break;
      }
      case ']':
        push(make(Value::Kind::kList));
        break;
      case '}':
        push(make(Value::Kind::kDict));
        break;
      case 'l':
      case 'd': {  // LIST, DICT from the MARK
        const size_t from = pop_mark();
        Value* c = make(op == 'l' ? Value::Kind::kList : Value::Kind::kDict);
        if (op == 'd' && (stack_.size() - from) % 2 != 0) fail("DICT with an odd number of items");
        for (size_t i = from; i < stack_.size(); i += (op == 'l' ? 1 : 2)) {
          if (op == 'l') {
            c->items.push_back(stack_[i]);
            add_child(*c, stack_[i]);
          } else {
            c->entries.emplace_back(stack_[i], stack_[i + 1]);
            add_child(*c, stack_[i]);
            add_child(*c, stack_[i + 1]);
          }
        }
        stack_.resize(from);
        push(c);
        break;
      }
      case 'a': {  // APPEND
        Value* item = pop();
        Value* list = top();
        if (list->kind != Value::Kind::kList) fail("APPEND to a value that is not a list");
        list->items.push_back(item);
        add_child(*list, item);
        break;
      }
      case 'e': {  // APPENDS
        const size_t from = pop_mark();
        if (from == 0 || stack_[from - 1]->kind != Value::Kind::kList) fail("APPENDS to a value that is not a list");
        Value* list = stack_[from - 1];
        for (size_t i = from; i < stack_.size(); ++i) {
          list->items.push_back(stack_[i]);
          add_child(*list, stack_[i]);
        }
        stack_.resize(from);
        break;
      }
      case 's': {  // SETITEM
        Value* value = pop();
        Value* key = pop();
        Value* dict = top();
        if (dict->kind != Value::Kind::kDict) fail("SETITEM on a value that is not a dict");
        dict->entries.emplace_back(key, value);
        add_child(*dict, key);
        add_child(*dict, value);
        break;
      }
      case 'u': {  // SETITEMS
        const size_t from = pop_mark();
        if (from == 0 || stack_[from - 1]->kind != Value::Kind::kDict) fail("SETITEMS on a value that is not a dict");
        if ((stack_.size() - from) % 2 != 0) fail("SETITEMS with an odd number of items");
        Value* dict = stack_[from - 1];
        for (size_t i = from; i < stack_.size(); i += 2) {
          dict->entries.emplace_back(stack_[i], stack_[i + 1]);
          add_child(*dict, stack_[i]);
          add_child(*dict, stack_[i + 1]);
        }
        stack_.resize(from);
        break;
      }
      case 'q':
      case 'r': {  // BINPUT, LONG_BINPUT
        const uint64_t index = read_uint(op == 'q' ? 1 : 4);
        if (memo_.size() >= kMaxValues && memo_.count(index) == 0) fail("more than " + std::to_string(kMaxValues) + " memo entries");
        memo_[index] = top();
        break;
      }
      case 0x94:  // MEMOIZE
        if (memo_.size() >= kMaxValues) fail("more than " + std::to_string(kMaxValues) + " memo entries");
        memo_[memo_.size()] = top();
        break;
      case 'h':
      case 'j': {  // BINGET, LONG_BINGET
        const uint64_t index = read_uint(op == 'h' ? 1 : 4);
        auto it = memo_.find(index);
        if (it == memo_.end()) fail("memo index " + std::to_string(index) + " is not defined (" + std::to_string(memo_.size()) + " memo entries)");
        push(it->second);
        break;
      }
      case 'c': {  // GLOBAL "module\nname\n"
        const std::string module = read_line();
        const std::string name = read_line();
        push(global(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Value* name = pop();
        Value* module = pop();
        if (module->kind != Value::Kind::kString || name->kind != Value::Kind::kString) fail("STACK_GLOBAL arguments are not strings");
        push(global(module->text, name->text));
        break;
      }
      case 'R': {  // REDUCE
        Value* args = pop();
        Value* callable = pop();
        push(reduce(*callable, *args));
        break;
      }
      case 'b': {  // BUILD: only the no-op state an OrderedDict or a tensor may carry
        Value* state = pop();
        Value* target = top();
        const bool empty_state = state->kind == Value::Kind::kNone || (state->kind == Value::Kind::kDict && state->entries.empty()) ||
                                 (state->kind == Value::Kind::kTuple && state->items.empty());
        if (!empty_state || (target->kind != Value::Kind::kDict && target->kind != Value::Kind::kTensor)) refuse("BUILD with a state");
        break;
      }
      case 'Q': {  // BINPERSID
        Value* pid = pop();
        push(persistent_load(*pid));
        break;
      }
      default: {
        const char* name = refused_opcode_name(op);
        if (name != nullptr) refuse(std::string("the opcode ") + name + " (" + hex(op) + ")");
        fail("unknown opcode " + hex(op));
      }
    }
  }
}

}  // namespace asd::pickle
