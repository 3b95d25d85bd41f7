#!/usr/bin/env bash
# A MAC flood from one container must not slow the other flows. On the two-host testbed,
# container h1c2 sends broadcast frames at a fixed rate while h1c1 -> h2c1 runs iperf3 (TCP,
# 1 stream). Host 2's vxgate learns every source MAC it receives, so with random source MACs
# its FDB fills (16,384 entries) within a second and every further frame is a newcomer
# refused by a full table. Three phases per run, each on a fresh testbed:
#   none    no flood (the flow alone)
#   fixed   the flood, every frame from one source MAC (the same packets and bytes)
#   random  the flood, a new random source MAC per frame
# Prints `RESULT <phase>_gbps=<median>` and `RESULT random_vs_fixed=<ratio>`: what the
# newcomers themselves cost the other flow, the frame rate being the same.
#
# Each phase is checked before it counts: the flooder sent at least 90 % of its target; a
# counter in container h2c2 sees the flood arrive (in the fixed phase at least 90 % of it,
# the control; in the random phase the share is printed: frames a full table drops are a
# result); in the random phase host 2's FDB is full (vxgate_overlay_fdb_entries = 16384) and
# refused newcomers (vxgate_overlay_fdb_full_total > 0), in the others it refused none.
# Each flood gets a fresh testbed, and the two take turns going first.
# --before skips the fdb_full check, for builds older than that counter. --kernel measures
# the same with the kernel's vxlan on both hosts instead of vxgate (the anchor: the Linux
# bridges on both hosts learn the random MACs too); its FDB checks are that the random
# phase left at least 16384 entries in host 2's vxlan FDB (`bridge fdb show dev vxk`).
#
#   bench/mac-flood.sh [--runs 3] [--seconds 5] [--pps 20000] [--before] [--kernel]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
RUNS=3 SECS=5 PPS=20000 BEFORE="" KERNEL=""
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --pps) PPS=$2; shift 2 ;;
    --before) BEFORE=1; shift ;;
    --kernel) KERNEL=1; BEFORE=1; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
. "$here/lib.sh"
bench_need iperf3:iperf3 ip:iproute2 curl:curl /usr/bin/python3:python3
bench_vxgate
P=bmf
OUT=$(mktemp -d /tmp/vxgate-macflood.XXXXXX)
VX_PIDS=() SERVER=
cleanup() {
  for p in "${VX_PIDS[@]}" $SERVER; do kill "$p" 2>/dev/null || true; done
  "$root/testbed/down.sh" --prefix "$P" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# metric HOST NAME: the sum of NAME's samples on HOST's /metrics (network "default");
# a missing metric is a failure
metric() {
  on "$1" curl -sf http://127.0.0.1:9180/metrics > "$OUT/metrics.txt" || die "h$1: no /metrics"
  /usr/bin/python3 - "$OUT/metrics.txt" "$2" <<'PY' || die "metric $2 missing on $1"
import sys
name, total, seen = sys.argv[2], 0, False
for line in open(sys.argv[1]):
    if line.startswith("#"):
        continue
    key, _, value = line.rpartition(" ")
    metric, _, labels = key.partition("{")
    if metric == name.split("{")[0] and 'network="default"' in labels and all(
            part in labels for part in name.partition("{")[2].rstrip("}").split(",") if part):
        total += float(value); seen = True
if not seen:
    sys.exit(1)
print(int(total))
PY
}

# the flooder: broadcast frames (ethertype 0x88b5, local experimental) out of h1c2's eth0
cat > "$OUT/flood.py" <<'PY'
import os, socket, struct, sys, time
mode, pps, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
fixed = bytes([2, 0x66, 0, 0, 0, 1])
payload = bytes(46)
sent, start, burst = 0, time.monotonic(), max(1, pps // 1000)
while True:
    now = time.monotonic() - start
    if now >= secs:
        break
    due = int(now * pps)
    while sent < due:
        for _ in range(burst):
            src = fixed if mode == "fixed" else bytes([2]) + os.urandom(5)
            s.send(b"\xff" * 6 + src + b"\x88\xb5" + payload)
            sent += 1
    time.sleep(0.001)
print(sent)
PY

# the counter: frames of ethertype 0x88b5 arriving at h2c2's eth0, until it is stopped
cat > "$OUT/count.py" <<'PY'
import signal, socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind(("eth0", 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
n = 0
def done(*_):
    print(n, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
print("ready", flush=True)
while True:
    s.recv(64)
    n += 1
PY

# phase NAME: iperf3 h1c1 -> h2c1 for SECS, with the flood NAME (none, fixed, random)
phase() {
  local name=$1 full0=0 sent=0 flooder= counter= got=0
  [ -n "$BEFORE" ] || full0=$(metric h2 vxgate_overlay_fdb_full_total)
  if [ "$name" != none ]; then
    ip netns exec "$P-h2c2" /usr/bin/python3 "$OUT/count.py" > "$OUT/got.txt" &
    counter=$!
    for _ in $(seq 50); do grep -q ready "$OUT/got.txt" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$OUT/got.txt" || die "$name: the counter in h2c2 did not start"
    ip netns exec "$P-h1c2" /usr/bin/python3 "$OUT/flood.py" "$name" "$PPS" "$((SECS + 1))" > "$OUT/sent.txt" &
    flooder=$!
    sleep 0.5 # the table fills before the flow is measured
  fi
  on h1c1 iperf3 -c 10.200.2.11 -t "$SECS" -J > "$OUT/tcp.json" || die "$name: iperf3 failed"
  if [ -n "$flooder" ]; then
    wait "$flooder" || die "$name: the flooder failed"
    sent=$(cat "$OUT/sent.txt")
    [ "$sent" -ge $((PPS * (SECS + 1) * 9 / 10)) ] || die "$name: the flooder sent only $sent frames"
    sleep 0.5
    kill "$counter"
    wait "$counter" || true
    got=$(tail -1 "$OUT/got.txt")
    [[ $got =~ ^[0-9]+$ ]] || die "$name: the counter gave no count: $(cat "$OUT/got.txt")"
  fi
  local gbps full=0 entries
  gbps=$(/usr/bin/python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9, 3))' "$OUT/tcp.json")
  [ -n "$BEFORE" ] || full=$(( $(metric h2 vxgate_overlay_fdb_full_total) - full0 ))
  if [ -n "$KERNEL" ]; then
    entries=$(on h2 bridge fdb show dev vxk | wc -l)
  else
    entries=$(metric h2 vxgate_overlay_fdb_entries)
  fi
  case $name in
    fixed) [ "$got" -ge $((sent * 9 / 10)) ] || die "fixed: h2c2 saw $got of $sent flood frames" ;;
    random) [ "$entries" -ge 16384 ] || die "random: host 2's FDB did not fill ($entries entries)"
            [ -n "$BEFORE" ] || [ "$full" -gt 0 ] || die "random: host 2 refused no newcomer" ;;
  esac
  [ "$name" = random ] || [ "$full" = 0 ] || die "$name: host 2 refused $full newcomers"
  echo "$name $gbps" >> "$OUT/results"
  [ "$name" = none ] || echo "${name}_delivered $(/usr/bin/python3 -c "print($got / $sent)")" >> "$OUT/results"
  echo "  $name: $gbps Gbit/s (flood sent $sent, h2c2 saw $got, fdb $entries entries, refused +$full)" >&2
}

# fresh NAME: a new testbed (vxgate on both hosts unless --kernel) and the iperf3 server
fresh() {
  for p in "${VX_PIDS[@]}" $SERVER; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  VX_PIDS=() SERVER=
  if [ -n "$KERNEL" ]; then
    "$root/testbed/up.sh" --prefix "$P" --hosts 2 --containers 2 --kernel-vxlan all >/dev/null
  else
    "$root/testbed/up.sh" --prefix "$P" --hosts 2 --containers 2 >/dev/null
    for h in 1 2; do
      ip netns exec "$P-h$h" "$VXGATE" run --config "/run/vxgate-testbed/$P/h$h.toml" > "$OUT/h$h.log" 2>&1 &
      VX_PIDS+=($!)
    done
    for h in 1 2; do
      for _ in $(seq 100); do on "h$h" curl -sf http://127.0.0.1:9180/healthz >/dev/null 2>&1 && break; sleep 0.05; done
    done
  fi
  ip netns exec "$P-h2c1" iperf3 -s -p 5201 >/dev/null 2>&1 &
  SERVER=$!
  sleep 0.3
  on h1c1 ping -c 3 -W 2 10.200.2.11 >/dev/null || die "h2c1 does not answer ping"
}

for run in $(seq "$RUNS"); do
  # each flood on a testbed of its own (the random one leaves the FDBs full), the two taking
  # turns going first, so neither always runs on a warmer or a busier machine
  order="fixed random"
  (( run % 2 )) || order="random fixed"
  fresh
  phase none
  for name in $order; do
    fresh
    phase "$name"
  done
  echo "run $run done ($order)" >&2
done

/usr/bin/python3 - "$OUT/results" <<'PY'
import statistics, sys
m = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    m.setdefault(k, []).append(float(v))
med = {k: statistics.median(v) for k, v in m.items()}
for k in ("none", "fixed", "random"):
    print(f"RESULT {k}_gbps={med[k]:g} runs={m[k]}")
for k in ("fixed", "random"):
    print(f"RESULT {k}_flood_delivered={med[k + '_delivered']:.3f}")
print(f"RESULT random_vs_fixed={med['random'] / med['fixed']:.3f}")
PY
rm -rf "$OUT"
