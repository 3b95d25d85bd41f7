#!/usr/bin/env bash
# How long a `docker start` / `docker stop` takes to show in vxgate's DNS and ingress, on the
# container's own host (h1) and on another host (h2, through etcd). Two hosts of
# `testbed/up.sh --docker`; a container "solo" (app=solo, the only one of its service) on h1 is
# started and stopped N times (default 20). Each delay runs from the Engine's own event time
# (`start`, or `die` for a stop, from `docker events`) to the first answer that shows the
# change: an A record for solo.example.com (or none), and a 200 from the ingress for
# https://solo.example.com/ (or a 404: the ingress no longer knows the service; a 502/503 only
# says the container died). Probes run in parallel threads from before the docker command,
# each polling about every half millisecond over a kept-alive connection. A start's HTTPS max
# can reach ~2 s: a request that arrives before the container's server listens is refused,
# the container is ejected, and active checks restore it (rise = 2 at 1 s). Also reports the Engine API calls vxgate made
# per start and per stop (from vxgate_docker_api_calls_total).
#
# Prints RESULT lines with the median and the max. No anchor runs here: Traefik (whose Docker
# provider is the reference) has no Debian package on these machines.
#
#   bench/docker.sh [--runs N] [--prefix P]        (as root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
. "$root/testbed/lib.sh"
RUNS=20
P=bdk
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --prefix) P=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) tb_die "unknown argument $1" ;;
  esac
done
[ "$(id -u)" = 0 ] || tb_die "needs root"
tb_init
VXGATE=${VXGATE:-$root/target/release/vxgate}
[ -x "$VXGATE" ] || (cd "$root" && cargo build --release --bin vxgate)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  "$root/testbed/down.sh" --prefix "$P" >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$root/testbed/up.sh" --prefix "$P" --docker --containers 1 >/dev/null
for h in 1 2; do
  ip netns exec "$P-h$h" "$VXGATE" run --config "$STATE/h$h.toml" >"$STATE/vxgate-h$h.log" 2>&1 &
  PIDS+=($!)
done
for h in 1 2; do
  for _ in $(seq 200); do grep -q "vxgate running" "$STATE/vxgate-h$h.log" && break; sleep 0.05; done
  grep -q "vxgate running" "$STATE/vxgate-h$h.log" || tb_die "vxgate on h$h did not start"
done
tb_docker_web 1 solo 80 --label app=solo
tb_docker 1 stop -t 0 solo >/dev/null

ip netns exec "$P-h1" /usr/bin/python3 - "$RUNS" "$TB_DOCKER" "unix://$(tb_ddir 1)/docker.sock" <<'PY'
import http.client, json, socket, ssl, statistics, struct, subprocess, sys, threading, time, urllib.request

runs, docker, sock = int(sys.argv[1]), sys.argv[2], sys.argv[3]
D = [docker, "-H", sock]

def dns_has_a(server):
    q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    for label in b"solo.example.com".split(b"."):
        q += bytes([len(label)]) + label
    q += b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    s.connect((server, 53))
    def probe():
        s.send(q)
        r = s.recv(4096)
        return struct.unpack(">H", r[6:8])[0] > 0
    return probe

def https_ok(addr):
    ctx = ssl._create_unverified_context()
    conn = [None]
    def probe():
        for _ in range(2):
            try:
                if conn[0] is None:
                    conn[0] = http.client.HTTPSConnection(addr, 443, context=ctx, timeout=2)
                conn[0].request("GET", "/", headers={"Host": "solo.example.com"})
                r = conn[0].getresponse()
                r.read()
                return r.status
            except Exception:
                conn[0] = None
        return None
    return probe

def metric():
    with urllib.request.urlopen("http://127.0.0.1:9180/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("vxgate_docker_api_calls_total "):
                return int(line.split()[1])
    raise SystemExit("no vxgate_docker_api_calls_total on h1")

probes = {
    "dns_h1": dns_has_a("10.200.1.1"),
    "dns_h2": dns_has_a("10.200.2.1"),   # h2's vxgate, reached across the overlay
    "https_h1": https_ok("10.99.0.1"),
    "https_h2": https_ok("10.99.0.2"),
}

# what each probe answers once the change shows: an A record and a 200 after a start; no
# record and a 404 (no such service: the ingress dropped it, not merely failed on it) after a stop
WANT = {True: {"dns": True, "https": 200}, False: {"dns": False, "https": 404}}

def wait_all(started, deadline=10.0):
    seen = {}
    def run(name, probe):
        end = time.time() + deadline
        while time.time() < end:
            try:
                if probe() == WANT[started][name.split("_")[0]]:
                    seen[name] = time.time()
                    return
            except Exception:
                pass
            time.sleep(0.0005)
    ts = [threading.Thread(target=run, args=kv) for kv in probes.items()]
    for t in ts: t.start()
    for t in ts: t.join()
    missing = set(probes) - set(seen)
    if missing:
        print(f"not within {deadline}s: {missing}", file=sys.stderr)
    return seen

def event_time(action, since):
    out = subprocess.run(D + ["events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
                              "--filter", "container=solo", "--filter", f"event={action}",
                              "--format", "{{.TimeNano}}"], capture_output=True, text=True, check=True).stdout.split()
    if not out:
        raise SystemExit(f"no {action} event")
    return int(out[-1]) / 1e9

delays = {f"{k}_{p}": [] for k in ("start", "stop") for p in probes}
calls = {"start": [], "stop": []}
for i in range(runs):
    for kind, cmd, want, action in (("start", ["start", "solo"], True, "start"),
                                    ("stop", ["stop", "-t", "0", "solo"], False, "die")):
        c0, t0 = metric(), time.time() - 1
        # the probes run from before the command: `docker stop` returns only after the
        # container's clean-up, tens of ms after its `die` event
        result = {}
        waiter = threading.Thread(target=lambda: result.update(wait_all(want)))
        waiter.start()
        subprocess.run(D + cmd, capture_output=True, check=True)
        waiter.join()
        seen = result
        if set(seen) != set(probes):
            raise SystemExit(f"{kind}: probes missing")
        ev = event_time(action, t0)
        for p, t in seen.items():
            delays[f"{kind}_{p}"].append((t - ev) * 1000)
        time.sleep(0.2)   # let trailing events (stop, disconnect) arrive before counting
        calls[kind].append(metric() - c0)

for k, v in delays.items():
    print(f"RESULT docker_{k}_ms median={statistics.median(v):.1f} max={max(v):.1f} min={min(v):.1f} n={len(v)}")
for k, v in calls.items():
    print(f"RESULT docker_api_calls_per_{k} median={statistics.median(v)} max={max(v)} n={len(v)}")
PY
