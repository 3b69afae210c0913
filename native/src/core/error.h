// Engine-wide error type. Internals throw asd::Error (or let libtorch throw c10::Error); the C API layer
// (api/guard.h) turns any exception into an asd_status and a thread-local message.
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>

#include "anomalysd.h"

namespace asd {

class Error : public std::runtime_error {
 public:
  Error(asd_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  asd_status status() const noexcept { return status_; }

 private:
  asd_status status_;
};

[[noreturn]] inline void throw_error(asd_status status, const std::string& message) { throw Error(status, message); }

/// Throws ASD_ERR_INVALID_ARGUMENT with `message` unless `condition` holds.
inline void require(bool condition, const std::string& message) {
  if (!condition) throw Error(ASD_ERR_INVALID_ARGUMENT, message);
}

/// The same for a literal message: no std::string is built unless the check fails.
inline void require(bool condition, const char* message) {
  if (!condition) throw Error(ASD_ERR_INVALID_ARGUMENT, message);
}

/// The same with a message formatted only on failure, `message()` -> std::string. For checks on per-step paths
/// (the denoising loop), where formatting shapes into the message on every call would be wasted work.
template <typename MessageFn, std::enable_if_t<std::is_invocable_v<MessageFn&>, int> = 0>
inline void require(bool condition, MessageFn&& message) {
  if (!condition) throw Error(ASD_ERR_INVALID_ARGUMENT, std::string(message()));
}

}  // namespace asd
