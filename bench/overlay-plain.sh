#!/usr/bin/env bash
# Overlay throughput and latency on the plainest topology users have, vxgate against the
# Linux kernel's vxlan in one run: two hosts joined by one veth pair (no underlay bridge, no
# client namespace, nothing of the testbed), on each a Linux bridge with one container's veth
# and either vxgate's TAP (vxgate creates it and attaches it to the bridge, as a user's config
# would) or a kernel vxlan device. Every device keeps its default offloads; the overlay MTU is
# 1450 (the underlay's 1500 minus VXLAN's 50). The two take turns, RUNS times each.
# Prints `RESULT <metric> vxgate=<v> kernel=<v> ratio=<vxgate/kernel>` (medians). Beside each
# TCP rate: how busy the machine was, vxgate's own user time as a share of it, and the ceiling
# (bench_load_cpu in lib.sh): the rate if vxgate's user time were freed, so the ceiling's ratio
# bounds what work in vxgate's own code can reach.
#
# Each measurement is checked before it counts: vxgate's datapath (GET /v1/overlay) is the
# offload one with tap_tso, udp_gso and udp_gro; no ping is lost; 8 MiB of random bytes cross
# the overlay intact (SHA-256 on both ends).
#
#   bench/overlay-plain.sh [--runs 3] [--seconds 5]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
RUNS=3 SECS=5
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
. "$here/lib.sh"
bench_need iperf3:iperf3 ping:iputils-ping ip:iproute2 curl:curl /usr/bin/python3:python3
bench_vxgate
P=bpl
OUT=$(mktemp -d /tmp/vxgate-bench-plain.XXXXXX)
PIDS=() VXP=()   # every process started; the vxgate ones (whose CPU time is read)
down() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=() VXP=()
  for n in h1 h2 c1 c2; do ip netns del "$P-$n" 2>/dev/null || true; done
}
trap 'down; rm -rf "$OUT"' EXIT
head -c $((8 << 20)) /dev/urandom > "$OUT/blob"

# up MODE: the two hosts, each with a bridge, a container and MODE's overlay device
up() {
  local mode=$1 h o
  down
  for h in 1 2; do
    ip netns add "$P-h$h"; on "h$h" ip link set lo up
    ip netns add "$P-c$h"; on "c$h" ip link set lo up
  done
  ip -n "$P-h1" link add eth0 type veth peer name eth0 netns "$P-h2"
  for h in 1 2; do
    o=$((3 - h))
    ip -n "$P-h$h" addr add "10.98.0.$h/24" dev eth0
    ip -n "$P-h$h" link set eth0 up
    ip -n "$P-h$h" link add br0 mtu 1450 type bridge
    ip -n "$P-h$h" link set br0 up
    ip -n "$P-h$h" link add c0 mtu 1450 type veth peer name eth0 netns "$P-c$h"
    ip -n "$P-h$h" link set c0 master br0 up
    ip -n "$P-c$h" addr add "10.201.$h.11/16" dev eth0
    ip -n "$P-c$h" link set eth0 mtu 1450 up
    if [ "$mode" = kernel ]; then
      ip -n "$P-h$h" link add vxk type vxlan id 42 dstport 4789 local "10.98.0.$h" dev eth0
      on "h$h" bridge fdb append 00:00:00:00:00:00 dev vxk dst "10.98.0.$o"
      ip -n "$P-h$h" link set vxk mtu 1450 master br0 up
    else
      cat > "$OUT/h$h.toml" <<CONF
[node]
name = "h$h"
state_dir = "$OUT/state-h$h"
[overlay]
listen = "10.98.0.$h:4789"
peers = ["10.98.0.$o:4789"]
[[overlay.networks]]
name = "default"
vni = 42
tap = "vxg0"
mtu = 1450
bridge = "br0"
CONF
      ip netns exec "$P-h$h" "$VXGATE" run --config "$OUT/h$h.toml" > "$OUT/vx-h$h.log" 2>&1 &
      PIDS+=($!) VXP+=($!)
    fi
  done
  [ "$mode" = kernel ] && return
  for h in 1 2; do
    for _ in $(seq 100); do on "h$h" curl -sf http://127.0.0.1:9180/healthz >/dev/null 2>&1 && break; sleep 0.05; done
    on "h$h" curl -sf http://127.0.0.1:9180/v1/overlay > "$OUT/overlay.json" || die "h$h has no /v1/overlay: $(cat "$OUT/vx-h$h.log")"
    /usr/bin/python3 - "$OUT/overlay.json" <<'PY' || die "h$h datapath is not the offload one: $(cat "$OUT/overlay.json")"
import json, sys
o = json.load(open(sys.argv[1]))
assert o["datapath"] == "offload", o["datapath"]
assert all(o["offloads"].get(f) for f in ("tap_tso", "udp_gso", "udp_gro")), o["offloads"]
PY
    for _ in $(seq 100); do on "h$h" ip link show vxg0 2>/dev/null | grep -q "master br0" && break; sleep 0.05; done
    on "h$h" ip link show vxg0 | grep -q "master br0" || die "h$h: vxg0 is not in br0"
  done
}

# measure MODE: appends "metric value" lines to $OUT/MODE
measure() {
  local mode=$1
  on c1 ping -c 3 -W 2 10.201.2.11 >/dev/null || die "$mode: c2 does not answer ping"
  bench_integrity "$P-c1" "$P-c2" 10.201.2.11 "$OUT/blob" || die "$mode: the blob did not cross intact"
  ip netns exec "$P-c2" iperf3 -s -p 5201 >/dev/null 2>&1 &
  local server=$!
  PIDS+=("$server")
  sleep 0.3
  local c0 c1
  c0=$(bench_cpu "${VXP[@]}")
  on c1 iperf3 -c 10.201.2.11 -t "$SECS" -J > "$OUT/tcp1.json"
  c1=$(bench_cpu "${VXP[@]}")
  echo "$c0 $c1" > "$OUT/tcp1.cpu"
  c0=$(bench_cpu "${VXP[@]}")
  on c1 iperf3 -c 10.201.2.11 -t "$SECS" -P 4 -J > "$OUT/tcp4.json"
  c1=$(bench_cpu "${VXP[@]}")
  echo "$c0 $c1" > "$OUT/tcp4.cpu"
  on c1 ping -c 500 -i 0.002 -W 2 10.201.2.11 > "$OUT/ping.txt" || true
  grep -q "500 packets transmitted, 500 received" "$OUT/ping.txt" \
    || die "$mode: ping lost packets: $(grep 'packets transmitted' "$OUT/ping.txt")"
  /usr/bin/python3 - "$OUT" >> "$OUT/$mode" <<'PY'
import json, re, sys
d = sys.argv[1]
for name, f in (("tcp_1stream_gbps", "tcp1"), ("tcp_4stream_gbps", "tcp4")):
    print(name, round(json.load(open(f"{d}/{f}.json"))["end"]["sum_received"]["bits_per_second"] / 1e9, 3))
rtts = sorted(float(x) * 1000 for x in re.findall(r"time=([0-9.]+) ms", open(f"{d}/ping.txt").read()))
print("rtt_avg_us", round(sum(rtts) / len(rtts), 1))
PY
  bench_load_cpu tcp_1stream "$OUT/tcp1.json" "$OUT/tcp1.cpu" >> "$OUT/$mode"
  bench_load_cpu tcp_4stream "$OUT/tcp4.json" "$OUT/tcp4.cpu" >> "$OUT/$mode"
  grep -E '^(tcp_[14]stream_gbps|rtt_avg_us)' "$OUT/$mode" | tail -3 | tr '\n' ' ' | sed "s/^/$mode: /" >&2
  echo >&2
}

for run in $(seq "$RUNS"); do
  # the two take turns going first
  order="kernel vxgate"
  (( run % 2 )) || order="vxgate kernel"
  for mode in $order; do
    up "$mode"
    measure "$mode"
  done
  echo "run $run done ($order)" >&2
done
down

bench_vs_kernel "$OUT"
