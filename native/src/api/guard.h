// The C API's exception firewall: every extern "C" entry point runs its body through asd::api::guard, which
// catches everything, records the message in a thread-local slot (asd_last_error) and returns a status.
#pragma once

#include <new>
#include <string>

#include <c10/util/Exception.h>

#include "anomalysd.h"
#include "core/error.h"
#include "core/runtime.h"

namespace asd::api {

void set_last_error(const std::string& message) noexcept;
asd_status fail(asd_status status, const std::string& message) noexcept;

template <class F>
asd_status guard(const char* function, F&& body) noexcept {
  try {
    ensure_runtime_initialized();
    body();
    return ASD_OK;
  } catch (const asd::Error& e) {
    return fail(e.status(), std::string(function) + ": " + e.what());
  } catch (const std::bad_alloc&) {
    return fail(ASD_ERR_OUT_OF_MEMORY, std::string(function) + ": out of memory");
  } catch (const c10::Error& e) {
    // c10::Error::what() carries a C++ backtrace; what_without_backtrace() is the message users need.
    const std::string msg = e.what_without_backtrace();
    const bool oom = msg.find("out of memory") != std::string::npos || msg.find("Out of memory") != std::string::npos;
    return fail(oom ? ASD_ERR_OUT_OF_MEMORY : ASD_ERR_RUNTIME, std::string(function) + ": libtorch: " + msg);
  } catch (const std::exception& e) {
    return fail(ASD_ERR_RUNTIME, std::string(function) + ": " + e.what());
  } catch (...) {
    return fail(ASD_ERR_INTERNAL, std::string(function) + ": unknown exception (engine bug)");
  }
}

/// Throws ASD_ERR_INVALID_ARGUMENT naming `what` if `p` is null.
template <class T>
T* not_null(T* p, const char* what) {
  if (p == nullptr) throw_error(ASD_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
  return p;
}

}  // namespace asd::api

#define ASD_GUARD(...) ::asd::api::guard(__func__, [&]() __VA_ARGS__)
