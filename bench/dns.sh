#!/usr/bin/env bash
# DNS queries/s for zone names: vxgate against knot and dnsmasq serving the same 100-service
# zone (100 services x 3 containers, A records) on loopback, in one run, measured with dnsperf
# (-c 4; 90 % existing names, 10 % names that do not exist). Prints
# `RESULT <metric> vxgate=<v> <anchor>=<v> ratio=<v>` for each anchor (median of RUNS).
#
#   bench/dns.sh [--runs 3] [--seconds 10]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
RUNS=3 SECS=10
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
for pair in dnsperf:dnsperf knotd:knot dnsmasq:dnsmasq-base; do
  command -v "${pair%%:*}" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pair#*:}" >/dev/null; }
done
(cd "$root" && cargo build --release --bin vxgate 2>&1 | tail -1)
W=$(mktemp -d /tmp/vxgate-bench-dns.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
CORES=$(nproc)
VX=127.0.0.1:5391 KNOT=5392 DNSMASQ=5393

# the zone, three ways
{
  echo '[dns]'
  echo "listen = [\"$VX\"]"
  echo 'zone = "example.com"'
} > "$W/vxgate.toml"
{
  echo '$ORIGIN example.com.'
  echo '$TTL 5'
  echo '@ SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 5'
  echo '@ NS ns.example.com.'
  echo 'ns A 127.0.0.1'
} > "$W/example.com.zone"
: > "$W/hosts"
: > "$W/queries"
for s in $(seq 0 99); do
  for c in 0 1 2; do
    ip="10.210.$((s / 50)).$(( (s % 50) * 3 + c + 10 ))"
    printf '[[containers]]\nname = "svc%d-%d"\nip = "%s"\nport = 80\nlabels = { app = "svc%d" }\n' "$s" "$c" "$ip" "$s" >> "$W/vxgate.toml"
    echo "svc$s A $ip" >> "$W/example.com.zone"
    echo "svc$s-$c A $ip" >> "$W/example.com.zone"
    echo "$ip svc$s.example.com svc$s-$c.example.com" >> "$W/hosts"
  done
done
# 90 % existing names (services and containers), 10 % that do not exist
for i in $(seq 0 999); do
  if (( i % 10 == 9 )); then echo "missing$i.example.com A"
  elif (( i % 2 )); then echo "svc$((i % 100)).example.com A"
  else echo "svc$((i % 100))-$((i % 3)).example.com A"; fi
done > "$W/queries"

cat > "$W/knot.conf" <<CONF
server:
    listen: 127.0.0.1@$KNOT
    udp-workers: $CORES
    tcp-workers: 1
    background-workers: 1
    rundir: $W
database:
    storage: $W
zone:
  - domain: example.com
    file: $W/example.com.zone
    storage: $W
    journal-content: none
    zonefile-sync: -1
CONF

start() {
  "$@" > "$W/server.log" 2>&1 &
  PIDS+=($!)
  echo $!
}
wait_port() {
  for _ in $(seq 100); do
    dig +time=1 +tries=1 @127.0.0.1 -p "$1" svc1.example.com >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on port $1 did not answer: $(tail -5 "$W/server.log")" >&2
  exit 1
}
measure() { # name port
  dnsperf -s 127.0.0.1 -p "$2" -d "$W/queries" -c 4 -l "$SECS" -q 1000 > "$W/perf.txt" 2>&1
  local qps lat lost codes
  codes=$(grep "Response codes:" "$W/perf.txt")
  # every server must answer the 90 % existing names and NXDOMAIN the rest, nothing else
  [[ $codes =~ NOERROR\ [0-9]+\ \((8[5-9]|9[0-5])\.[0-9]+%\) ]] && [[ $codes == *NXDOMAIN* ]] \
    && [[ $codes != *SERVFAIL* && $codes != *REFUSED* ]] || { echo "$1 answered wrongly: $codes" >&2; exit 1; }
  qps=$(awk '/Queries per second:/ {print $4}' "$W/perf.txt")
  lat=$(awk '/Average Latency \(s\):/ {print $4 * 1000000}' "$W/perf.txt")
  lost=$(awk '/Queries lost:/ {print $3}' "$W/perf.txt")
  echo "$1 qps $qps" >> "$W/results"
  echo "$1 latency_us $lat" >> "$W/results"
  echo "$1 lost $lost" >> "$W/results"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

for run in $(seq "$RUNS"); do
  pid=$(start "$root/target/release/vxgate" run --config "$W/vxgate.toml" --log-level warn)
  wait_port 5391; measure vxgate 5391; stop "$pid"
  pid=$(start knotd -c "$W/knot.conf")
  wait_port "$KNOT"; measure knot "$KNOT"; stop "$pid"
  pid=$(start dnsmasq -k --no-resolv --no-hosts --addn-hosts="$W/hosts" --local=/example.com/ \
        --listen-address=127.0.0.1 --bind-interfaces --port="$DNSMASQ" --cache-size=10000 --user=root)
  wait_port "$DNSMASQ"; measure dnsmasq "$DNSMASQ"; stop "$pid"
  echo "run $run done" >&2
done

/usr/bin/python3 - "$W/results" <<'PY'
import statistics, sys
vals = {}
for line in open(sys.argv[1]):
    who, metric, v = line.split()
    vals.setdefault((who, metric), []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
for anchor in ("knot", "dnsmasq"):
    for metric in ("qps", "latency_us", "lost"):
        v, a = med[("vxgate", metric)], med[(anchor, metric)]
        ratio = v / a if a else float("nan")
        print(f"RESULT dns_{metric} vxgate={v:g} {anchor}={a:g} ratio={ratio:.3f}")
PY
