#!/usr/bin/env bash
# HTTPS ingress against nginx, in one run on loopback: both terminate TLS with the same ECDSA
# P-256 certificate and proxy to the same backend (an nginx server answering 1 KiB) over
# kept-alive upstream connections; nginx has one worker per core. Measures
#   - wrk keep-alive req/s and p99 latency (HTTP/1.1, 64 connections),
#   - full TLS handshakes/s (one request per connection, Connection: close; session
#     resumption off on both servers, so wrk cannot resume),
#   - HTTP/2 req/s (h2load -c64 -m10),
#   - RSS per idle TLS connection with 5,000 open.
# Prints `RESULT <metric> vxgate=<v> nginx=<v> ratio=<v>` (median of RUNS).
# The load generator and the backend share the 2 cores with the server, so req/s is the whole
# machine's rate. Beside it, each load phase reports the CPU time per request of the server
# (user and system, from /proc/PID/stat around the phase), of the backend nginx and of the
# client (wrk or h2load, from bash's `time`), and `ceiling_<metric>`: the ratio vxgate would
# reach in that run if its own code (user time) took no CPU at all, i.e. nginx's whole
# per-request cost over (client + backend + vxgate's system time). A target above the ceiling
# cannot be reached by work in vxgate's userspace.
# Any wrk socket error or timeout, any h2load failure, a non-2xx answer, or an idle holder
# that does not hold all its connections when RSS is read fails the run.
#
# With --features, measures instead what vxgate's own features cost, against vxgate without
# them in the same run: the access log on (to a file; every request must be in it, none
# dropped) and 50 path routes on the benchmark's host (the request to / is checked against
# all 50 prefixes first). The three take turns going first. Prints
# `RESULT <variant>_<metric> vxgate=<v> base=<v> ratio=<v>` (medians of RUNS).
#
# With --instructions N, counts instead the instructions vxgate's ingress threads execute per
# request (valgrind's callgrind: the same count for the same binary and input, whatever else
# the machine is doing, where CPU time here moves by 10 % between runs): N HTTP/1.1 requests
# then N h2 requests (10 at a time), each on one kept-alive connection. Userspace only (a
# system call counts as one). Every request must be answered 2xx. Prints
# `RESULT instructions_per_request_<h1|h2> vxgate=<v>`; compare builds with VXGATE=<binary>.
#
#   bench/tls.sh [--runs 3] [--seconds 10] [--features | --instructions N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
RUNS=3 SECS=10 IDLE=5000 FEATURES= INSTRUCTIONS=
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --features) FEATURES=1; shift ;;
    --instructions) INSTRUCTIONS=$2; shift 2 ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
. "$here/lib.sh"
bench_need nginx:nginx-light wrk:wrk h2load:nghttp2-client openssl:openssl
bench_vxgate
W=$(mktemp -d /tmp/vxgate-bench-tls.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.2; rm -rf "$W"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CORES=$(nproc)
VXP=8443 NGP=9443 BACKEND=8081

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -keyout "$W/key.pem" \
  -out "$W/cert.pem" -subj "/CN=example.com" -addext "subjectAltName=DNS:example.com,DNS:*.example.com" 2>/dev/null
head -c 1024 /dev/zero | tr '\0' 'x' > "$W/1k"
chmod 755 "$W"; chmod 644 "$W/1k"   # nginx workers run as www-data

cat > "$W/backend.conf" <<CONF
worker_processes 1;
daemon off;
pid $W/backend.pid;
error_log $W/backend-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$BACKEND;
$(for i in $(seq 50); do echo "    listen 127.0.1.$i:$BACKEND;"; done)
    keepalive_requests 1000000;
    location / { root $W; try_files /1k =404; default_type text/plain; }
  }
}
CONF
cat > "$W/nginx.conf" <<CONF
worker_processes $CORES;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
worker_rlimit_nofile 16384;
events { worker_connections 16384; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; }
  server {
    listen 127.0.0.1:$NGP ssl http2;   # nginx 1.22 syntax (1.25+ also takes "http2 on")
    ssl_certificate $W/cert.pem;
    ssl_certificate_key $W/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
CONF
cat > "$W/vxgate.toml" <<CONF
[node]
name = "bench"
state_dir = "$W/state"
[ingress]
zone = "example.com"
listen = ["127.0.0.1:$VXP"]
session_resumption = false
[[ingress.certs]]
cert = "$W/cert.pem"
key = "$W/key.pem"
[[containers]]
name = "b1"
ip = "127.0.0.1"
port = $BACKEND
labels = { app = "web" }
CONF

# ports_free PORT...: nothing listens there yet (another server on a port this benchmark uses
# would take part of its traffic: vxgate binds with SO_REUSEPORT)
ports_free() {
  local p
  for p in "$@"; do
    if ss -Hltn "( sport = :$p )" | grep -q .; then
      echo "port $p is already in use: $(ss -Hltnp "( sport = :$p )")" >&2; exit 1
    fi
  done
}
ports_free "$BACKEND" "$VXP" "$NGP" 19180
nginx -c "$W/backend.conf" & BACKEND_PID=$!; PIDS+=($BACKEND_PID)
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$BACKEND/" && break; sleep 0.1; done
kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "the backend nginx did not start: $(cat "$W/backend-error.log")" >&2; exit 1; }

rss_kb() { # total RSS of a process and its children
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$(( total + $(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0) ))
  done
  echo "$total"
}

# wrk_clean NAME FILE: wrk saw only 2xx and no socket error or timeout
wrk_clean() {
  if grep -q "Non-2xx" "$2"; then echo "$1: non-2xx answers under load: $(cat "$2")" >&2; exit 1; fi
  if grep -q "Socket errors" "$2"; then echo "$1: socket errors under load: $(grep 'Socket errors' "$2")" >&2; exit 1; fi
  grep -q "Requests/sec" "$2" || { echo "$1: wrk printed no rate: $(cat "$2")" >&2; exit 1; }
}

# h2_run NAME URL [PID]: h2load into $W/h2.txt (with PID: its CPU per request recorded); every request done and 2xx, none failed or errored
h2_run() {
  if [ -n "${3:-}" ]; then
    load "$1" h2 "$3" h2_count -- h2load -c64 -m10 -D "$SECS" -H ':authority: web.example.com' "$2"
    cp "$W/load.txt" "$W/h2.txt"
  else
    h2load -c64 -m10 -D "$SECS" -H ':authority: web.example.com' "$2" > "$W/h2.txt" 2>&1 || true
  fi
  grep -q "status codes: [1-9][0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx" "$W/h2.txt" \
    && grep -qE "requests: .* [0-9]+ succeeded, 0 failed, 0 errored, 0 timeout" "$W/h2.txt" \
    || { echo "$1: h2load errors: $(grep -E 'status codes|requests:' "$W/h2.txt")" >&2
         [ "$1" != vxgate ] || echo "vxgate's log ends: $(tail -5 "$W/vxgate.log")" >&2; exit 1; }
}

# ticks PID: user and system clock ticks of PID and its children (nginx's workers) so far;
# fails when PID or one of its children cannot be read (a process gone would count as 0)
ticks() {
  local u=0 s=0 p a b
  # pgrep exits 1 when PID has no children (vxgate): that is not an error
  for p in "$1" $(pgrep -P "$1" || true); do
    a= b=
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null) || true
    [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] || { echo "cannot read the CPU time of process $p" >&2; return 1; }
    u=$((u + a)) s=$((s + b))
  done
  echo "$u $s"
}
# load NAME METRIC PID COUNT_CMD -- CLIENT...: runs the client, then records the CPU time per
# request (µs) of the server PID (user, sys), the backend and the client; COUNT_CMD prints
# how many requests the client completed. The client's exit status is left in LOAD_RC for the
# caller (wrk must exit 0; h2load's output is checked instead).
load() {
  local name=$1 metric=$2 pid=$3 count=$4 u0 s0 u1 s1 bu0 bs0 bu1 bs1 n t
  shift 5
  t=$(ticks "$pid") || exit 1; read -r u0 s0 <<< "$t"
  t=$(ticks "$BACKEND_PID") || exit 1; read -r bu0 bs0 <<< "$t"
  local TIMEFORMAT='%U %S'
  LOAD_RC=0
  { time "$@" > "$W/load.txt" 2>&1 || LOAD_RC=$?; } 2> "$W/client-time"
  t=$(ticks "$pid") || exit 1; read -r u1 s1 <<< "$t"
  t=$(ticks "$BACKEND_PID") || exit 1; read -r bu1 bs1 <<< "$t"
  n=$($count)
  [ "${n:-0}" -gt 0 ] || { echo "$name $metric: the client completed no requests" >&2; exit 1; }
  awk -v hz="$(getconf CLK_TCK)" -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v b=$((bu1 - bu0 + bs1 - bs0)) \
      -v who="$name" -v m="$metric" -v c="$(tail -1 "$W/client-time")" 'BEGIN {
    split(c, t, " "); f = 1e6 / n
    printf "%s %s_server_user_us %.2f\n%s %s_server_sys_us %.2f\n", who, m, u / hz * f, who, m, s / hz * f
    printf "%s %s_backend_us %.2f\n%s %s_client_us %.2f\n", who, m, b / hz * f, who, m, (t[1] + t[2]) * f
  }' >> "$W/results"
}
wrk_count() { awk '/requests in/ {print $1}' "$W/load.txt"; }
h2_count() { awk '/^requests:/ {print $8}' "$W/load.txt"; }

measure() { # name port pid
  local name=$1 port=$2 pid=$3 url="https://127.0.0.1:$2/"
  local check
  check=$(curl -sk -o /dev/null -w '%{http_code} %{size_download}' -H 'Host: web.example.com' "$url")
  [ "$check" = "200 1024" ] || { echo "$name does not answer 200 with 1 KiB: $check" >&2; exit 1; }
  load "$name" keepalive "$pid" wrk_count -- wrk -t2 -c64 -d"${SECS}s" --latency -H 'Host: web.example.com' "$url"
  [ "$LOAD_RC" = 0 ] || { echo "$name: wrk failed ($LOAD_RC): $(cat "$W/load.txt")" >&2; exit 1; }
  cp "$W/load.txt" "$W/wrk.txt"
  wrk_clean "$name" "$W/wrk.txt"
  echo "$name keepalive_rps $(awk '/Requests\/sec/ {print $2}' "$W/wrk.txt")" >> "$W/results"
  echo "$name keepalive_p99_ms $(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$W/wrk.txt")" >> "$W/results"
  load "$name" handshakes "$pid" wrk_count -- wrk -t2 -c32 -d"${SECS}s" -H 'Host: web.example.com' -H 'Connection: close' "$url"
  [ "$LOAD_RC" = 0 ] || { echo "$name: wrk failed ($LOAD_RC): $(cat "$W/load.txt")" >&2; exit 1; }
  cp "$W/load.txt" "$W/hs.txt"
  wrk_clean "$name" "$W/hs.txt"
  echo "$name handshakes_per_s $(awk '/Requests\/sec/ {print $2}' "$W/hs.txt")" >> "$W/results"
  h2_run "$name" "$url" "$pid"
  echo "$name h2_rps $(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$W/h2.txt")" >> "$W/results"
  local before after
  before=$(rss_kb "$pid")
  /usr/bin/python3 - "$port" "$IDLE" "$W/hold" <<'PY' &
import socket, ssl, sys, time, os
port, n, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
conns = []
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="web.example.com")
    conns.append(s)
open(flag, "w").write(str(len(conns)))
while os.path.exists(flag):
    time.sleep(0.1)
PY
  local holder=$!
  for _ in $(seq 600); do [ -s "$W/hold" ] && break; sleep 0.1; done
  sleep 1
  after=$(rss_kb "$pid")
  # the holder made all its connections, and the server still has them open as RSS is read
  local held open
  held=$(cat "$W/hold" 2>/dev/null || echo 0)
  open=$(ss -Htn state established "( sport = :$port )" | wc -l)
  if [ "$held" != "$IDLE" ] || [ "$open" -lt "$IDLE" ]; then
    echo "$name: the idle holder has $held of $IDLE connections, the server $open open" >&2; exit 1
  fi
  rm -f "$W/hold"
  wait "$holder" 2>/dev/null || true
  echo "$name idle_conn_kib $(awk -v a="$after" -v b="$before" -v n="$IDLE" 'BEGIN {printf "%.1f", (a - b) / n}')" >> "$W/results"
}

if [ -n "$INSTRUCTIONS" ]; then
  bench_need valgrind:valgrind
  for mode in h1 h2; do
    ports_free "$VXP"
    rm -rf "$W/cg"; mkdir "$W/cg"
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$W/cg/out.%p" \
      "$VXGATE" run --config "$W/vxgate.toml" --log-level warn 2> "$W/vxgate.log" &
    vx=$!; PIDS+=($vx)
    for _ in $(seq 200); do
      curl -sk -o /dev/null -H 'Host: web.example.com' "https://127.0.0.1:$VXP/" && break; sleep 0.2
    done
    if [ $mode = h1 ]; then
      h2load --h1 -n "$INSTRUCTIONS" -c 1 -H ':authority: web.example.com' "https://127.0.0.1:$VXP/" > "$W/load.txt" 2>&1 || true
    else
      h2load -n "$INSTRUCTIONS" -c 1 -m 10 -H ':authority: web.example.com' "https://127.0.0.1:$VXP/" > "$W/load.txt" 2>&1 || true
    fi
    grep -q "status codes: $INSTRUCTIONS 2xx" "$W/load.txt" \
      || { echo "$mode: not every request answered 2xx: $(grep -E 'status codes|requests:' "$W/load.txt")" >&2; exit 1; }
    kill -INT "$vx"; wait "$vx" 2>/dev/null || true
    # TLS_CALLGRIND_DIR=<dir> keeps each mode's callgrind files for callgrind_annotate
    if [ -n "${TLS_CALLGRIND_DIR:-}" ]; then mkdir -p "$TLS_CALLGRIND_DIR/$mode"; cp "$W"/cg/out.* "$TLS_CALLGRIND_DIR/$mode/"; fi
    # the ingress threads are those that ran its accept loop (callgrind writes a file a thread)
    total=0 threads=0
    for f in "$W"/cg/out.*-*; do
      callgrind_annotate "$f" > "$W/cg/annotated" 2>/dev/null || true
      if grep -qE 'vxgate::ingress::([a-z_]+::)?accept_tls' "$W/cg/annotated"; then
        total=$(( total + $(awk '/^(summary|totals):/ {print $2; exit}' "$f") )) threads=$((threads + 1))
      fi
    done
    [ "$threads" -gt 0 ] || { echo "$mode: no ingress thread in callgrind's output" >&2; exit 1; }
    echo "RESULT instructions_per_request_$mode vxgate=$(( total / INSTRUCTIONS ))"
  done
  exit 0
fi

if [ -n "$FEATURES" ]; then
  # vxgate alone, three configurations in turn per run: base, access log, 50 path routes
  printf '[admin]\nlisten = "127.0.0.1:19180"\n' >> "$W/vxgate.toml"
  sed 's|^\[ingress\]|[ingress]\naccess_log = "'"$W"'/access.log"|' "$W/vxgate.toml" > "$W/vx-accesslog.toml"
  cp "$W/vxgate.toml" "$W/vx-routes50.toml"
  for i in $(seq 50); do
    printf '[[containers]]\nname = "r%d"\nip = "127.0.1.%d"\nport = %d\nlabels = { app = "r%d", "vxgate.host" = "web.example.com", "vxgate.path" = "/p%d" }\n' \
      "$i" "$i" "$BACKEND" "$i" "$i" >> "$W/vx-routes50.toml"
  done
  cp "$W/vxgate.toml" "$W/vx-base.toml"
  metric() { curl -sS http://127.0.0.1:19180/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
  variants=(base accesslog routes50)
  for run in $(seq "$RUNS"); do
    # the order turns each run, so no variant always goes first (the first measured after a
    # pause ran faster or slower by up to 10 % on this machine)
    order=("${variants[@]:$(( (run - 1) % 3 ))}" "${variants[@]:0:$(( (run - 1) % 3 ))}")
    for variant in "${order[@]}"; do
      rm -f "$W/access.log"
      ports_free "$VXP" 19180
      "$VXGATE" run --config "$W/vx-$variant.toml" --log-level warn 2> "$W/vxgate.log" &
      vx=$!; PIDS+=($vx)
      for _ in $(seq 100); do curl -sf http://127.0.0.1:19180/healthz >/dev/null 2>&1 && break; sleep 0.05; done
      kill -0 "$vx" 2>/dev/null || { echo "$variant: vxgate exited: $(tail -3 "$W/vxgate.log")" >&2; exit 1; }
      url="https://127.0.0.1:$VXP/"
      check=$(curl -sk -o /dev/null -w '%{http_code} %{size_download}' -H 'Host: web.example.com' "$url")
      [ "$check" = "200 1024" ] || { echo "$variant does not answer 200 with 1 KiB: $check" >&2; exit 1; }
      if [ $variant = routes50 ]; then
        n=$(curl -sS http://127.0.0.1:19180/v1/services | /usr/bin/python3 -c '
import json, sys
print(sum(1 for s in json.load(sys.stdin) for r in s.get("routes", []) if r.get("host") == "web.example.com"))')
        [ "$n" = 51 ] || { echo "routes50: $n routes on web.example.com, expected 51" >&2; exit 1; }
        code=$(curl -sk -o /dev/null -w '%{http_code}' -H 'Host: web.example.com' "https://127.0.0.1:$VXP/p37/x")
        [ "$code" = 200 ] || { echo "routes50: /p37/x answered $code" >&2; exit 1; }
      fi
      wrk -t2 -c64 -d"${SECS}s" -H 'Host: web.example.com' "$url" > "$W/wrk.txt"
      wrk_clean "$variant" "$W/wrk.txt"
      echo "$variant keepalive_rps $(awk '/Requests\/sec/ {print $2}' "$W/wrk.txt")" >> "$W/results"
      h2_run "$variant" "$url"
      echo "$variant h2_rps $(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$W/h2.txt")" >> "$W/results"
      if [ $variant = accesslog ]; then
        sleep 0.5   # the writer thread drains its queue
        written=$(metric 'vxgate_http_access_log_lines_total{result="written"}')
        dropped=$(metric 'vxgate_http_access_log_lines_total{result="dropped"}')
        lines=$(wc -l < "$W/access.log")
        served=$(curl -sS http://127.0.0.1:19180/metrics | awk '/^vxgate_http_requests_total/ { s += $2 } END { print s + 0 }')
        if [ -z "$written" ] || [ "$dropped" != 0 ] || [ "$lines" != "$written" ] || [ "$lines" -lt "$served" ]; then
          echo "accesslog: $lines lines, written=$written dropped=$dropped, $served requests served" >&2; exit 1
        fi
        echo "accesslog: $lines lines for $served requests, 0 dropped" >&2
      fi
      kill "$vx"; wait "$vx" 2>/dev/null || true
    done
    echo "run $run done" >&2
  done
  /usr/bin/python3 - "$W/results" <<'PY'
import statistics, sys
vals = {}
for line in open(sys.argv[1]):
    name, metric, v = line.split()
    vals.setdefault((name, metric), []).append(float(v))
for variant in ("accesslog", "routes50"):
    for metric in ("keepalive_rps", "h2_rps"):
        v, b = statistics.median(vals[(variant, metric)]), statistics.median(vals[("base", metric)])
        print(f"RESULT {variant}_{metric} vxgate={v:g} base={b:g} ratio={v / b:.3f}")
PY
  exit 0
fi

for run in $(seq "$RUNS"); do
  ports_free "$VXP"
  "$VXGATE" run --config "$W/vxgate.toml" --log-level warn 2> "$W/vxgate.log" &
  vx=$!; PIDS+=($vx)
  sleep 1
  measure vxgate "$VXP" "$vx"
  kill "$vx"; wait "$vx" 2>/dev/null || true
  ports_free "$NGP"
  nginx -c "$W/nginx.conf" & ng=$!; PIDS+=($ng)
  sleep 1
  measure nginx "$NGP" "$ng"
  kill "$ng"; wait "$ng" 2>/dev/null || true
  echo "run $run done" >&2
done

/usr/bin/python3 - "$W/results" <<'PY'
import statistics, sys
vals = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) != 3 or not parts[2].replace('.', '', 1).isdigit():
        continue
    vals.setdefault((parts[0], parts[1]), []).append(float(parts[2]))
for metric in ("keepalive_rps", "keepalive_p99_ms", "handshakes_per_s", "h2_rps", "idle_conn_kib"):
    v, a = vals.get(("vxgate", metric)), vals.get(("nginx", metric))
    if not v or not a:
        print(f"RESULT {metric} missing (see the tool output)")
        continue
    v, a = statistics.median(v), statistics.median(a)
    print(f"RESULT {metric} vxgate={v:g} nginx={a:g} ratio={v / a if a else float('nan'):.3f}")
# CPU µs per request, and the ceiling: the ratio if vxgate's user time were 0 (per run, then
# the median); total_ratio is nginx's whole per-request CPU over vxgate's (the rate ratio
# when both runs kept the 2 cores busy)
for phase in ("keepalive", "handshakes", "h2"):
    parts = ("server_user_us", "server_sys_us", "backend_us", "client_us")
    got = {(w, p): vals.get((w, f"{phase}_{p}"), []) for w in ("vxgate", "nginx") for p in parts}
    if any(not x for x in got.values()):
        print(f"RESULT {phase}_cpu missing (see the tool output)")
        continue
    for p in parts:
        v, a = statistics.median(got[("vxgate", p)]), statistics.median(got[("nginx", p)])
        print(f"RESULT {phase}_{p} vxgate={v:.2f} nginx={a:.2f} ratio={v / a if a else float('nan'):.3f}")
    runs = min(len(x) for x in got.values())
    total = lambda w, r, skip=(): sum(got[(w, p)][r] for p in parts if p not in skip)
    ceil = [total("nginx", r) / total("vxgate", r, ("server_user_us",)) for r in range(runs)]
    whole = [total("nginx", r) / total("vxgate", r) for r in range(runs)]
    print(f"RESULT {phase}_total_cpu_ratio {statistics.median(whole):.3f} (nginx's CPU per request, all processes, over vxgate's)")
    print(f"RESULT {phase}_ceiling {statistics.median(ceil):.3f} (the ratio with vxgate's user time at 0)")
PY
