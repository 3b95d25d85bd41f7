#!/usr/bin/env bash
# Fuzzes a target for SECONDS, seeded with fixtures.
#   gateway/fuzz/run.sh [TARGET] [SECONDS=600]
# targets: receive offload gro dns_request dns_upstream docker_inspect admin_container
#          etcd_record acme_record host_headers sni path_normalize route_table wg_receive
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
  acme_record) # a certificate record made now (no key is kept in the repository), challenges
    t=$(mktemp -d)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=web.example.com \
      -addext subjectAltName=DNS:web.example.com -keyout "$t/k" -out "$t/c" 2>/dev/null
    /usr/bin/python3 - "$t" "corpus/$target" <<'PY'
import json, sys
t, out = sys.argv[1], sys.argv[2]
def seed(name, key, value):
    k = key.encode()
    open(f"{out}/{name}", "wb").write(bytes([len(k)]) + k + value)
rec = {"chain": open(f"{t}/c").read(), "key": open(f"{t}/k").read(), "directory": "https://ca.test/dir"}
seed("cert", "/vxgate/acme/certs/web.example.com", json.dumps(rec).encode())
seed("http", "/vxgate/acme/http/tok-123_x", b"tok-123_x.thumbprint")
seed("alpn", "/vxgate/acme/alpn/web.example.com", b"ab" * 32)
seed("backoff", "/vxgate/acme/backoff/web.example.com", b'{"failures":3,"next_at":1700000000}')
PY
    rm -rf "$t" ;;
  gro) printf '\x02\xff\x00\x01\xff\x00\x02\xff\x01\x03\x10\x00\x04' > "corpus/$target/run" ;;
  sni) printf 'x.b.test' > "corpus/$target/b"; printf 'a.test' > "corpus/$target/a" ;;
  path_normalize) for p in '/public/../secret.txt' '/public/%2e%2e/secret.txt' '/public/..%2fsecret.txt' \
      '/api//evil.com/x?q=../a' '/%7Euser/./a/b/..'; do printf '%s' "$p" > "corpus/$target/$(printf '%s' "$p" | md5sum | cut -c1-8)"; done ;;
  route_table) printf '*.example.com,shop.example.org\0evil\001web.example.com,*.example.com\001/login\001true\0web\0api\001shop.example.org\001/api\001true' > "corpus/$target/squat"
    printf '\0evil\001web.example.com\0web\001*.example.org' > "corpus/$target/default" ;;
esac
# cargo-fuzz needs nightly flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=9000
