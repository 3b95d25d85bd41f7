#!/usr/bin/env bash
# Fuzzes a target for SECONDS, seeded with fixtures.
#   gateway/fuzz/run.sh [TARGET=receive|dns_request|offload|docker_inspect] [SECONDS=600]
set -euo pipefail
cd "$(dirname "$0")"
target=${1:-receive} secs=${2:-600}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
mkdir -p "corpus/$target"
case $target in
  receive) cp ../tests/fixtures/*.bin "corpus/$target/" ;;
  offload) cp seeds/offload/*.bin ../tests/fixtures/*.bin "corpus/$target/" ;;
  dns_request) cp seeds/dns/*.bin "corpus/$target/" ;;
  docker_inspect) cp ../tests/fixtures/docker/inspect-*.json "corpus/$target/" ;;
esac
# cargo-fuzz needs nightly flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=9000
