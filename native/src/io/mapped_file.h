// A private memory mapping of a whole file: the weights of a checkpoint are read from it in place, with at most
// one copy (into the module's parameters), and the pages of a tensor are handed back to the kernel once it has
// been copied, so loading a file never holds it twice in resident memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace asd {

class MappedFile {
 public:
  /// Maps `path` copy-on-write (private: a write to a view changes this process's copy, never the file; the loaders
  /// only read). ASD_ERR_IO if it cannot be opened or mapped, naming the path.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

  /// Drops the resident pages that overlap [offset, offset + length) (Linux madvise MADV_DONTNEED; a no-op
  /// elsewhere). The mapping stays valid: a later read faults the pages back in from the file.
  void release(uint64_t offset, uint64_t length) const;
  /// The same for a range given by address; ranges outside the mapping are ignored.
  void release(const void* begin, uint64_t length) const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
#if defined(_WIN32)
  void* file_ = nullptr;
  void* mapping_ = nullptr;
#endif
};

}  // namespace asd
