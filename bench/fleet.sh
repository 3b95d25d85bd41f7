#!/usr/bin/env bash
# A fleet's cost as it grows (issue 35 item 3): N vxgate hosts in namespaces (overlay on, DNS,
# no ingress), CONTAINERS config containers each, all on one etcd member. For each N prints:
#
#   RESULT fleet_N<n>_change_to_dns_ms p50=<> p99=<> max=<>   a container added through one
#       host's API until every other host's DNS answers it (CHANGES changes x N-1 hosts)
#   RESULT fleet_N<n>_api_reply_ms   h1's API answering the POST (the change is in its registry)
#   RESULT fleet_N<n>_change_to_etcd_ms, fleet_N<n>_etcd_to_dns_ms   the same split where
#       the record becomes readable in etcd (its JSON gateway, polled every ms on one connection): h1's put
#       and etcd's commit (its disk), then the watch and every other host's processing
#   RESULT fleet_N<n>_cpu_ms_per_change_per_host <v>   every vxgate's CPU time over the
#       changes, per change and host (on a real fleet each host has its own cores; here the
#       N share this machine's, which is what stretches change_to_dns as N grows)
#   RESULT fleet_N<n>_join_ms <v>        a host (re)started until its registry holds every
#       container of the fleet
#   RESULT fleet_N<n>_rss_mb p50=<> max=<>   each idle vxgate's resident memory
#   RESULT fleet_N<n>_etcd_rpcs_per_s_at_rest <v>   gRPC messages etcd received/s over 10 idle s
#   RESULT fleet_N<n>_etcd_rpcs_per_change <v>       per added container (CHANGES of them),
#       less the keep-alives at the rate at rest meanwhile
#   RESULT fleet_N<n>_etcd_fsyncs_over_500ms_during_changes <v>   etcd's own disk stalls (a
#       change reaches no host before etcd has written it; a multi-second outlier in
#       change_to_dns with one here is the disk, not vxgate)
#   RESULT fleet_N<n>_flood_copies <v>   datagrams one host sends for one broadcast frame
#
# Everything stays inside namespaces it makes (prefix fl<PID>) and is removed at the end.
#
#   bench/fleet.sh [--hosts "5 20 50"] [--containers 20] [--changes 10]
#   FLEET_PERF=/tmp/fleet.perf bench/fleet.sh ...   also profiles host 2's vxgate over the
#       changes (perf, DWARF call graphs: FILE.N<n>; perf report -i FILE.N50 --children)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
SIZES="5 20 50" CONTAINERS=20 CHANGES=10
while [ $# -gt 0 ]; do
  case $1 in
    --hosts) SIZES=$2; shift 2 ;;
    --containers) CONTAINERS=$2; shift 2 ;;
    --changes) CHANGES=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
. "$here/lib.sh"
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
bench_need etcd:etcd-server etcdctl:etcd-client curl:curl
bench_vxgate
P=fl$$
WORK=$(mktemp -d /tmp/vxgate-fleet.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for ns in $(ip netns list | awk -v p="$P-" 'index($1, p) == 1 {print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# the underlay: namespace ul with bridge ulbr; etcd in its own namespace at 10.99.0.250
ip netns add "$P-ul"
on ul ip link add ulbr type bridge
on ul ip addr add 10.99.0.254/24 dev ulbr
on ul ip link set ulbr up
on ul ip link set lo up
attach() {  # NAME ADDR: a namespace on the underlay
  ip netns add "$P-$1"
  ip link add "$P-$1" type veth peer name eth0 netns "$P-$1"
  ip link set "$P-$1" netns "$P-ul"
  on ul ip link set "$P-$1" master ulbr up
  on "$1" ip link set lo up
  on "$1" ip addr add "$2/24" dev eth0
  on "$1" ip link set eth0 up
}
# etcd's WAL fsyncs that took more than 0.5 s so far (its own histogram; a missing one fails)
etcd_slow_fsyncs() {
  on etcd curl -sf http://10.99.0.250:2381/metrics | awk '
    $1 == "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.512\"}" { fast = $2; f++ }
    $1 == "etcd_disk_wal_fsync_duration_seconds_count" { all = $2; f++ }
    END { if (f == 2) print all - fast; else exit 1 }' || die "etcd has no WAL fsync histogram"
}
attach etcd 10.99.0.250
ip netns exec "$P-etcd" etcd --name e1 --data-dir "$WORK/etcd" \
  --listen-client-urls http://10.99.0.250:2379 --advertise-client-urls http://10.99.0.250:2379 \
  --listen-peer-urls http://10.99.0.250:2380 --initial-advertise-peer-urls http://10.99.0.250:2380 \
  --initial-cluster e1=http://10.99.0.250:2380 --listen-metrics-urls http://10.99.0.250:2381 \
  >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do on etcd curl -sf http://10.99.0.250:2379/health >/dev/null && break; sleep 0.1; done
on etcd curl -sf http://10.99.0.250:2379/health >/dev/null || die "etcd did not start: $(tail -3 "$WORK/etcd.log")"

MAX=$(printf '%s\n' $SIZES | sort -n | tail -1)
[ "$MAX" -le 200 ] || die "at most 200 hosts (10.99.0.0/24)"
host_up() {  # H: namespace hH on the underlay, with br0 and the TAP, and its config
  local h=$1 i
  attach "h$h" "10.99.0.$h"
  on "h$h" ip link add br0 type bridge
  on "h$h" ip link set br0 up
  on "h$h" ip tuntap add dev vxg0 mode tap multi_queue
  on "h$h" ip link set vxg0 master br0 up
  {
    printf '[node]\nname = "h%s"\nstate_dir = "%s/h%s"\n\n' "$h" "$WORK" "$h"
    printf '[registry]\nbackend = "etcd"\nendpoints = ["http://10.99.0.250:2379"]\nlease_ttl_s = 5\n\n'
    printf '[overlay]\nlisten = "10.99.0.%s:4789"\n\n[[overlay.networks]]\nname = "default"\nvni = 42\ntap = "vxg0"\nmtu = 1450\n\n' "$h"
    printf '[dns]\nlisten = ["10.99.0.%s:53"]\nzone = "example.com"\n\n' "$h"
    for i in $(seq "$CONTAINERS"); do
      printf '[[containers]]\nname = "h%sc%s"\nip = "10.201.%s.%s"\nport = 80\nlabels = { app = "s%s" }\n\n' \
        "$h" "$i" "$h" "$i" "$i"
    done
  } > "$WORK/h$h.toml"
}
start_host() {  # H
  ip netns exec "$P-h$1" "$VXGATE" run --config "$WORK/h$1.toml" >"$WORK/h$1.log" 2>&1 &
  eval "VXPID_$1=$!"
  PIDS+=($!)
}
count_containers() {  # H: containers in host H's registry
  on "h$1" curl -s --max-time 2 http://127.0.0.1:9180/v1/containers | grep -c '"name"' || true
}
etcd_rpcs() {  # gRPC messages etcd received so far (a lease keep-alive in its stream counts)
  local v
  v=$(on etcd curl -s http://10.99.0.250:2381/metrics | awk '/^grpc_server_msg_received_total/ { s += $2; n++ } END { if (n) print s }')
  [ -n "$v" ] || die "no grpc_server_msg_received_total in etcd's /metrics"
  echo "$v"
}
alive() {  # every vxgate of the fleet still runs (a dead one would read as no memory, no CPU)
  local h p
  for h in $(seq "$N"); do
    p=VXPID_$h
    awk '$3 != "Z" { ok = 1 } END { exit !ok }' "/proc/${!p}/stat" 2>/dev/null \
      || die "N=$N: h$h's vxgate died: $(tail -3 "$WORK/h$h.log")"
  done
}
pct() {  # P: the P-th percentile of the numbers on stdin
  sort -n | awk -v p="$1" '{ a[NR] = $1 } END { i = int((NR - 1) * p / 100 + 0.5) + 1; print a[i] }'
}

made=0
for N in $SIZES; do
  for h in $(seq $((made + 1)) "$N"); do host_up "$h"; start_host "$h"; done
  made=$N
  total=$((N * CONTAINERS))
  # the whole fleet in every registry (bounded: 120 s)
  t0=$(date +%s)
  for h in $(seq "$N"); do
    until [ "$(count_containers "$h")" -ge "$total" ]; do
      [ $(( $(date +%s) - t0 )) -lt 120 ] || die "N=$N: h$h holds $(count_containers "$h") of $total containers after 120 s"
      sleep 0.2
    done
  done
  sleep 3
  # at rest: etcd's requests over 10 s; memory
  r0=$(etcd_rpcs); sleep 10; r1=$(etcd_rpcs)
  rest=$(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.2f", (b - a) / 10 }')
  echo "RESULT fleet_N${N}_etcd_rpcs_per_s_at_rest $rest"
  alive
  rss=$(for h in $(seq "$N"); do p=VXPID_$h; awk '/^VmRSS/ { printf "%.1f\n", $2 / 1024 }' "/proc/${!p}/status"; done)
  echo "RESULT fleet_N${N}_rss_mb p50=$(echo "$rss" | pct 50) max=$(echo "$rss" | pct 100)"
  # changes: a container added on h1 until every other host answers it
  cpu() {  # every vxgate's CPU time so far, in clock ticks
    for h in $(seq "$N"); do p=VXPID_$h; awk '{ print $14 + $15 }' "/proc/${!p}/stat"; done | awk '{ s += $1 } END { print s }'
  }
  alive
  if [ -n "${FLEET_PERF:-}" ]; then  # a profile of host 2's vxgate over the changes
    perf record -p "$VXPID_2" --call-graph dwarf,32768 -F 999 -o "$FLEET_PERF.N$N" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 1
  fi
  k0=$(cpu)
  r0=$(etcd_rpcs)
  s0=$(etcd_slow_fsyncs)
  c0=$(date +%s%N)
  lat=$(on ul /usr/bin/python3 - "$N" "$CHANGES" "$P" "$WORK/commits" "$WORK/after" "$WORK/posts" <<'PY'
import base64, ctypes, http.client, json, os, socket, struct, sys, time
n, changes, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
# h1's admin API (127.0.0.1 in h1's namespace) on one kept-alive connection made there:
# a socket belongs to the namespace it was made in, so the probe enters h1's for the connect
# and comes back. No process is started inside the measured window (an `ip netns exec curl`
# per change took 10-70 ms itself on a loaded machine, growing with the namespaces' mounts).
libc = ctypes.CDLL(None, use_errno=True)
def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)
home = os.open("/proc/self/ns/net", os.O_RDONLY)
setns(f"/run/netns/{prefix}-h1")
api = http.client.HTTPConnection("127.0.0.1", 9180, timeout=10)
api.connect()
if libc.setns(home, 0x40000000) != 0:
    raise OSError(ctypes.get_errno(), "setns back")
os.close(home)
def query(qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.setblocking(False)
def answered(name, qid, t0, every):
    """Asks every other host for `name` every `every` s until each answers (30 s at most):
    {host: ms after t0 of its first answer, or None}."""
    got = {h: None for h in range(2, n + 1)}
    deadline = t0 + 30
    while any(v is None for v in got.values()) and time.monotonic() < deadline:
        for h, v in got.items():
            if v is None:
                try:
                    s.sendto(query((qid + h) & 0xFFFF, name), (f"10.99.0.{h}", 53))
                except BlockingIOError:
                    pass  # the socket's buffer is full: asked again next round
        end = time.monotonic() + every
        while time.monotonic() < end:
            try:
                d, (ip, _) = s.recvfrom(512)
            except BlockingIOError:
                time.sleep(0.0005)
                continue
            h = int(ip.rsplit(".", 1)[1])
            if got.get(h) is None and struct.unpack(">H", d[6:8])[0] > 0 and d[3] & 0xF == 0:
                got[h] = (time.monotonic() - t0) * 1000
    return got
# every host answers a container of h1's first (its neighbour entry on the underlay made:
# the first query to a host whose address the probe has not resolved waits for ARP)
warm = answered("h1c1.example.com", 0, time.monotonic(), 0.05)
if any(v is None for v in warm.values()):
    print(f"FAIL hosts {[h for h, v in warm.items() if v is None]} do not answer h1c1", file=sys.stderr)
    sys.exit(1)
out, commits, after, posts = [], [], [], []
etcd = http.client.HTTPConnection("10.99.0.250", 2379, timeout=5)  # one kept-alive connection
for c in range(changes):
    name = f"probe{c}-{time.time_ns() % 1000000}"
    body = json.dumps({"name": name, "ip": f"10.202.{c // 250}.{c % 250 + 1}", "port": 80, "labels": {"app": name}})
    t0 = time.monotonic()
    api.request("POST", "/v1/containers", body, {"Content-Type": "application/json"})
    r = api.getresponse()
    r.read()
    if r.status // 100 != 2:
        print(f"FAIL change {c}: h1's API answered {r.status}", file=sys.stderr)
        sys.exit(1)
    posts.append((time.monotonic() - t0) * 1000)
    # when etcd holds the record (its JSON gateway, from the underlay): what came before is
    # h1's, what comes after is the watch and the other hosts'
    key = base64.b64encode(f"/vxgate/containers/h1/{name}".encode()).decode()
    in_etcd = None
    while in_etcd is None and time.monotonic() < t0 + 30:
        etcd.request("POST", "/v3/kv/range", json.dumps({"key": key, "count_only": True}))
        r = etcd.getresponse()
        got = json.loads(r.read() or b"{}")
        if r.status == 200 and got.get("count") in ("1", 1):
            in_etcd = (time.monotonic() - t0) * 1000
        else:
            time.sleep(0.001)
    if in_etcd is None:
        print(f"FAIL change {c}: never in etcd", file=sys.stderr)
        sys.exit(1)
    commits.append(in_etcd)
    if in_etcd > 500:
        print(f"change {c}: in etcd {in_etcd:.0f} ms after the POST (h1's API answered in {posts[-1]:.1f} ms)", file=sys.stderr)
    waiting = answered(f"{name}.example.com", (c + 1) * 1000, t0, 0.005)
    missing = [h for h, v in waiting.items() if v is None]
    if missing:
        print(f"FAIL change {c}: hosts {missing} never answered", file=sys.stderr)
        sys.exit(1)
    out += waiting.values()
    after += [v - in_etcd for v in waiting.values()]
    slow = {h: round(v - in_etcd) for h, v in waiting.items() if v - in_etcd > 500}
    if slow:
        print(f"change {c}: hosts answering over 0.5 s after etcd had it (ms): {slow}", file=sys.stderr)
print("\n".join(f"{v:.1f}" for v in out))
with open(sys.argv[4], "w") as f:
    f.write("\n".join(f"{v:.1f}" for v in commits) + "\n")
with open(sys.argv[5], "w") as f:
    f.write("\n".join(f"{v:.1f}" for v in after) + "\n")
with open(sys.argv[6], "w") as f:
    f.write("\n".join(f"{v:.1f}" for v in posts) + "\n")
PY
) || die "N=$N: a change did not reach every host"
  alive
  r1=$(etcd_rpcs)
  s1=$(etcd_slow_fsyncs)
  c1=$(date +%s%N)
  k1=$(cpu)
  if [ -n "${FLEET_PERF:-}" ]; then
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
  fi
  echo "RESULT fleet_N${N}_api_reply_ms p50=$(pct 50 < "$WORK/posts") p99=$(pct 99 < "$WORK/posts") (h1's admin API answering the POST)"
  echo "RESULT fleet_N${N}_change_to_etcd_ms p50=$(pct 50 < "$WORK/commits") p99=$(pct 99 < "$WORK/commits") (the record readable in etcd: h1's put and etcd's commit)"
  echo "RESULT fleet_N${N}_etcd_to_dns_ms p50=$(pct 50 < "$WORK/after") p99=$(pct 99 < "$WORK/after") max=$(pct 100 < "$WORK/after") (from there to each other host's DNS answer)"
  echo "RESULT fleet_N${N}_change_to_dns_ms p50=$(echo "$lat" | pct 50) p99=$(echo "$lat" | pct 99) max=$(echo "$lat" | pct 100) (changes=$CHANGES hosts=$((N - 1)))"
  # what one host spends on one change (on its own cores in a real fleet; here N hosts share
  # this machine's, which is what stretches the latency above as N grows)
  echo "RESULT fleet_N${N}_cpu_ms_per_change_per_host $(awk -v a="$k0" -v b="$k1" -v c="$CHANGES" -v n="$N" -v hz="$(getconf CLK_TCK)" -v t=$(( (c1 - c0) / 1000000 )) -v cores="$(nproc)" 'BEGIN { printf "%.2f (the window: %d ms for %d changes on %d cores)", (b - a) * 1000 / hz / c / n, t, c, cores }')"
  # less the keep-alives that went on meanwhile (the rate at rest)
  echo "RESULT fleet_N${N}_etcd_rpcs_per_change $(awk -v a="$r0" -v b="$r1" -v c="$CHANGES" -v r="$rest" -v t=$(( (c1 - c0) / 1000000 )) 'BEGIN { printf "%.1f", (b - a - r * t / 1000) / c }')"
  # a change cannot reach anyone before etcd has written it: its own disk stalls, counted
  echo "RESULT fleet_N${N}_etcd_fsyncs_over_500ms_during_changes $((s1 - s0))"
  # broadcasts from h1's bridge: the datagrams h1 sends for each (10 of them, less what it
  # sends in as long without them)
  tx() {
    local v
    v=$(on h1 curl -s http://127.0.0.1:9180/metrics | awk '/^vxgate_overlay_packets_total\{network="default",direction="tx"\}/ { print $2 }')
    [ -n "$v" ] || die "no overlay tx counter in h1's /metrics"
    echo "$v"
  }
  b0=$(tx); sleep 2; b1=$(tx)
  on h1 /usr/bin/python3 -c '
import socket, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("br0", 0))
mac = open("/sys/class/net/br0/address").read().strip()
src = bytes(int(x, 16) for x in mac.split(":"))
for _ in range(10):
    s.send(b"\xff" * 6 + src + b"\x88\xb5" + b"fleet-bench-broadcast".ljust(46, b"\0"))
    time.sleep(0.01)'
  sleep 1.9
  b2=$(tx)
  echo "RESULT fleet_N${N}_flood_copies $(awk -v idle=$((b1 - b0)) -v with=$((b2 - b1)) 'BEGIN { printf "%.1f", (with - idle) / 10 }') (peers=$((N - 1)))"
  # a host restarted: until its registry holds the whole fleet again
  p=VXPID_$N
  kill -TERM "${!p}"; wait "${!p}" 2>/dev/null || true
  t0=$(date +%s%N)
  start_host "$N"
  until [ "$(count_containers "$N")" -ge "$((total + CHANGES))" ]; do
    [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 60000 ] || die "N=$N: the restarted h$N never learned the fleet"
    sleep 0.02
  done
  echo "RESULT fleet_N${N}_join_ms $(( ($(date +%s%N) - t0) / 1000000 ))"
  # the probes go, so that the next size starts from the config's containers only
  for c in $(on h1 curl -s http://127.0.0.1:9180/v1/containers | grep -o '"probe[^"]*"' | tr -d '"' | sort -u); do
    on h1 curl -sf -o /dev/null -X DELETE "http://127.0.0.1:9180/v1/containers/$c" || true
  done
done
