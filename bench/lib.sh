# Shared by the bench scripts (sourced after they set `root`, the checkout's top).

# bench_need CMD:PACKAGE...: installs the Debian package of each command that is missing
# (the package index is refreshed first, once, only when something is missing).
bench_need() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} = 0 ] && return
  # a refresh that fails leaves the old index: the install below then fails loudly or works
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# bench_vxgate: sets VXGATE, the binary measured. VXGATE=/path/to/vxgate in the environment
# measures another build (a before/after comparison); else this checkout's release build,
# built now.
bench_vxgate() {
  [ -n "${VXGATE:-}" ] || (cd "$root" && cargo build --release --bin vxgate 2>&1 | tail -1)
  VXGATE=${VXGATE:-$root/target/release/vxgate}
}

# bench_integrity FROM_NS TO_NS TO_IP BLOB: BLOB goes over TCP from namespace FROM_NS to
# TO_IP:5301, served in TO_NS; fails (with why, on stderr) unless the receiver's SHA-256
# and length are BLOB's.
bench_integrity() {
  local from=$1 to=$2 ip=$3 blob=$4 rx want got
  want="$(sha256sum "$blob" | cut -d' ' -f1) $(stat -c %s "$blob")"
  ip netns exec "$to" /usr/bin/python3 -c '
import hashlib, socket
s = socket.create_server(("0.0.0.0", 5301)); c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
print(h.hexdigest(), n)' > "$blob.recv" &
  rx=$!
  for _ in $(seq 50); do ip netns exec "$to" ss -Hltn "( sport = :5301 )" | grep -q . && break; sleep 0.1; done
  ip netns exec "$from" /usr/bin/python3 -c '
import socket, sys
c = socket.create_connection((sys.argv[2], 5301), timeout=30); c.sendall(open(sys.argv[1], "rb").read()); c.close()' "$blob" "$ip" \
    || { echo "sending the blob failed" >&2; kill "$rx" 2>/dev/null; return 1; }
  wait "$rx" || { echo "the receiver failed" >&2; return 1; }
  got=$(cat "$blob.recv")
  [ "$got" = "$want" ] || { echo "blob corrupted: got $got, sent $want" >&2; return 1; }
}

# die MESSAGE: the script's name and MESSAGE on stderr, then exit 1
die() { echo "bench/$(basename "$0"): $*" >&2; exit 1; }

# on NS CMD...: runs CMD in namespace $P-NS (P: the script's namespace prefix). For a process
# started with `&`, use `ip netns exec` directly, so that $! is the process itself (it execs
# CMD), not a subshell whose kill would leave CMD running.
on() { local ns=$P-$1; shift; ip netns exec "$ns" "$@"; }

# bench_vs_kernel DIR: from DIR/vxgate and DIR/kernel ("metric value" lines, one per run; and
# DIR/portable when there is one), prints `RESULT <metric> vxgate=<v> kernel=<v>
# ratio=<vxgate/kernel> [portable=<v>]`, medians of the runs.
bench_vs_kernel() {
  /usr/bin/python3 - "$1" "$(dirname "${BASH_SOURCE[0]}")" <<'PY'
import os, sys
d = sys.argv[1]
sys.path.insert(0, sys.argv[2])
from results import load
v, k = load(d, "vxgate"), load(d, "kernel")
p = load(d, "portable") if os.path.exists(f"{d}/portable") else {}
for metric in v:
    ratio = v[metric] / k[metric] if k[metric] else float("nan")
    extra = f" portable={p[metric]:g}" if metric in p else ""
    print(f"RESULT {metric} vxgate={v[metric]:g} kernel={k[metric]:g} ratio={ratio:.3f}{extra}")
PY
}

# bench_cpu PID...: "<machine ticks> <busy ticks> <user ticks of the PIDs>" so far (USER_HZ,
# all CPUs summed). Two readings around a load tell how busy the machine was and what share
# of it the PIDs' own code took.
bench_cpu() {
  local total busy user=0 p u
  read -r total busy < <(awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, t - $5 - $6}' /proc/stat)
  for p in "$@"; do
    u=$(awk '{print $14}' "/proc/$p/stat" 2>/dev/null) && [[ $u =~ ^[0-9]+$ ]] \
      || { echo "cannot read the CPU time of process $p (it has ended)" >&2; return 1; }
    user=$((user + u))
  done
  echo "$total $busy $user"
}

# bench_load_cpu METRIC IPERF_JSON CPU_FILE: from an iperf3 result and two bench_cpu readings
# (one line, before then after) prints METRIC_busy_pct (the machine), METRIC_own_user_pct
# (the PIDs' user time, as a share of the machine) and METRIC_ceiling_gbps: the rate if that
# user time were freed for the load, rate * busy / (busy - own), an upper bound on what work
# in the PIDs' own code could reach. With no PIDs (the kernel's datapath) it is the rate.
bench_load_cpu() {
  /usr/bin/python3 - "$@" <<'PY'
import json, sys
metric, js, cpu = sys.argv[1:4]
rate = json.load(open(js))["end"]["sum_received"]["bits_per_second"] / 1e9
t0, b0, u0, t1, b1, u1 = map(int, open(cpu).read().split())
busy, own = (b1 - b0) / (t1 - t0), (u1 - u0) / (t1 - t0)
print(f"{metric}_busy_pct {100 * busy:.1f}")
print(f"{metric}_own_user_pct {100 * own:.1f}")
print(f"{metric}_ceiling_gbps {rate * busy / (busy - own):.3f}")
PY
}

# bench_idle: "<wall ns> <idle µs of every CPU summed>" from cpuidle's residency counters
# (exact, unlike /proc/stat's ticks: with a tickless idle, work in bursts shorter than a tick
# is counted as idle, which flatters a bursty load like the kernel's datapath at a paced
# rate); "<wall ns> -1" without cpuidle.
bench_idle() {
  local idle=-1 f
  if compgen -G '/sys/devices/system/cpu/cpu*/cpuidle/state*/time' >/dev/null; then
    idle=0
    for f in /sys/devices/system/cpu/cpu*/cpuidle/state*/time; do idle=$((idle + $(cat "$f"))); done
  fi
  echo "$(date +%s%N) $idle"
}

# bench_fixed_cpu METRIC IPERF_JSON CPU_FILE GBPS: for a run paced at GBPS, prints METRIC_gbps
# (carried), METRIC_cores_per_gbps (the whole machine's busy cores per Gbit/s carried: from
# cpuidle's residency where there is one, else /proc/stat) and METRIC_own_cores_per_gbps (the
# PIDs' user time alone); fails when less than 95 % of GBPS was carried (the CPU of a rate
# not reached measures something else). CPU_FILE: bench_cpu and bench_idle before, then after.
bench_fixed_cpu() {
  /usr/bin/python3 - "$@" <<'PY'
import json, os, sys
metric, js, cpu, want = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rate = json.load(open(js))["end"]["sum_received"]["bits_per_second"] / 1e9
if rate < 0.95 * want:
    sys.exit(f"{metric}: carried {rate:.2f} Gbit/s of {want:g}")
t0, b0, u0, w0, i0, t1, b1, u1, w1, i1 = map(int, open(cpu).read().split())
cores = os.cpu_count()
if i0 >= 0:
    busy = cores - (i1 - i0) * 1e3 / (w1 - w0)
else:
    busy = cores * (b1 - b0) / (t1 - t0)
print(f"{metric}_gbps {rate:.3f}")
print(f"{metric}_cores_per_gbps {busy / rate:.4f}")
print(f"{metric}_own_cores_per_gbps {cores * (u1 - u0) / (t1 - t0) / rate:.4f}")
PY
}
