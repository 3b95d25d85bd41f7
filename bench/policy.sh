#!/usr/bin/env bash
# What policy costs the overlay (issue 31): TCP throughput and ping RTT, container h1c1 (web)
# -> h2c1 (web), alternating in each run: no policy (no table, no source validation), policy
# with 10 rules (h2c1 labelled vxgate.allow_from with 10 entries, web among them: the
# traffic passes its chain; source validation on), and the same with 1,000 more containers
# in the address sets. Also the time from a registry change to the new table in place
# (vxgate_policy_last_apply_seconds after a SIGHUP that changes a label). The hosts run no
# ingress (its health checks of the 1,000 absent containers would flood ARP).
# Prints `RESULT <metric> off=.. rules10=.. sets1000=.. ratio10=<rules10/off> ratio1000=..`
# (medians of RUNS). Each measurement is checked before it counts: an 8 MiB file crosses
# intact, the table is there (or not) as the mode says, source validation is on (or off).
#
#   bench/policy.sh [--runs 3] [--seconds 5]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
RUNS=3 SECS=5
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
. "$here/lib.sh"
bench_need iperf3:iperf3 ping:iputils-ping ip:iproute2 /usr/bin/python3:python3 nft:nftables
bench_vxgate
P=bpol
OUT=$(mktemp -d /tmp/vxgate-bench.XXXXXX)
VX_PIDS=() SERVER=
cleanup() {
  for p in "${VX_PIDS[@]}" $SERVER; do kill "$p" 2>/dev/null || true; done
  "$root/testbed/down.sh" --prefix "$P" >/dev/null 2>&1 || true
}
trap cleanup EXIT
head -c $((8 << 20)) /dev/urandom > "$OUT/blob"
STATE=/run/vxgate-testbed/$P
metric() { on "h$1" curl -s http://127.0.0.1:9180/metrics | sed -n "s/^$2 //p"; }

# configure MODE: the labels (and extra containers) of MODE in both hosts' configs
configure() {
  /usr/bin/python3 - "$1" "$STATE/h1.toml" "$STATE/h2.toml" <<'PY'
import re, sys
mode, paths = sys.argv[1], sys.argv[2:]
allow = ",".join(["web"] + [f"svc{i}:{8000 + i}" for i in range(9)])
for p in paths:
    t = open(p).read()
    # no ingress: its health checks of 1,000 absent containers would flood ARP and be measured
    t = re.sub(r'\[ingress\]\n(?:[^\n]+\n)*', '', t, count=1)
    if mode != "off":
        t = re.sub(r'(name = "h2c1"\n(?:.*\n)*?)labels = \{[^}]*\}',
                   lambda m: m.group(1) + 'labels = { app = "web", "vxgate.allow_from" = "%s" }' % allow,
                   t, count=1)
    if mode == "sets1000":
        for i in range(1000):
            t += (f'\n[[containers]]\nname = "x{i}"\nip = "10.200.{100 + i // 250}.{1 + i % 250}"\n'
                  f'port = 80\nnode = "h9"\nlabels = {{ app = "web" }}\n')
    open(p, "w").write(t)
PY
}

measure() {
  local mode=$1 f=$OUT/$1
  ip netns exec "$P-h2c1" iperf3 -s -p 5201 >/dev/null 2>&1 &
  SERVER=$!
  sleep 0.3
  on h1c1 ping -c 3 -W 2 10.200.2.11 >/dev/null || die "$mode: h2c1 does not answer ping"
  bench_integrity "$P-h1c1" "$P-h2c1" 10.200.2.11 "$OUT/blob" || die "$mode: the blob did not cross intact"
  on h1c1 iperf3 -c 10.200.2.11 -t "$SECS" -J > "$OUT/tcp1.json"
  on h1c1 iperf3 -c 10.200.2.11 -t "$SECS" -P 4 -J > "$OUT/tcp4.json"
  on h1c1 ping -c 500 -i 0.002 -W 2 10.200.2.11 > "$OUT/ping.txt" || true
  grep -q "500 packets transmitted, 500 received" "$OUT/ping.txt" \
    || die "$mode: ping lost packets: $(grep 'packets transmitted' "$OUT/ping.txt")"
  /usr/bin/python3 - "$OUT" >> "$f" <<'PY'
import json, re, sys
d = sys.argv[1]
for n in ("tcp1", "tcp4"):
    bps = json.load(open(f"{d}/{n}.json"))["end"]["sum_received"]["bits_per_second"] / 1e9
    print({"tcp1": "tcp_1stream_gbps", "tcp4": "tcp_4stream_gbps"}[n], round(bps, 3))
rtts = sorted(float(x) * 1000 for x in re.findall(r"time=([0-9.]+) ms", open(f"{d}/ping.txt").read()))
print("rtt_avg_us", round(sum(rtts) / len(rtts), 1))
PY
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=
}

run() {
  local mode=$1
  "$root/testbed/up.sh" --prefix "$P" --hosts 2 --containers 1 >/dev/null
  configure "$mode"
  for h in 1 2; do
    ip netns exec "$P-h$h" "$VXGATE" run --config "$STATE/h$h.toml" > "$OUT/$mode-h$h.log" 2>&1 &
    VX_PIDS+=($!)
  done
  for h in 1 2; do
    for _ in $(seq 200); do on "h$h" curl -sf http://127.0.0.1:9180/healthz >/dev/null 2>&1 && break; sleep 0.05; done
  done
  sleep 1
  # the mode is what is measured
  if [ "$mode" = off ]; then
    on h2 nft list table inet vxgate >/dev/null 2>&1 && die "off: h2 has a policy table"
    grep -q "source validation on=true" "$OUT/$mode-h2.log" && die "off: source validation is on"
  else
    on h2 nft list table inet vxgate > "$OUT/table.txt" || die "$mode: h2 has no policy table"
    grep -q "jump p0" "$OUT/table.txt" || die "$mode: h2's table protects nothing"
    grep -q "source validation on=true" "$OUT/$mode-h2.log" || die "$mode: source validation is off"
    local n
    n=$(grep -o '10\.200\.[0-9]*\.[0-9]*' "$OUT/table.txt" | sort -u | wc -l)
    if [ "$mode" = sets1000 ]; then
      [ "$n" -ge 1000 ] || die "sets1000: only $n addresses in h2's table"
    fi
  fi
  measure "$mode"
  if [ "$mode" != off ]; then
    # a registry change to its table in place (h2's own measure of it)
    local a0
    a0=$(metric 2 vxgate_policy_applied_total)
    sed -i 's/"vxgate.allow_from" = "web,/"vxgate.allow_from" = "web:5201,/' "$STATE/h2.toml"
    kill -HUP "${VX_PIDS[1]}"
    for _ in $(seq 100); do [ "$(metric 2 vxgate_policy_applied_total)" -gt "$a0" ] && break; sleep 0.05; done
    [ "$(metric 2 vxgate_policy_applied_total)" -gt "$a0" ] || die "$mode: the change was not applied"
    echo "apply_ms $(/usr/bin/python3 -c "print(round($(metric 2 vxgate_policy_last_apply_seconds) * 1000, 1))")" >> "$OUT/$mode"
  fi
  for p in "${VX_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  VX_PIDS=()
  "$root/testbed/down.sh" --prefix "$P" >/dev/null 2>&1 || true
}

for r in $(seq "$RUNS"); do
  for mode in off rules10 sets1000; do
    echo "run $r: $mode" >&2
    run "$mode"
  done
done
/usr/bin/python3 - "$OUT" "$here" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from results import load
out = sys.argv[1]
off, r10, r1k = (load(out, m) for m in ("off", "rules10", "sets1000"))
for k in ("tcp_1stream_gbps", "tcp_4stream_gbps", "rtt_avg_us"):
    print(f"RESULT {k} off={off[k]} rules10={r10[k]} sets1000={r1k[k]} "
          f"ratio10={r10[k] / off[k]:.3f} ratio1000={r1k[k] / off[k]:.3f}")
print(f"RESULT apply_ms rules10={r10['apply_ms']} sets1000={r1k['apply_ms']}")
PY
