# The lab topology itself (lab/meshlab up --no-meshd): pod-to-pod reachability within and
# across nodes, the VIP range unreachable from pods, cgroup placement of `meshlab exec`, the
# host's root namespace untouched, and teardown (also after a killed `up`) leaving nothing.
# Needs root; uses the lab's fixed names (mlab-*, /run/meshd-lab), so it tears down a lab
# left running by `demo.sh --keep`.
add_test(NAME lab_topology
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/lab/topology_test.sh)
set_tests_properties(lab_topology PROPERTIES
  LABELS root
  RUN_SERIAL TRUE
  TIMEOUT 180
  ENVIRONMENT "MESHD_BUILD_DIR=${PROJECT_BINARY_DIR}")
