#include "core/atomic_dir.h"

#include <random>

#include "core/error.h"

namespace fs = std::filesystem;

namespace asd {

void write_directory_atomically(const fs::path& target_in, const std::string& what, const std::function<void(const fs::path&)>& write) {
  const fs::path target = fs::absolute(target_in).lexically_normal();
  const fs::path parent = target.parent_path();
  std::random_device rd;
  const fs::path staging = parent / ("." + target.filename().string() + ".staging-" + std::to_string(rd()));
  const fs::path previous = parent / ("." + target.filename().string() + ".previous-" + std::to_string(rd()));
  auto roll_back = [&] {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    if (!fs::exists(target) && fs::exists(previous)) fs::rename(previous, target, ignored);
  };
  try {
    fs::create_directories(parent);
    fs::create_directories(staging);
    write(staging);
    if (fs::exists(target)) fs::rename(target, previous);
    fs::rename(staging, target);
    std::error_code ignored;
    fs::remove_all(previous, ignored);
  } catch (const fs::filesystem_error& e) {
    roll_back();
    throw_error(ASD_ERR_IO, "cannot write " + what + " '" + target.string() + "': " + e.what());
  } catch (...) {
    roll_back();
    throw;
  }
}

}  // namespace asd
