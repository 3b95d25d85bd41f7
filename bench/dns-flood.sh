#!/usr/bin/env bash
# DNS under a spoofed-source flood (issue 35 item 4), with dns.rate_limit on: legitimate
# clients' answers with and without the flood, in one run on the same vxgate.
#
# Two namespaces joined by a veth: the server (10.97.0.1, vxgate's DNS with a 300-container
# zone, rate_limit = 100, recursion_from = 10.97.0.0/24) and the clients. The legitimate
# ones are dnsperf at a fixed rate from 10.97.0.10 (inside recursion_from, as containers
# are: never limited) and from 10.96.0.10 (outside, below the limit: limited like the flood,
# so its bucket sits in the same table). The flood comes from a raw socket in the clients'
# namespace: zone queries from spoofed sources, every other one from one victim network (a
# reflection attempt, which the limiter holds back) and the rest spread over 10.0.0.0/8 (a
# new network each, so the limiter's table churns and fills), paced at --flood pps; the answers go back into the clients'
# namespace and die there (no forwarding). Nothing leaves the namespaces.
#
# Before it counts: each legitimate client's answers are checked (dig), the flood's queries
# must have reached vxgate (vxgate_dns_queries_total grows by at least half of what was
# sent) and been limited (vxgate_dns_rate_limited_total grows): a flood that never arrived
# proves nothing. Prints, medians of --runs:
#
#   RESULT dns_flood_inside_qps quiet=<> flood=<> ratio=<flood/quiet>
#   RESULT dns_flood_outside_qps quiet=<> flood=<> ratio=<>
#   RESULT dns_flood_sent_pps <v>   RESULT dns_flood_limited_per_s <v>
#   RESULT dns_flood_table_networks <v>   client networks the limiter tracked at the end
#
#   bench/dns-flood.sh [--runs 3] [--seconds 10] [--rate 2000] [--outside-rate 40] [--flood 50000]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
RUNS=3 SECS=10 RATE=2000 ORATE=40 FLOOD=50000
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --outside-rate) ORATE=$2; shift 2 ;;
    --flood) FLOOD=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
. "$here/lib.sh"
bench_need dnsperf:dnsperf dig:bind9-dnsutils ip:iproute2 /usr/bin/python3:python3 curl:curl
bench_vxgate
S=dfs$$ C=dfc$$
W=$(mktemp -d /tmp/vxgate-bench-dnsflood.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$S" 2>/dev/null || true
  ip netns del "$C" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
die() { echo "FAIL: $*" >&2; exit 1; }

ip netns add "$S"
ip netns add "$C"
ip link add dfa$$ netns "$S" type veth peer name dfb$$ netns "$C"
ip -n "$S" addr add 10.97.0.1/24 dev dfa$$
ip -n "$C" addr add 10.97.0.2/24 dev dfb$$
ip -n "$C" addr add 10.97.0.10/24 dev dfb$$
ip -n "$C" addr add 10.96.0.10/24 dev dfb$$
for n in "$S" "$C"; do ip -n "$n" link set lo up; done
ip -n "$S" link set dfa$$ up
ip -n "$C" link set dfb$$ up
# answers to the outside client and to the spoofed sources go back to the clients' side
ip -n "$S" route add 10.96.0.0/24 via 10.97.0.2
ip -n "$S" route add 10.0.0.0/8 via 10.97.0.2
ip netns exec "$S" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
ip netns exec "$S" sysctl -qw "net.ipv4.conf.dfa$$.rp_filter=0"
ip netns exec "$C" sysctl -qw net.ipv4.ip_forward=0

{
  echo '[dns]'
  echo 'listen = ["10.97.0.1:53"]'
  echo 'zone = "example.com"'
  echo 'recursion_from = ["10.97.0.0/24"]'
  echo 'rate_limit = 100'
} > "$W/vxgate.toml"
: > "$W/queries"
for s in $(seq 0 99); do
  for c in 0 1 2; do
    printf '[[containers]]\nname = "svc%d-%d"\nip = "10.210.%d.%d"\nport = 80\nlabels = { app = "svc%d" }\n' \
      "$s" "$c" "$((s / 50))" "$(( (s % 50) * 3 + c + 10 ))" "$s" >> "$W/vxgate.toml"
  done
  echo "svc$s.example.com A" >> "$W/queries"
done
ip netns exec "$S" "$VXGATE" run --config "$W/vxgate.toml" --log-level warn > "$W/vxgate.log" 2>&1 &
VXPID=$!
PIDS+=("$VXPID")
for _ in $(seq 100); do
  ip netns exec "$C" dig +short +time=1 +tries=1 -b 10.97.0.10 @10.97.0.1 svc1.example.com 2>/dev/null | grep -q . && break
  kill -0 "$VXPID" 2>/dev/null || die "vxgate exited: $(tail -3 "$W/vxgate.log")"
  sleep 0.1
done
for src in 10.97.0.10 10.96.0.10; do
  got=$(ip netns exec "$C" dig +short +time=2 +tries=1 -b "$src" @10.97.0.1 svc7.example.com | sort | tr '\n' ' ')
  [ "$got" = "10.210.0.31 10.210.0.32 10.210.0.33 " ] || die "from $src: svc7 answered '$got'"
done

# metric NAME: vxgate's counter (a missing one fails)
metric() {
  local v
  v=$(ip netns exec "$S" curl -sf http://127.0.0.1:9180/metrics | awk -v n="$1" '$1 == n { s += $2; f = 1 } END { if (f) print s }')
  [ -n "$v" ] || die "vxgate has no metric $1"
  echo "$v"
}
limited() { ip netns exec "$S" curl -sf http://127.0.0.1:9180/metrics | awk '$1 ~ /^vxgate_dns_rate_limited_total/ { s += $2; f = 1 } END { if (f) print s; else print "missing" }'; }

# the flood: raw IPv4/UDP queries for zone names from spoofed sources, paced, for SECONDS;
# prints how many it sent
cat > "$W/flood.py" <<'PY'
import random, socket, struct, sys, time
dst, pps, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
def query(i):
    name = b"".join(bytes([len(p)]) + p for p in (b"svc%d" % (i % 100), b"example", b"com")) + b"\0"
    return struct.pack("!HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
pkts = []
rnd = random.Random(7)
for i in range(65536):
    # every other query from one victim network (a reflection attempt: limited), the rest
    # from a new network each (the limiter's table churns and fills)
    if i % 2:
        src = bytes([10, 1, 1, rnd.randrange(1, 255)])
    else:
        src = bytes([10, (i >> 8) & 255, i & 255, rnd.randrange(1, 255)])
    if src[1] in (96, 97):
        continue
    q = query(i)
    udp = struct.pack("!HHHH", 1024 + i % 60000, 53, 8 + len(q), 0) + q  # checksum 0: none
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, socket.inet_aton(dst))
    pkts.append(ip + udp)
rnd.shuffle(pkts)
sent, t0, batch = 0, time.time(), max(1, pps // 1000)
while True:
    now = time.time() - t0
    if now >= secs:
        break
    due = int(now * pps)
    while sent < due:
        for _ in range(min(batch, due - sent)):
            try:
                s.sendto(pkts[sent % len(pkts)], (dst, 0))
            except OSError:
                pass
            sent += 1
    time.sleep(0.0005)
print(sent)
PY

# perf SRC RATE: dnsperf from SRC at RATE q/s for SECS; prints the answers per second
perf() {
  ip netns exec "$C" dnsperf -s 10.97.0.1 -a "$1" -d "$W/queries" -c 1 -Q "$2" -l "$SECS" -t 2 > "$W/perf-$1.txt" 2>&1 \
    || die "dnsperf from $1 failed: $(tail -3 "$W/perf-$1.txt")"
  awk '/Queries completed:/ { print $3 }' "$W/perf-$1.txt" | awk -v s="$SECS" '{ printf "%.1f\n", $1 / s }'
}

# measure MODE: both legitimate clients at once (with the flood when MODE is flood)
measure() {
  local mode=$1 fp="" q0 l0 q1 l1 sent
  q0=$(metric vxgate_dns_queries_total); l0=$(limited)
  if [ "$mode" = flood ]; then
    ip netns exec "$C" /usr/bin/python3 "$W/flood.py" 10.97.0.1 "$FLOOD" "$((SECS + 1))" > "$W/flood.out" &
    fp=$!
    sleep 0.5
  fi
  perf 10.97.0.10 "$RATE" > "$W/in.txt" &
  local ip=$!
  perf 10.96.0.10 "$ORATE" > "$W/out.txt"
  wait "$ip"
  if [ -n "$fp" ]; then
    wait "$fp" || die "the flood failed"
    sent=$(cat "$W/flood.out")
    q1=$(metric vxgate_dns_queries_total); l1=$(limited)
    [ "$l1" != missing ] || die "vxgate has no vxgate_dns_rate_limited_total"
    [ $((q1 - q0)) -ge $((sent / 2)) ] || die "the flood sent $sent queries, vxgate counted $((q1 - q0))"
    [ $((l1 - l0)) -gt 0 ] || die "the flood was not limited ($l0 -> $l1)"
    echo "sent_pps $(( sent / (SECS + 1) ))" >> "$W/$mode"
    echo "table_networks $(metric vxgate_dns_rate_limit_networks)" >> "$W/$mode"
    echo "limited_per_s $(( (l1 - l0) / (SECS + 1) ))" >> "$W/$mode"
  fi
  echo "inside_qps $(cat "$W/in.txt")" >> "$W/$mode"
  echo "outside_qps $(cat "$W/out.txt")" >> "$W/$mode"
}

for run in $(seq "$RUNS"); do
  measure quiet
  measure flood
  echo "run $run: $(tr '\n' ' ' < "$W/quiet" | tail -c 80) | $(tail -4 "$W/flood" | tr '\n' ' ')" >&2
done
kill -0 "$VXPID" 2>/dev/null || die "vxgate died under the flood: $(tail -3 "$W/vxgate.log")"
/usr/bin/python3 - "$W" "$here" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from results import load
q, f = load(sys.argv[1], "quiet"), load(sys.argv[1], "flood")
for m in ("inside_qps", "outside_qps"):
    print(f"RESULT dns_flood_{m} quiet={q[m]:g} flood={f[m]:g} ratio={f[m] / q[m]:.3f}")
print(f"RESULT dns_flood_sent_pps {f['sent_pps']:g}")
print(f"RESULT dns_flood_limited_per_s {f['limited_per_s']:g}")
print(f"RESULT dns_flood_table_networks {f['table_networks']:g} (tracked when the flood ended)")
PY
