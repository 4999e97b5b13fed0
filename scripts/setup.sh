#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing, the lab and the benchmarks need,
# mounts bpffs, and checks the kernel features meshd needs (BTF, cgroup v2). Idempotent and
# quiet: it prints only what it changes or what is missing. Run as root.
set -euo pipefail

# One package per line, grouped by what needs it.
PACKAGES=(
  # toolchain and build
  build-essential cmake ninja-build pkg-config clang llvm clang-format libclang-rt-14-dev
  # BPF: libbpf (skeletons, loading), bpftool (skeleton generation), libelf/zlib (libbpf)
  libbpf-dev bpftool libelf-dev zlib1g-dev linux-libc-dev
  # userspace libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libcli11-dev
  libyaml-cpp-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libabsl-dev libre2-dev
  # the L7 proxy: HTTP/2 (nghttp2), io_uring (measured against epoll; docs/design/0003)
  libnghttp2-dev liburing-dev
  # identities, the CA and mTLS (issue 6): OpenSSL 3 (find_package(OpenSSL 3.0))
  libssl-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev sockperf iperf3
  # the lab: ip (netns, veth, bridge), sysctl, nsenter/flock
  iproute2 procps util-linux
  # the benchmark suite (scripts/bench.sh): comparison proxy, load generators, sidecar
  # redirection, gRPC workload and plots (Debian's /usr/bin/python3)
  haproxy wrk nghttp2-client nghttp2-server iptables python3-grpcio python3-protobuf
  # L7 end-to-end tests: real HTTP/1.1 and HTTP/2 clients, gRPC stubs for the python client/server
  curl python3-grpc-tools
  # mTLS (issue 6): testssl.sh against the :15008 tunnel, tcpdump to show the node link carries TLS
  testssl.sh tcpdump
  # the test PKI (scripts/gen-test-certs.sh) and the lab's attack checks (openssl s_client)
  openssl
  python3-matplotlib
)

if [[ $(id -u) != 0 ]]; then
  echo "setup.sh: must run as root (it installs packages and mounts bpffs): sudo $0" >&2
  exit 1
fi

problems=()

# --- packages: apt only when something is missing.
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  unknown=()
  for p in "${missing[@]}"; do
    candidate=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    if [[ -z $candidate || $candidate == "(none)" ]]; then unknown+=("$p"); fi
  done
  if ((${#unknown[@]})); then
    echo "setup.sh: no installable candidate for: ${unknown[*]} (is this Debian 12 with the main" \
      "component in /etc/apt/sources.list?)" >&2
    exit 1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- bpffs: meshd pins its maps and links there.
if ! awk '$2 == "/sys/fs/bpf" && $3 == "bpf" { f = 1 } END { exit !f }' /proc/mounts; then
  echo "setup.sh: mounting bpffs at /sys/fs/bpf"
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf ||
    problems+=("cannot mount bpffs at /sys/fs/bpf (kernel without CONFIG_BPF_SYSCALL, or a container without CAP_SYS_ADMIN?)")
fi

# --- kernel BTF: CO-RE relocations in meshd's BPF programs need it.
if [[ ! -r /sys/kernel/btf/vmlinux ]]; then
  problems+=("no kernel BTF at /sys/kernel/btf/vmlinux: boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's stock kernels are)")
fi

# --- cgroup v2: meshd attaches its socket programs to a cgroup v2 subtree. On hybrid hosts
# it is mounted at /sys/fs/cgroup/unified, on unified hosts at /sys/fs/cgroup.
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
if [[ -z $cg2 ]]; then
  problems+=("no cgroup v2 mount in /proc/mounts: mount one (mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified) or boot with systemd.unified_cgroup_hierarchy=1")
fi

if ((${#problems[@]})); then
  for p in "${problems[@]}"; do echo "setup.sh: missing: $p" >&2; done
  exit 1
fi
