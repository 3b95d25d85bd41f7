#!/usr/bin/env bash
# Runs every test of vxgate: unit and integration tests (cargo test --workspace), the service
# unit (dist/check-unit.sh) and the Debian package (dist/check-deb.sh: installs cargo-deb if
# missing, then dpkg -i / -r / --purge on this machine), then the end-to-end tests in network
# namespaces (testbed/e2e/run.sh, needs root).
# Installs what it needs with apt-get when missing.
# Usage: ./test.sh [e2e test files...]    or    ./test.sh --install-only
set -euo pipefail
cd "$(dirname "$0")"

need=(ip:iproute2 ping:iputils-ping iperf3:iperf3 curl:curl dig:bind9-dnsutils
      ethtool:ethtool tcpdump:tcpdump python3:python3 openssl:openssl ps:procps
      timeout:coreutils etcd:etcd-server etcdctl:etcd-client protoc:protobuf-compiler
      /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev
      dockerd:docker.io /usr/bin/docker:docker.io /bin/busybox:busybox-static nsenter:util-linux
      findmnt:util-linux /usr/lib/python3/dist-packages/h2/__init__.py:python3-h2
      pebble:pebble /usr/sbin/dnsmasq:dnsmasq-base
      /usr/lib/python3/dist-packages/grpc/__init__.py:python3-grpcio
      wg:wireguard-tools wireguard-go:wireguard-go
      setpriv:util-linux unshare:util-linux mknod:coreutils git:git nft:nftables
      systemd-analyze:systemd /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver
      /usr/lib/python3/dist-packages/selenium/__init__.py:python3-selenium)
missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  [ "$cmd" = python3 ] && cmd=/usr/bin/python3
  if [ "${cmd:0:1}" = / ]; then [ -e "$cmd" ] || missing+=("$pkg")
  else command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test.sh: missing packages ${missing[*]} (run as root to install them)"
  fi
fi

[ "${1:-}" = --install-only ] && exit 0

cargo build --release --bin vxgate
cargo test --workspace
bash dist/check-unit.sh "$PWD/target/release/vxgate"   # the service unit, as systemd reads it
# the Debian package: build, dpkg -i, check what it installed, dpkg -r, dpkg --purge
if [ "$(id -u)" = 0 ]; then
  command -v cargo-deb >/dev/null || [ -x "$HOME/.cargo/bin/cargo-deb" ] || cargo install cargo-deb --locked --quiet
  PATH=$PATH:$HOME/.cargo/bin bash dist/check-deb.sh
elif [ -n "${CI:-}" ]; then
  echo "test.sh: the package test needs root" >&2; exit 1
else
  echo "test.sh: skipping the package test (needs root)"
fi
VXGATE="$PWD/target/release/vxgate" bash testbed/e2e/run.sh "$@"
