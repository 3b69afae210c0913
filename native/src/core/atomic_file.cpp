#include "core/atomic_file.h"

#include <atomic>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"

namespace asd {

namespace {
std::filesystem::path temporary_sibling(const std::filesystem::path& target) {
  static std::atomic<uint64_t> sequence{0};
  std::random_device rd;
  std::ostringstream name;
  name << "." << target.filename().string() << ".tmp-" << std::hex << rd() << "-" << sequence.fetch_add(1);
  return target.parent_path() / name.str();
}
}  // namespace

void write_file_atomically(const std::filesystem::path& target, const std::function<void(std::ostream&)>& write) {
  const std::filesystem::path temp = temporary_sibling(target);
  try {
    {
      std::ofstream out(temp, std::ios::binary | std::ios::trunc);
      if (!out) throw_error(ASD_ERR_IO, "cannot create temporary file '" + temp.string() + "' for '" + target.string() + "'");
      write(out);
      out.flush();
      if (!out) throw_error(ASD_ERR_IO, "failed writing '" + target.string() + "' (disk full or I/O error)");
    }
    std::error_code ec;
    std::filesystem::rename(temp, target, ec);
    if (ec) throw_error(ASD_ERR_IO, "cannot rename temporary file onto '" + target.string() + "': " + ec.message());
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw;
  }
}

}  // namespace asd
