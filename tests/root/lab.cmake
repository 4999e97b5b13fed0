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

# The L7 path end to end on the lab with meshd: real curl in the pods, the kernel redirect
# into each node's proxy, HTTPRoute weights/headers/filters, 404/503 with flags, a
# server-first protocol, Istio request metrics (tests/root/lab/l7_test.sh, l7.yaml).
add_test(NAME lab_l7
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/lab/l7_test.sh)
set_tests_properties(lab_l7 PROPERTIES
  LABELS root
  RUN_SERIAL TRUE
  TIMEOUT 300
  ENVIRONMENT "MESHD_BUILD_DIR=${PROJECT_BINARY_DIR}")

# The mTLS tunnel end to end on the lab (MESHLAB_MTLS=1: meshd-ca in node n1's netns, node
# credentials from the test PKI): certificates from the CA, traffic through :15008 with only
# TLS on the node link, PERMISSIVE/STRICT, the tunnel server's authorization, testssl.sh
# (tests/root/lab/mtls_test.sh, mtls.yaml, mtls-ca-workloads.yaml).
add_test(NAME lab_mtls
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/lab/mtls_test.sh)
set_tests_properties(lab_mtls PROPERTIES
  LABELS root
  RUN_SERIAL TRUE
  TIMEOUT 300
  ENVIRONMENT "MESHD_BUILD_DIR=${PROJECT_BINARY_DIR}")
