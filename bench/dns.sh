#!/usr/bin/env bash
# DNS queries/s for zone names: vxgate against knot and dnsmasq serving the same 100-service
# zone (100 services x 3 containers, A records) on loopback, in one run, measured with dnsperf
# (-c 4; 90 % existing names, 10 % names that do not exist). Prints
# `RESULT <metric> vxgate=<v> <anchor>=<v> ratio=<v>` for each anchor (median of RUNS).
# Before it counts, each server's answers are checked (a service's three addresses, a
# container's one, NXDOMAIN for a missing name); lost queries are reported beside latency.
#
# Forwarding (names outside the zone): vxgate, dnsmasq and unbound forward to the same knot
# (authoritative for fwd.test, a wildcard answering every name), measured with a cache-hit
# mix (100 names, asked again and again) and a cache-miss mix (names never asked before).
# dnsmasq gets --dns-forward-max=1000 (its default 150 refuses queries under this load).
# Prints `RESULT fwd_<mix>_<metric> vxgate=<v> <anchor>=<v> ratio=<v>`.
#
# dnsperf shares the 2 cores with the server, so at full load q/s can be the client's
# ceiling (every threaded server lands near it) and latency is queueing in 1000 outstanding
# queries. So each run also reports the server's CPU time per answered query
# (cpu_us_per_query, from /proc/PID/stat around the run) and, for the zone mix, the average
# latency at one fixed rate (--rate, default 40000 q/s) that every server must keep up with
# (fixed_rate_latency_us, fixed_rate_lost). The CPU per query is split into the server's user
# and system time and dnsperf's (read inside the run), and `<mix>_ceiling` is the q/s ratio vxgate
# would reach with its own code (user time) at 0: a target above it is out of reach of work
# in vxgate's userspace.
#
#   bench/dns.sh [--runs 3] [--seconds 10] [--no-forwarding] [--rate 40000]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
RUNS=3 SECS=10 FORWARDING=1 RATE=40000
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --no-forwarding) FORWARDING=""; shift ;;
    --rate) RATE=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
. "$here/lib.sh"
bench_need dnsperf:dnsperf knotd:knot dnsmasq:dnsmasq-base unbound:unbound dig:bind9-dnsutils
bench_vxgate
W=$(mktemp -d /tmp/vxgate-bench-dns.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
CORES=$(nproc)
VX=127.0.0.1:5391 KNOT=5392 DNSMASQ=5393 UNBOUND=5394

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

# forwarding: knot answers every name under fwd.test (a wildcard)
{
  echo '$ORIGIN fwd.test.'
  echo '$TTL 300'
  echo '@ SOA ns.fwd.test. hostmaster.fwd.test. 1 3600 600 86400 300'
  echo '@ NS ns.fwd.test.'
  echo 'ns A 127.0.0.1'
  echo '* A 192.0.2.7'
} > "$W/fwd.test.zone"
for i in $(seq 0 99); do echo "hit$i.fwd.test A"; done > "$W/fwd-hit"
# more names than any run asks (so none repeats), in an order no cache can guess
/usr/bin/python3 -c '
import random
random.seed(7)
for i in random.sample(range(10**8), 1500000): print(f"m{i}.fwd.test A")' > "$W/fwd-miss"

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
  - domain: fwd.test
    file: $W/fwd.test.zone
    storage: $W
    journal-content: none
    zonefile-sync: -1
CONF
# vxgate forwarding every name outside its zone to knot
sed 's|^zone = "example.com"|&\nupstreams = ["127.0.0.1:'"$KNOT"'"]\nrecursion_from = ["127.0.0.0/8"]|' "$W/vxgate.toml" > "$W/vxgate-fwd.toml"
grep -q '^upstreams' "$W/vxgate-fwd.toml" || { echo "vxgate-fwd.toml has no upstreams" >&2; exit 1; }
cat > "$W/unbound.conf" <<CONF
server:
    interface: 127.0.0.1@$UNBOUND
    num-threads: $CORES
    so-reuseport: yes
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    username: ""
    chroot: ""
    directory: "$W"
    pidfile: "$W/unbound.pid"
    use-syslog: no
    logfile: ""
    module-config: "iterator"
    # unbound answers test. itself (RFC 6761) unless told not to
    local-zone: "test." nodefault
    msg-cache-size: 64m
    rrset-cache-size: 128m
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$KNOT
CONF

# start CMD...: the server's PID in $PID (and in PIDS for the cleanup); no subshell, so
# both are kept
start() {
  "$@" > "$W/server.log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
}
# check NAME PORT: the answers are right, not only their rcodes
check() {
  local a
  a=$(dig +short +time=2 +tries=1 @127.0.0.1 -p "$2" svc7.example.com A | sort | tr '\n' ' ')
  [ "$a" = "10.210.0.31 10.210.0.32 10.210.0.33 " ] || { echo "$1: svc7 answered '$a'" >&2; exit 1; }
  a=$(dig +short +time=2 +tries=1 @127.0.0.1 -p "$2" svc77-2.example.com A)
  [ "$a" = "10.210.1.93" ] || { echo "$1: svc77-2 answered '$a'" >&2; exit 1; }
  a=$(dig +time=2 +tries=1 @127.0.0.1 -p "$2" missing9.example.com A | grep -c 'status: NXDOMAIN' || true)
  [ "$a" = 1 ] || { echo "$1: missing9 is not NXDOMAIN" >&2; exit 1; }
}
# check_fwd NAME PORT: a forwarded name gets knot's wildcard answer
check_fwd() {
  local a
  a=$(dig +short +time=2 +tries=1 @127.0.0.1 -p "$2" probe.fwd.test A)
  [ "$a" = "192.0.2.7" ] || { echo "$1: probe.fwd.test answered '$a' (forwarding to knot)" >&2; exit 1; }
}
wait_port() {
  for _ in $(seq 100); do
    dig +time=1 +tries=1 @127.0.0.1 -p "$1" svc1.example.com >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on port $1 did not answer: $(tail -5 "$W/server.log")" >&2
  exit 1
}
# cpu_ticks PID: the process's user and system time so far, in clock ticks; fails (the script
# with it) when the process is gone, rather than reading as 0
cpu_ticks() {
  local t
  t=$(awk '{print $14, $15}' "/proc/$1/stat" 2>/dev/null) && [[ $t =~ ^[0-9]+\ [0-9]+$ ]] \
    || { echo "cannot read the CPU time of process $1 (it has ended)" >&2; exit 1; }
  echo "$t"
}
measure() { # name port [queries-file metric-prefix]
  local file=${3:-$W/queries} prefix=${4:-} u0 s0 u1 s1 t
  t=$(cpu_ticks "$PID"); read -r u0 s0 <<< "$t"
  # dnsperf's own CPU is read inside the run, from 0.5 s in to 0.5 s before its end: when
  # queries were lost it waits for them after the run, busy in system calls
  dnsperf -s 127.0.0.1 -p "$2" -d "$file" -c 4 -l "$SECS" -q 1000 > "$W/perf.txt" 2>&1 &
  local dp=$! c0 c1 w0 w1
  sleep 0.5
  t=$(cpu_ticks "$dp"); c0=$(( ${t% *} + ${t#* } )); w0=$(date +%s.%N)
  sleep "$(awk -v s="$SECS" 'BEGIN {print s - 1}')"
  t=$(cpu_ticks "$dp"); c1=$(( ${t% *} + ${t#* } )); w1=$(date +%s.%N)
  wait "$dp" || { echo "$1: dnsperf failed: $(tail -3 "$W/perf.txt")" >&2; exit 1; }
  t=$(cpu_ticks "$PID"); read -r u1 s1 <<< "$t"
  local qps lat lost codes done_q
  codes=$(grep "Response codes:" "$W/perf.txt")
  if [ -z "$prefix" ]; then
    # every server must answer the 90 % existing names and NXDOMAIN the rest, nothing else
    [[ $codes =~ NOERROR\ [0-9]+\ \((8[5-9]|9[0-5])\.[0-9]+%\) ]] && [[ $codes == *NXDOMAIN* ]] \
      && [[ $codes != *SERVFAIL* && $codes != *REFUSED* ]] || { echo "$1 answered wrongly: $codes" >&2; exit 1; }
  else
    # forwarded: every name exists at knot
    [[ $codes =~ NOERROR\ [0-9]+\ \(100\.00%\)$ ]] || { echo "$1 $prefix answered wrongly: $codes" >&2; exit 1; }
  fi
  qps=$(awk '/Queries per second:/ {print $4}' "$W/perf.txt")
  lat=$(awk '/Average Latency \(s\):/ {print $4 * 1000000}' "$W/perf.txt")
  lost=$(awk '/Queries lost:/ {print $3}' "$W/perf.txt")
  echo "$1 ${prefix}qps $qps" >> "$W/results"
  echo "$1 ${prefix}latency_us $lat" >> "$W/results"
  echo "$1 ${prefix}lost $lost" >> "$W/results"
  # what the server spent per answer: dnsperf shares the 2 cores, so q/s alone can be the
  # client's ceiling; CPU time per query is the server's own cost
  done_q=$(awk '/Queries completed:/ {print $3}' "$W/perf.txt")
  [ "${done_q:-0}" -gt 0 ] || { echo "$1: no queries completed" >&2; exit 1; }
  awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v q="$done_q" -v hz="$(getconf CLK_TCK)" -v c=$((c1 - c0)) \
      -v win="$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')" -v qps="$qps" -v m="$1 ${prefix}" 'BEGIN {
    f = 1e6 / q
    printf "%scpu_us_per_query %g\n%scpu_user_us_per_query %g\n", m, (u + s) / hz * f, m, u / hz * f
    printf "%scpu_sys_us_per_query %g\n%sclient_us_per_query %g\n", m, s / hz * f, m, c / hz * 1e6 / (qps * win)
  }' >> "$W/results"
  if [ -z "$prefix" ]; then
    # latency at one fixed rate that every server keeps up with: the same load for all
    dnsperf -s 127.0.0.1 -p "$2" -d "$file" -c 4 -l "$SECS" -Q "$RATE" > "$W/perf.txt" 2>&1
    qps=$(awk '/Queries per second:/ {print $4}' "$W/perf.txt")
    awk -v q="$qps" -v r="$RATE" 'BEGIN {exit !(q >= r * 0.95)}' \
      || { echo "$1 did not keep up with $RATE q/s ($qps)" >&2; exit 1; }
    echo "$1 fixed_rate_latency_us $(awk '/Average Latency \(s\):/ {print $4 * 1000000}' "$W/perf.txt")" >> "$W/results"
    echo "$1 fixed_rate_lost $(awk '/Queries lost:/ {print $3}' "$W/perf.txt")" >> "$W/results"
  fi
}
# forwarding NAME PORT: the hit mix (after one pass has filled the cache), then the miss mix
forwarding() {
  check_fwd "$1" "$2"
  dnsperf -s 127.0.0.1 -p "$2" -d "$W/fwd-hit" -c 1 -n 1 > /dev/null 2>&1
  measure "$1" "$2" "$W/fwd-hit" fwd_hit_
  measure "$1" "$2" "$W/fwd-miss" fwd_miss_
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

for run in $(seq "$RUNS"); do
  start "$VXGATE" run --config "$W/vxgate.toml" --log-level warn
  wait_port 5391; check vxgate 5391; measure vxgate 5391; stop "$PID"
  start knotd -c "$W/knot.conf"
  wait_port "$KNOT"; check knot "$KNOT"; measure knot "$KNOT"; stop "$PID"
  start dnsmasq -k --no-resolv --no-hosts --addn-hosts="$W/hosts" --local=/example.com/ \
        --listen-address=127.0.0.1 --bind-interfaces --port="$DNSMASQ" --cache-size=10000 --user=root
  wait_port "$DNSMASQ"; check dnsmasq "$DNSMASQ"; measure dnsmasq "$DNSMASQ"; stop "$PID"
  if [ -n "$FORWARDING" ]; then
    # one knot upstream for all three forwarders, restarted with them so each starts cold
    start knotd -c "$W/knot.conf"; knot=$PID
    wait_port "$KNOT"
    start "$VXGATE" run --config "$W/vxgate-fwd.toml" --log-level warn
    wait_port 5391; forwarding vxgate 5391; stop "$PID"
    start dnsmasq -k --no-resolv --no-hosts --server=127.0.0.1#"$KNOT" --dns-forward-max=1000 --listen-address=127.0.0.1 \
          --bind-interfaces --port="$DNSMASQ" --cache-size=10000 --user=root
    wait_port "$DNSMASQ"; forwarding dnsmasq "$DNSMASQ"; stop "$PID"
    start unbound -d -c "$W/unbound.conf"
    wait_port "$UNBOUND"; forwarding unbound "$UNBOUND"; stop "$PID"
    stop "$knot"
  fi
  echo "run $run done" >&2
done

/usr/bin/python3 - "$W/results" <<'PY'
import statistics, sys
vals = {}
for line in open(sys.argv[1]):
    who, metric, v = line.split()
    vals.setdefault((who, metric), []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
def show(name, anchor, metric):
    if ("vxgate", metric) not in med or (anchor, metric) not in med:
        return
    v, a = med[("vxgate", metric)], med[(anchor, metric)]
    ratio = v / a if a else float("nan")
    print(f"RESULT {name} vxgate={v:g} {anchor}={a:g} ratio={ratio:.3f}")
# the ceiling: the q/s ratio if vxgate's user time were 0, the anchor's whole CPU per query
# (server + dnsperf) over vxgate's system time + dnsperf's, per run then the median
def ceiling(name, anchor, prefix):
    get = lambda who, m: vals.get((who, prefix + m), [])
    parts = [get(w, m) for w in ("vxgate", anchor) for m in ("cpu_us_per_query", "cpu_sys_us_per_query", "client_us_per_query")]
    if any(not p for p in parts):
        return
    runs = min(len(p) for p in parts)
    c = [(get(anchor, "cpu_us_per_query")[r] + get(anchor, "client_us_per_query")[r])
         / (get("vxgate", "cpu_sys_us_per_query")[r] + get("vxgate", "client_us_per_query")[r]) for r in range(runs)]
    print(f"RESULT {name}_ceiling vs {anchor} {statistics.median(c):.3f} (the q/s ratio with vxgate's user time at 0)")
per_query = ("cpu_us_per_query", "cpu_user_us_per_query", "cpu_sys_us_per_query", "client_us_per_query")
for anchor in ("knot", "dnsmasq"):
    for metric in ("qps", "latency_us", "lost") + per_query + ("fixed_rate_latency_us", "fixed_rate_lost"):
        show(f"dns_{metric}", anchor, metric)
    ceiling("dns", anchor, "")
for anchor in ("dnsmasq", "unbound"):
    for mix in ("hit", "miss"):
        for metric in ("qps", "latency_us", "lost") + per_query:
            show(f"fwd_{mix}_{metric}", anchor, f"fwd_{mix}_{metric}")
        ceiling(f"fwd_{mix}", anchor, f"fwd_{mix}_")
PY
