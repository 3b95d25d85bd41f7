#!/usr/bin/env bash
# Fuzzes a target for SECONDS, seeded with fixtures.
#   gateway/fuzz/run.sh [TARGET] [SECONDS=600]
# targets: receive offload gro dns_request dns_upstream docker_inspect admin_container
#          etcd_record host_headers sni
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
  dns_upstream) for f in seeds/dns/*.bin; do   # query length, query, the query as its answer
      /usr/bin/python3 -c 'import sys; q=open(sys.argv[1],"rb").read(); a=bytearray(q); a[2]|=0x80
sys.stdout.buffer.write(len(q).to_bytes(2,"big")+q+bytes(a))' "$f" > "corpus/$target/$(basename "$f")"; done ;;
  admin_container) cp seeds/admin/* "corpus/$target/" ;;
  etcd_record) cp seeds/etcd/* "corpus/$target/" ;;
  host_headers) cp seeds/host/* "corpus/$target/" ;;
  gro) printf '\x02\xff\x00\x01\xff\x00\x02\xff\x01\x03\x10\x00\x04' > "corpus/$target/run" ;;
  sni) printf 'x.b.test' > "corpus/$target/b"; printf 'a.test' > "corpus/$target/a" ;;
esac
# cargo-fuzz needs nightly flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=9000
