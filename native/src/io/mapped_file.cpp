#include "io/mapped_file.h"

#include <filesystem>

#include "core/error.h"

#if defined(_WIN32)
#define WIN32_LEAN_AND_MEAN
#define NOMINMAX
#include <windows.h>
#else
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace asd {

namespace {
// A zero-length file cannot be mapped; a static byte stands in for its (empty) content.
const uint8_t kEmpty = 0;
}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw_error(ASD_ERR_IO, "'" + path + "' is a directory, not a weights file");
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
#if defined(_WIN32)
  const std::wstring wide = std::filesystem::path(path).wstring();
  HANDLE file = CreateFileW(wide.c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr);
  if (file == INVALID_HANDLE_VALUE) throw_error(ASD_ERR_IO, "cannot open '" + path + "' for reading");
  f->file_ = file;
  LARGE_INTEGER size;
  if (!GetFileSizeEx(file, &size)) throw_error(ASD_ERR_IO, "cannot determine the size of '" + path + "'");
  f->size_ = static_cast<uint64_t>(size.QuadPart);
  if (f->size_ == 0) {
    f->data_ = &kEmpty;
    return f;
  }
  HANDLE mapping = CreateFileMappingW(file, nullptr, PAGE_WRITECOPY, 0, 0, nullptr);
  if (mapping == nullptr) throw_error(ASD_ERR_IO, "cannot map '" + path + "' into memory");
  f->mapping_ = mapping;
  void* view = MapViewOfFile(mapping, FILE_MAP_COPY, 0, 0, 0);
  if (view == nullptr) throw_error(ASD_ERR_IO, "cannot map '" + path + "' into memory");
  f->data_ = static_cast<const uint8_t*>(view);
#else
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_error(ASD_ERR_IO, "cannot open '" + path + "' for reading: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw_error(ASD_ERR_IO, "cannot determine the size of '" + path + "'");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw_error(ASD_ERR_IO, "'" + path + "' is not a regular file");
  }
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ == 0) {
    ::close(fd);
    f->data_ = &kEmpty;
    return f;
  }
  void* p = ::mmap(nullptr, f->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (p == MAP_FAILED) throw_error(ASD_ERR_IO, "cannot map '" + path + "' into memory: " + std::strerror(mmap_errno));
  f->data_ = static_cast<const uint8_t*>(p);
#endif
  return f;
}

MappedFile::~MappedFile() {
#if defined(_WIN32)
  if (data_ != nullptr && data_ != &kEmpty) UnmapViewOfFile(data_);
  if (mapping_ != nullptr) CloseHandle(mapping_);
  if (file_ != nullptr) CloseHandle(file_);
#else
  if (data_ != nullptr && data_ != &kEmpty) ::munmap(const_cast<uint8_t*>(data_), size_);
#endif
}

void MappedFile::release(uint64_t offset, uint64_t length) const {
#if !defined(_WIN32)
  if (data_ == &kEmpty || offset >= size_ || length == 0) return;
  length = std::min(length, size_ - offset);
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  // Pages touching the range: a page shared with a neighbouring tensor is dropped too and simply read again if
  // needed (the mapping is private and the loaders never write to it, so its pages equal the file's).
  const uint64_t begin = offset / page * page;
  const uint64_t end = std::min(size_, (offset + length + page - 1) / page * page);
  ::madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_DONTNEED);
#else
  (void)offset;
  (void)length;
#endif
}

void MappedFile::release(const void* begin, uint64_t length) const {
  const auto* p = static_cast<const uint8_t*>(begin);
  if (p < data_ || p >= data_ + size_) return;
  release(static_cast<uint64_t>(p - data_), length);
}

}  // namespace asd
