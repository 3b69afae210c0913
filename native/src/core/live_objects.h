// Process-wide count of engine objects handed out through the C API and not yet freed (for leak tests).
#pragma once

#include <atomic>
#include <cstdint>

namespace asd {

std::atomic<int64_t>& live_object_counter();

/// Base of every object behind an opaque handle: construction/destruction keep the counter exact.
struct CountedObject {
  CountedObject() { live_object_counter().fetch_add(1, std::memory_order_relaxed); }
  CountedObject(const CountedObject&) { live_object_counter().fetch_add(1, std::memory_order_relaxed); }
  CountedObject& operator=(const CountedObject&) = default;
  virtual ~CountedObject() { live_object_counter().fetch_sub(1, std::memory_order_relaxed); }
};

}  // namespace asd
