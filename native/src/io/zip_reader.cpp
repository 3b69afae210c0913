#include "io/zip_reader.h"

#include <algorithm>

#include "core/error.h"

namespace asd::zip {

namespace {

constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr uint32_t kCentralHeader = 0x02014b50;
constexpr uint32_t kEndOfCentralDirectory = 0x06054b50;
constexpr uint32_t kZip64End = 0x06064b50;
constexpr uint32_t kZip64Locator = 0x07064b50;
constexpr uint64_t kMaxEntries = 10'000'000;

uint16_t u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t u32(const uint8_t* p) { return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24); }
uint64_t u64(const uint8_t* p) { return static_cast<uint64_t>(u32(p)) | (static_cast<uint64_t>(u32(p + 4)) << 32); }

std::string method_name(uint16_t method) {
  switch (method) {
    case 8: return "deflated";
    case 9: return "deflate64";
    case 12: return "bzip2";
    case 14: return "lzma";
    case 93: return "zstd";
    default: return "compression method " + std::to_string(method);
  }
}

}  // namespace

bool looks_like_zip(const MappedFile& file) {
  if (file.size() < 4) return false;
  const uint32_t sig = u32(file.data());
  return sig == kLocalHeader || sig == kEndOfCentralDirectory;
}

Archive::Archive(const MappedFile& file) : file_(file) {
  const uint8_t* d = file.data();
  const uint64_t n = file.size();
  const std::string& path = file.path();
  auto bad = [&](const std::string& problem) { throw_error(ASD_ERR_FORMAT, "'" + path + "' is not a valid zip archive: " + problem); };
  // End of central directory: 22 bytes + a comment of at most 65,535 bytes, at the end of the file.
  if (n < 22) bad("the file is " + std::to_string(n) + " bytes, shorter than a zip end record (truncated?)");
  uint64_t eocd = n;  // not found
  for (uint64_t at = n - 22 + 1; at-- > 0 && n - at <= 22 + 65535;) {
    if (u32(d + at) == kEndOfCentralDirectory && at + 22 + u16(d + at + 20) == n) {
      eocd = at;
      break;
    }
  }
  if (eocd == n) bad("no end-of-central-directory record (the file is truncated or not a zip archive)");
  uint64_t count = u16(d + eocd + 10);
  uint64_t cd_size = u32(d + eocd + 12);
  uint64_t cd_offset = u32(d + eocd + 16);
  if (u16(d + eocd + 4) != 0 || u16(d + eocd + 6) != 0) bad("multi-disk archives are not supported");
  if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
    if (eocd < 20 || u32(d + eocd - 20) != kZip64Locator) bad("a Zip64 archive without its Zip64 end-of-central-directory locator");
    const uint64_t z64 = u64(d + eocd - 20 + 8);
    if (z64 > n || n - z64 < 56 || u32(d + z64) != kZip64End) bad("the Zip64 end-of-central-directory record is missing or out of range");
    count = u64(d + z64 + 32);
    cd_size = u64(d + z64 + 40);
    cd_offset = u64(d + z64 + 48);
  }
  if (cd_offset > n || cd_size > n - cd_offset) {
    bad("the central directory [" + std::to_string(cd_offset) + ", +" + std::to_string(cd_size) + ") runs past the end of the file (" +
        std::to_string(n) + " bytes)");
  }
  if (count > kMaxEntries || count * 46 > cd_size) bad(std::to_string(count) + " entries cannot fit in a central directory of " + std::to_string(cd_size) + " bytes");

  entries_.reserve(static_cast<size_t>(count));
  uint64_t at = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_end - at < 46 || u32(d + at) != kCentralHeader) bad("central directory entry " + std::to_string(i) + " is malformed");
    Entry e;
    e.flags = u16(d + at + 8);
    e.method = u16(d + at + 10);
    e.compressed_size = u32(d + at + 20);
    e.size = u32(d + at + 24);
    const uint64_t name_len = u16(d + at + 28), extra_len = u16(d + at + 30), comment_len = u16(d + at + 32);
    uint64_t local = u32(d + at + 42);
    if (cd_end - at - 46 < name_len + extra_len + comment_len) bad("central directory entry " + std::to_string(i) + " runs past the directory");
    e.name.assign(reinterpret_cast<const char*>(d + at + 46), static_cast<size_t>(name_len));
    // Zip64 extended information: the 8-byte values of the fields that are 0xFFFFFFFF, in this order.
    const uint8_t* x = d + at + 46 + name_len;
    const uint8_t* x_end = x + extra_len;
    while (x_end - x >= 4) {
      const uint16_t id = u16(x), len = u16(x + 2);
      if (x_end - x - 4 < len) bad("entry '" + e.name + "': an extra field runs past its entry");
      if (id == 0x0001) {
        const uint8_t* v = x + 4;
        const uint8_t* v_end = v + len;
        auto take = [&](uint64_t& field) {
          if (field != 0xFFFFFFFF) return;
          if (v_end - v < 8) bad("entry '" + e.name + "': a truncated Zip64 extra field");
          field = u64(v);
          v += 8;
        };
        take(e.size);
        take(e.compressed_size);
        take(local);
      }
      x += 4 + len;
    }
    at += 46 + name_len + extra_len + comment_len;

    if (local > n || n - local < 30 || u32(d + local) != kLocalHeader) {
      bad("entry '" + e.name + "': its local header at offset " + std::to_string(local) + " is missing or out of range");
    }
    const uint64_t data = local + 30 + u16(d + local + 26) + u16(d + local + 28);
    if (data > n || e.compressed_size > n - data) {
      bad("entry '" + e.name + "': its data [" + std::to_string(data) + ", +" + std::to_string(e.compressed_size) +
          ") runs past the end of the file (" + std::to_string(n) + " bytes; truncated?)");
    }
    e.data_offset = data;
    if (!index_.emplace(e.name, entries_.size()).second) bad("entry '" + e.name + "' appears twice");
    entries_.push_back(std::move(e));
  }
  // No two entries may share bytes.
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries_) {
    if (e.compressed_size > 0) by_offset.push_back(&e);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) { return a->data_offset < b->data_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->data_offset < by_offset[i - 1]->data_offset + by_offset[i - 1]->compressed_size) {
      bad("the data of entries '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
    }
  }
}

const Entry* Archive::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* Archive::stored_data(const Entry& e) const {
  if (e.flags & 1) throw_error(ASD_ERR_FORMAT, "'" + file_.path() + "': zip entry '" + e.name + "' is encrypted");
  if (e.method != 0) {
    throw_error(ASD_ERR_UNSUPPORTED, "'" + file_.path() + "': zip entry '" + e.name + "' is " + method_name(e.method) +
                                         "; PyTorch checkpoints store tensor data uncompressed (re-save the file with torch.save, or convert it "
                                         "to safetensors)");
  }
  if (e.size != e.compressed_size) {
    throw_error(ASD_ERR_FORMAT, "'" + file_.path() + "': stored zip entry '" + e.name + "' has size " + std::to_string(e.size) +
                                    " but " + std::to_string(e.compressed_size) + " bytes of data");
  }
  return file_.data() + e.data_offset;
}

}  // namespace asd::zip
