// The central directory of a zip archive held in memory (a MappedFile), enough to read PyTorch's checkpoint format
// (torch.save since 1.6): stored (uncompressed) entries, Zip64 for archives over 4 GiB. Every offset and size is
// checked against the file before use; a compressed or encrypted entry is reported, never decompressed.
// Format: PKWARE APPNOTE.TXT 6.3 (sections 4.3.7 local header, 4.3.12 central directory, 4.3.14-16 Zip64, 4.5.3).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/mapped_file.h"

namespace asd::zip {

struct Entry {
  std::string name;
  uint16_t method = 0;       ///< 0 = stored, 8 = deflated, ...
  uint16_t flags = 0;        ///< bit 0 = encrypted
  uint64_t size = 0;         ///< uncompressed size
  uint64_t compressed_size = 0;
  uint64_t data_offset = 0;  ///< absolute offset of the entry's bytes (after its local header)
};

class Archive {
 public:
  /// Reads and validates the central directory of `file`. ASD_ERR_FORMAT naming the file and the problem (no end
  /// of central directory, offsets past the end of the file, entries whose data runs past it, duplicate names).
  explicit Archive(const MappedFile& file);

  const std::vector<Entry>& entries() const { return entries_; }
  /// nullptr when absent.
  const Entry* find(const std::string& name) const;
  /// The bytes of a stored entry: ASD_ERR_FORMAT if it is compressed ("deflated") or encrypted, naming it.
  const uint8_t* stored_data(const Entry& entry) const;

 private:
  const MappedFile& file_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

/// True if the file starts with a zip local-file-header or end-of-central-directory signature.
bool looks_like_zip(const MappedFile& file);

}  // namespace asd::zip
