// Where the state model's one updater sends each new DesiredLbState.
#pragma once

#include "absl/status/status.h"
#include "state/lb_state.h"

namespace meshd::state {

class LbStateSink {
 public:
  virtual ~LbStateSink() = default;
  virtual absl::Status apply(const DesiredLbState&) = 0;
};

}  // namespace meshd::state
