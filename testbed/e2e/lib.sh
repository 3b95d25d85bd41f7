# Helpers for end-to-end tests. Each test is a script e2e/NN-name.sh that exits 0 on success;
# it sources this file, which picks a unique prefix and tears its testbed down on exit.

# no pipefail: `cmd | grep -q` would fail whenever grep exits early and cmd gets SIGPIPE
set -eu
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TESTBED=$(dirname "$E2E_DIR")
ROOT=$(dirname "$TESTBED")
VXGATE=${VXGATE:-$ROOT/target/release/vxgate}
. "$TESTBED/lib.sh"
P=${P:-t$(( $$ % 100000 ))}
tb_init
LOGDIR=$(mktemp -d /tmp/vxgate-e2e.XXXXXX)
VX_PIDS=()

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

cleanup() {
  local rc=$?
  local pid
  for pid in "${VX_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${VX_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$TESTBED/down.sh" --prefix "$P" >/dev/null 2>&1 || true
  if [ $rc -ne 0 ]; then
    for f in "$LOGDIR"/*.log; do
      [ -f "$f" ] || continue
      echo "--- $f (last 30 lines)" >&2
      tail -n 30 "$f" >&2
    done
  fi
  rm -rf "$LOGDIR"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# VXG_OFFLOAD=off|auto: the overlay.offload the testbed's configs get (default: vxgate's).
up() { "$TESTBED/up.sh" --prefix "$P" ${VXG_OFFLOAD:+--offload "$VXG_OFFLOAD"} "$@" >/dev/null; }

# start_vxgate H [CONFIG]: runs vxgate in host H's namespace; waits for its "vxgate running".
start_vxgate() {
  local h=$1 cfg=${2:-$STATE/h$1.toml} log=$LOGDIR/vxgate-h$1.log
  ip netns exec "$P-h$h" "$VXGATE" run --config "$cfg" >"$log" 2>&1 &
  VX_PIDS+=($!)
  eval "VX_PID_$h=$!"
  wait_running "h$h" "$!" "$log"
}

# wait_running NAME PID LOG: until LOG says "vxgate running" (5 s); fails if PID exits first.
wait_running() {
  for _ in $(seq 100); do
    grep -q "vxgate running" "$3" && return 0
    kill -0 "$2" 2>/dev/null || fail "vxgate on $1 exited: $(tail -5 "$3")"
    sleep 0.05
  done
  fail "vxgate on $1 did not start: $(tail -5 "$3")"
}

# udp_check FROM TO IP: 20000 datagrams of 100 bytes and 5000 of 1300, each derived from its
# index (testbed/udpcheck.py), from container FROM to TO at IP:9000; fails unless none arrives
# corrupted or cut and at least 22500 arrive; prints how many arrived intact.
udp_check() {
  on "$2" /usr/bin/python3 "$TESTBED/udpcheck.py" recv 9000 6 > "$LOGDIR/udp.txt" &
  local rp=$! good bad
  sleep 0.5
  on "$1" /usr/bin/python3 "$TESTBED/udpcheck.py" send "$3" 9000 20000 100
  on "$1" /usr/bin/python3 "$TESTBED/udpcheck.py" send "$3" 9000 5000 1300
  wait "$rp" || fail "UDP: the receiver failed: $(cat "$LOGDIR/udp.txt")"
  good=$(sed -n 's/.*good=\([0-9]*\).*/\1/p' "$LOGDIR/udp.txt")
  bad=$(sed -n 's/.*bad=\([0-9]*\).*/\1/p' "$LOGDIR/udp.txt")
  [ "${bad:-1}" = 0 ] || fail "UDP: $bad datagrams arrived corrupted or cut"
  [ "${good:-0}" -ge 22500 ] || fail "UDP: only $good of 25000 datagrams arrived"
  echo "$good"
}

# stop_vxgate H: SIGTERM, and the exit code must be 0.
stop_vxgate() {
  local pid_var=VX_PID_$1
  local pid=${!pid_var}
  kill -TERM "$pid"
  local rc=0
  wait "$pid" || rc=$?
  [ $rc -eq 0 ] || fail "vxgate on h$1 exited $rc after SIGTERM"
}

# on NS CMD...: run a command in testbed namespace NS (short name: h1, h1c1, cl, ul).
on() { local ns=$P-$1; shift; ip netns exec "$ns" "$@"; }

# alive PID: the process exists and is not a zombie (this machine's init may not reap orphans).
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:.*Z' "/proc/$1/status"; }

# make_blob MiB: a random file $BLOB and its SHA-256 in $BLOB_SUM.
make_blob() {
  BLOB=$LOGDIR/blob
  head -c "$(( $1 * 1024 * 1024 ))" /dev/urandom > "$BLOB"
  BLOB_SUM=$(sha256sum "$BLOB" | cut -d' ' -f1)
}

# upload_check FROM_NS IP: POSTs $BLOB from a container to the backend at IP, which answers
# with the SHA-256 of what it received; it must match.
upload_check() {
  local got
  got=$(on "$1" curl -sS --max-time 180 -H 'Expect:' -X POST -T "$BLOB" "http://$2/") \
    || fail "upload $1 -> $2 failed"
  [ "$got" = "$BLOB_SUM" ] || fail "upload $1 -> $2: checksum $got, expected $BLOB_SUM"
}

# pcap_count NS IFACE FILTER GREP SECONDS CMD...: runs CMD while capturing on IFACE in NS;
# prints the number of captured packets that matched FILTER and whose tcpdump line (VXLAN
# decoded) matches the regex GREP. A capture that did not run (tcpdump never listened, or
# left no readable file) prints "capture-failed" instead of a number, and a CMD that failed
# "command-failed(RC)", so a "saw 0" check cannot pass on a capture that saw nothing because
# it never started or nothing was sent.
pcap_count() {
  local ns=$1 ifc=$2 filter=$3 pattern=$4 secs=$5 f=$LOGDIR/cap-$RANDOM.pcap
  shift 5
  on "$ns" timeout "$secs" tcpdump -i "$ifc" -n -U -w "$f" "$filter" >/dev/null 2>"$f.err" &
  local cap=$!
  sleep 0.5
  local rc=0
  "$@" >/dev/null 2>&1 || rc=$?
  wait "$cap" 2>/dev/null || true
  local lines
  if ! grep -q "listening on $ifc" "$f.err" || ! lines=$(tcpdump -r "$f" -n 2>/dev/null); then
    echo "capture-failed"
    return 0
  fi
  # traffic that did not flow proves nothing about what the capture did not see
  if [ "$rc" != 0 ]; then
    echo "command-failed($rc)"
    return 0
  fi
  printf '%s\n' "$lines" | grep -c -E "$pattern" || true
}

# capture_start NS IFACE FILTER FILE: tcpdump into FILE (packets written as they come), once
# it listens (fails after 10 s); capture_stop: ends it, and fails if FILE cannot be read.
capture_start() {
  # not through `on`: $! must be tcpdump itself, not a subshell around it
  # --immediate-mode: packets still in the ring's open block when tcpdump is stopped are lost
  ip netns exec "$P-$1" tcpdump -i "$2" -n -U --immediate-mode -w "$4" "$3" >/dev/null 2>"$4.err" &
  CAPTURE_PID=$! CAPTURE_FILE=$4
  for _ in $(seq 100); do
    grep -q "listening on $2" "$4.err" && return 0
    sleep 0.1
  done
  fail "tcpdump on $1 $2 did not start: $(cat "$4.err")"
}
capture_stop() {
  sleep 0.3
  kill "$CAPTURE_PID" 2>/dev/null || true
  wait "$CAPTURE_PID" 2>/dev/null || true
  tcpdump -n -r "$CAPTURE_FILE" >/dev/null 2>&1 || fail "the capture $CAPTURE_FILE cannot be read"
}

# counter H NAME: a counter from the overlay summary vxgate on host H logged at shutdown.
# A missing summary line, or a missing counter other than a drop_* one (the summary lists
# drop reasons only when non-zero), prints a word, not 0: arithmetic and comparisons with it
# fail, so a check cannot pass on a counter that was never logged.
summary_value() {  # LINE NAME
  local v
  [ -n "$1" ] || { echo "no-counter-line"; return 0; }
  v=$(printf '%s\n' "$1" | grep -o " $2=[0-9]*\|^$2=[0-9]*" | head -1 | cut -d= -f2)
  if [ -z "$v" ]; then
    case $2 in drop_*) v=0 ;; *) v="missing-$2" ;; esac
  fi
  echo "$v"
}
# health_of H CONTAINER: the container's health in h$H's GET /v1/containers
health_of() {
  on "h$1" curl -sS http://127.0.0.1:9180/v1/containers | /usr/bin/python3 -c '
import json, sys
print(next(c["health"] for c in json.load(sys.stdin) if c["name"] == sys.argv[1]))' "$2"
}

# stays_healthy H CONTAINER: it becomes healthy (10 s at most; the time is printed) and is
# still healthy 4 s (4 of the testbed's 1 s health intervals, fall 2) later
stays_healthy() {
  local t0
  t0=$(date +%s%N)
  until [ "$(health_of "$1" "$2")" = healthy ]; do
    (( $(date +%s%N) - t0 < 10000000000 )) || fail "$2 never became healthy: $(health_of "$1" "$2")"
    sleep 0.1
  done
  echo "$2 healthy after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  sleep 4
  [ "$(health_of "$1" "$2")" = healthy ] || fail "$2 after 4 health intervals: $(health_of "$1" "$2")"
}

counter() {
  summary_value "$(grep "overlay counters" "$LOGDIR/vxgate-h$1.log" | head -1 | sed 's/.*overlay counters: //')" "$2"
}
underlay_counter() {
  summary_value "$(grep "overlay underlay counters" "$LOGDIR/vxgate-h$1.log" | head -1 | sed 's/.*overlay underlay counters: //')" "$2"
}

# https_get HOST PATH [curl args...]: curl from the client namespace to h1's ingress
# (10.99.0.1:443) trusting h1's generated certificate.
https_get() {
  local host=$1 path=$2
  shift 2
  on cl curl -sS --max-time 30 --cacert "$STATE/h1/tls/self-signed.crt" \
    --resolve "$host:443:10.99.0.1" "$@" "https://$host$path"
}

# pebble_conf DIR IP: DIR/pebble.json for Debian's pebble (Let's Encrypt's test CA) listening
# on IP:14000 (ACME) and IP:15000 (management: /roots/0, /intermediates/0), validating on
# ports 80 and 443, with a listener certificate signed by a CA made here, DIR/ca.pem (the
# package ships none; vxgate trusts it through ingress.acme.ca_file). The certificate also
# names localhost, so a test can reach the same CA at a second directory URL.
pebble_conf() {
  local A=$1 ip=$2
  mkdir -p "$A"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=pebble-test-ca \
    -keyout "$A/ca.key" -out "$A/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$ip" \
    -keyout "$A/pebble.key" -out "$A/pebble.csr" 2>/dev/null
  openssl x509 -req -in "$A/pebble.csr" -CA "$A/ca.pem" -CAkey "$A/ca.key" -CAcreateserial -days 2 \
    -extfile <(printf 'subjectAltName=IP:%s,DNS:localhost' "$ip") -out "$A/pebble.pem" 2>/dev/null
  cat > "$A/pebble.json" <<EOF
{"pebble": {"listenAddress": "$ip:14000", "managementListenAddress": "$ip:15000",
 "certificate": "$A/pebble.pem", "privateKey": "$A/pebble.key",
 "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF
  [ -s "$A/pebble.pem" ] || fail "pebble_conf: no listener certificate"
}
