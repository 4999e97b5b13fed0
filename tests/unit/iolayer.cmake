# iolayer_relay: bench/iolayer's relays (epoll, io_uring single-shot and multishot) in-process
# on loopback with --quick --verify: every echo equals what was sent, the stream's bytes and
# FINs arrive end to end. No timing assertion. Where io_uring is disabled
# (kernel.io_uring_disabled, seccomp) the program says so and exits 1: the test fails rather
# than skips, as does a build without liburing.
if(TARGET iolayer_bench)
  add_test(NAME iolayer_relay COMMAND iolayer_bench --quick --verify --duration 0.3)
else()
  add_test(NAME iolayer_relay
           COMMAND sh -c "echo 'iolayer_relay: iolayer_bench was not built: liburing not found by pkg-config (install liburing-dev; scripts/setup.sh does)' >&2; exit 1")
endif()
set_tests_properties(iolayer_relay PROPERTIES LABELS unit TIMEOUT 180)

# iolayer_uring_unavailable: with io_uring_setup failing (EPERM injected by strace, as a
# seccomp profile or kernel.io_uring_disabled=2 would make it), iolayer_bench exits 1 and
# says io_uring is unavailable. Registered where strace exists.
find_program(MESHD_STRACE strace)
if(TARGET iolayer_bench AND MESHD_STRACE)
  add_test(NAME iolayer_uring_unavailable
           COMMAND sh -c "out=$(${MESHD_STRACE} -f -o /dev/null -e trace=io_uring_setup -e inject=io_uring_setup:error=EPERM \"$0\" --quick --duration 0.1 --workloads pp64-c1 --layers io_uring 2>&1); rc=$?; echo \"$out\"; [ $rc -eq 1 ] && echo \"$out\" | grep -q 'io_uring is unavailable on this machine: io_uring_setup failed: Operation not permitted'"
                   $<TARGET_FILE:iolayer_bench>)
  set_tests_properties(iolayer_uring_unavailable PROPERTIES LABELS unit TIMEOUT 60)
endif()
