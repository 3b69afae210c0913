// Atomic file writes: content goes to a temporary file beside the target, is flushed, then renamed over it,
// so a crash or a failure never leaves a half-written target behind.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>

namespace asd {

/// Calls `write(stream)` on a temporary file in the directory of `target`, then renames it to `target`.
/// On any failure the temporary file is removed and asd::Error(ASD_ERR_IO) names `target`.
void write_file_atomically(const std::filesystem::path& target, const std::function<void(std::ostream&)>& write);

}  // namespace asd
