// Atomic directory writes: the content is written into a staging directory beside the target, which is then
// renamed over it, so a failure never leaves a half-written folder (the previous one, if any, stays).
#pragma once

#include <filesystem>
#include <functional>

namespace asd {

/// Calls `write(staging)` on a fresh directory next to `target` (".<name>.staging-<random>"), then replaces `target`
/// with it: an existing target is moved aside first and removed after the rename. On any failure the staging
/// directory is removed, the previous target is put back, and the exception propagates (filesystem errors as
/// asd::Error(ASD_ERR_IO) naming `target` and `what`).
void write_directory_atomically(const std::filesystem::path& target, const std::string& what,
                                const std::function<void(const std::filesystem::path& staging)>& write);

}  // namespace asd
