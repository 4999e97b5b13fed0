// A replacement of the global operator new that counts allocations while enabled, for
// tests that assert a code path does not allocate. Link counting_new.cc into the test.
#pragma once

#include <cstddef>

namespace meshd::testing {

// Starts counting from zero.
void startCountingAllocations();
// Stops counting; returns the number of operator new calls since the start.
size_t stopCountingAllocations();

}  // namespace meshd::testing
