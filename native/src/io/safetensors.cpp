#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"

static_assert(sizeof(void*) == 8, "64-bit platforms only");

namespace asd::safetensors {

namespace {

using json = nlohmann::ordered_json;  // keeps the header order, which becomes the map order

bool host_is_little_endian() {
  const uint16_t probe = 1;
  uint8_t first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

[[noreturn]] void format_error(const std::string& path, const std::string& problem) {
  throw_error(ASD_ERR_FORMAT, "'" + path + "' is not a valid safetensors file: " + problem);
}

const std::vector<std::pair<std::string, torch::ScalarType>>& dtype_table() {
  static const std::vector<std::pair<std::string, torch::ScalarType>> table = {
      {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
      {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
      {"U8", torch::kUInt8},    {"BOOL", torch::kBool},
  };
  return table;
}

uint64_t parse_offset(const std::string& path, const std::string& name, const json& v) {
  if (!v.is_number_unsigned()) format_error(path, "tensor '" + name + "': data_offsets must be non-negative integers");
  return v.get<uint64_t>();
}

Entry parse_entry(const std::string& path, const std::string& name, const json& v, uint64_t data_size) {
  if (!v.is_object()) format_error(path, "tensor '" + name + "': header entry is not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(field)) format_error(path, std::string("tensor '") + name + "': missing field '" + field + "'");
  }
  Entry e;
  e.name = name;
  const json& dtype = v.at("dtype");
  if (!dtype.is_string()) format_error(path, "tensor '" + name + "': dtype is not a string");
  auto t = dtype_from_string(dtype.get<std::string>());
  if (!t) format_error(path, "tensor '" + name + "': unknown dtype '" + dtype.get<std::string>() + "'");
  e.dtype = *t;

  const json& shape = v.at("shape");
  if (!shape.is_array()) format_error(path, "tensor '" + name + "': shape is not an array");
  if (shape.size() > 64) format_error(path, "tensor '" + name + "': rank " + std::to_string(shape.size()) + " > 64");
  bool any_zero = false;
  for (const json& d : shape) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      format_error(path, "tensor '" + name + "': shape entries must be non-negative integers");
    }
    e.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
    any_zero = any_zero || e.shape.back() == 0;
  }

  const json& offsets = v.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) format_error(path, "tensor '" + name + "': data_offsets must be [begin, end]");
  e.begin = parse_offset(path, name, offsets[0]);
  e.end = parse_offset(path, name, offsets[1]);
  if (e.begin > e.end) {
    format_error(path, "tensor '" + name + "': data_offsets begin " + std::to_string(e.begin) + " > end " + std::to_string(e.end));
  }
  if (e.end > data_size) {
    format_error(path, "tensor '" + name + "': data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                           "] run past the data section (" + std::to_string(data_size) + " bytes)");
  }

  // shape x item size must equal the byte range; multiply with an overflow guard (saturating at 2^64-1).
  const uint64_t item = c10::elementSize(e.dtype);
  const uint64_t range = e.end - e.begin;
  uint64_t bytes = any_zero ? 0 : item;
  bool overflow = false;
  for (int64_t d : e.shape) {
    if (any_zero) break;
    const auto ud = static_cast<uint64_t>(d);
    if (bytes > std::numeric_limits<uint64_t>::max() / ud) {
      overflow = true;
      break;
    }
    bytes *= ud;
  }
  if (overflow) format_error(path, "tensor '" + name + "': shape x item size overflows 64 bits (hostile or corrupt shape)");
  if (bytes != range) {
    format_error(path, "tensor '" + name + "': shape x item size = " + std::to_string(bytes) + " bytes but data_offsets span " +
                           std::to_string(range) + " bytes");
  }
  return e;
}

}  // namespace

std::optional<torch::ScalarType> dtype_from_string(const std::string& s) {
  for (const auto& [name, type] : dtype_table()) {
    if (name == s) return type;
  }
  return std::nullopt;
}

std::string dtype_to_string(torch::ScalarType t) {
  for (const auto& [name, type] : dtype_table()) {
    if (type == t) return name;
  }
  throw_error(ASD_ERR_UNSUPPORTED, std::string("dtype ") + c10::toString(t) + " cannot be stored in safetensors");
}

Header read_header(const std::string& path) {
  if (!host_is_little_endian()) throw_error(ASD_ERR_UNSUPPORTED, "safetensors needs a little-endian host");
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw_error(ASD_ERR_IO, "'" + path + "' is a directory, not a safetensors file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error(ASD_ERR_IO, "cannot open '" + path + "' for reading");
  in.seekg(0, std::ios::end);
  const auto end_pos = in.tellg();
  if (end_pos < 0) throw_error(ASD_ERR_IO, "cannot determine the size of '" + path + "'");
  const uint64_t file_size = static_cast<uint64_t>(end_pos);
  in.seekg(0);
  if (file_size < 8) format_error(path, "file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");

  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  if (!in) throw_error(ASD_ERR_IO, "cannot read '" + path + "'");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeaderBytes) {
    format_error(path, "header length " + std::to_string(header_len) + " exceeds the " + std::to_string(kMaxHeaderBytes) + "-byte limit");
  }
  if (header_len > file_size - 8) {
    format_error(path, "header length " + std::to_string(header_len) + " runs past the end of the file (" + std::to_string(file_size) +
                           " bytes)");
  }
  if (header_len < 2) format_error(path, "header length " + std::to_string(header_len) + " is too small for a JSON object");

  std::string text(header_len, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  if (!in) throw_error(ASD_ERR_IO, "cannot read the header of '" + path + "'");

  // Parse, rejecting duplicate top-level names (nlohmann keeps the last silently).
  std::unordered_set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
      const std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text, cb);
  } catch (const json::exception& e) {
    format_error(path, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!duplicate.empty()) format_error(path, "tensor name '" + duplicate + "' appears twice in the header");
  if (!header.is_object()) format_error(path, "header is not a JSON object");

  Header h;
  h.data_start = 8 + header_len;
  h.data_size = file_size - h.data_start;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) format_error(path, "__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) format_error(path, "__metadata__ value '" + m.key() + "' is not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    h.entries.push_back(parse_entry(path, it.key(), it.value(), h.data_size));
  }

  // No two byte ranges may overlap (empty tensors occupy no bytes and cannot overlap anything).
  std::vector<const Entry*> by_offset;
  for (const Entry& e : h.entries) {
    if (e.end > e.begin) by_offset.push_back(&e);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      format_error(path, "byte ranges of tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
    }
  }
  return h;
}

TensorMap load(const std::string& path, std::optional<torch::ScalarType> dtype) {
  if (dtype && !c10::isFloatingType(*dtype)) {
    throw_error(ASD_ERR_INVALID_ARGUMENT, std::string("load dtype must be a floating type, got ") + c10::toString(*dtype));
  }
  const Header h = read_header(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error(ASD_ERR_IO, "cannot open '" + path + "' for reading");
  TensorMap map;
  map.set_source(path);
  for (const Entry& e : h.entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    const uint64_t bytes = e.end - e.begin;
    if (bytes > 0) {
      in.seekg(static_cast<std::streamoff>(h.data_start + e.begin));
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes));
      if (!in) throw_error(ASD_ERR_IO, "'" + path + "': short read of tensor '" + e.name + "'");
    }
    if (dtype && c10::isFloatingType(e.dtype) && e.dtype != *dtype) t = t.to(*dtype);
    map.set(e.name, std::move(t));
  }
  return map;
}

void save(const std::string& path, const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  if (!host_is_little_endian()) throw_error(ASD_ERR_UNSUPPORTED, "safetensors needs a little-endian host");
  std::vector<torch::Tensor> cpu;
  cpu.reserve(tensors.size());
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) header["__metadata__"][k] = v;
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string& name = tensors.names()[i];
    if (name == "__metadata__") throw_error(ASD_ERR_INVALID_ARGUMENT, "'__metadata__' is reserved and cannot name a tensor");
    torch::Tensor t = tensors.tensor(i).detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype_to_string(t.scalar_type())}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    cpu.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data section is 8-byte aligned
  const uint64_t header_len = text.size();
  write_file_atomically(path, [&](std::ostream& out) {
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>((header_len >> (8 * i)) & 0xFF);
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const torch::Tensor& t : cpu) {
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
  });
}

}  // namespace asd::safetensors
