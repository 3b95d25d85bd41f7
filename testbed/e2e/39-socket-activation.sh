#!/usr/bin/env bash
# Restarts that refuse nothing (issue 33): vxgate under a socket-activation harness
# (testbed/socket-activate.py: the sockets of a systemd socket unit — HTTPS :443, the HTTP
# redirect :80, DNS :53 over UDP and TCP, the admin API — bound once and passed as
# LISTEN_FDS to each new vxgate) is restarted 10 times (SIGTERM, the harness starts it again)
# under an HTTPS load (a new TLS connection every 10 ms) and a DNS load (a query every 10 ms):
# 0 refused connections, 0 failed requests but those in flight (reported), and DNS answers
# resume within 1 s. The positive control: the same restarts with nothing passed (vxgate binds
# its own sockets, as without a socket unit) refuse connections. And: a passed socket that no
# configured listener takes stops vxgate at start with one line naming it.
. "$(dirname "$0")/lib.sh"
up --hosts 1 --containers 1
HARNESS="$TESTBED/socket-activate.py"
sockets=(--tcp https=10.99.0.1:443 --tcp http=10.99.0.1:80 --udp dns=10.200.1.1:53
         --tcp dns-tcp=10.200.1.1:53 --tcp admin=127.0.0.1:9180)
healthy() { on h1 curl -s --max-time 5 -o /dev/null http://127.0.0.1:9180/healthz; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# run_restarts MODE: the harness (MODE: pass or no-pass), the load, 10 restarts; prints the
# load's summary line
run_restarts() {
  local mode=$1 pidfile=$LOGDIR/vx-$1.pid stop=$LOGDIR/stop-$1 hp pid old i
  local args=("${sockets[@]}")
  [ "$mode" = no-pass ] && args=(--no-pass)
  rm -f "$pidfile" "$stop"
  # ip netns exec execs python: $! is the harness itself (SIGTERM reaches it)
  ip netns exec "$P-h1" /usr/bin/python3 "$HARNESS" --pidfile "$pidfile" "${args[@]}" -- \
    "$VXGATE" run --config "$STATE/h1.toml" >"$LOGDIR/vxgate-$mode.log" 2>&1 &
  hp=$!
  VX_PIDS+=("$hp")
  for _ in $(seq 100); do [ -s "$pidfile" ] && healthy && break; sleep 0.05; done
  healthy || fail "vxgate under the harness ($mode) never answered: $(tail -3 "$LOGDIR/vxgate-$mode.log")"
  on h1c1 /usr/bin/python3 "$TESTBED/restart-load.py" 10.99.0.1:443 web.example.com 10.200.1.1:53 "$stop" \
    >"$LOGDIR/load-$mode.txt" 2>&1 &
  local lp=$!
  sleep 1
  for i in $(seq 10); do
    old=$(cat "$pidfile")
    kill -TERM "$old"
    for _ in $(seq 200); do
      pid=$(cat "$pidfile" 2>/dev/null || true)
      [ -n "$pid" ] && [ "$pid" != "$old" ] && break
      sleep 0.02
    done
    [ "$pid" != "$old" ] || fail "restart $i ($mode): no new vxgate"
    for _ in $(seq 200); do healthy && break; sleep 0.05; done
    sleep 0.5
  done
  sleep 1
  touch "$stop"
  wait "$lp" || true
  kill -TERM "$hp"; wait "$hp" 2>/dev/null || true
  grep -c 'listening on a socket passed by systemd' "$LOGDIR/vxgate-$mode.log" > "$LOGDIR/passed-$mode.count" || true
  tail -1 "$LOGDIR/load-$mode.txt"
}
field() { echo "$1" | sed -n "s/.* $2=\([0-9]*\).*/\1/p; s/^$2=\([0-9]*\).*/\1/p" | head -1; }

# the control first: plain restarts refuse
plain=$(run_restarts no-pass)
echo "plain restarts: $plain"
[ "$(field "$plain" refused)" -gt 0 ] 2>/dev/null || fail "plain restarts refused nothing (the control must show the problem): $plain"

got=$(run_restarts pass)
echo "socket-activated restarts: $got"
[ "$(cat "$LOGDIR/passed-pass.count")" -ge 55 ] \
  || fail "vxgate did not use the passed sockets each time ($(cat "$LOGDIR/passed-pass.count") of 55 'listening on a socket passed by systemd' lines)"
ok=$(echo "$got" | sed -n 's/^https ok=\([0-9]*\).*/\1/p')
[ "${ok:-0}" -ge 100 ] || fail "too few HTTPS requests succeeded: $got"
[ "$(field "$got" refused)" = 0 ] || { grep refused "$LOGDIR/load-pass.txt" | head -3; fail "socket-activated restarts refused connections: $got"; }
[ "$(field "$got" other)" = 0 ] || { grep -v 'in flight' "$LOGDIR/load-pass.txt" | head -5; fail "requests failed that were not in flight: $got"; }
[ "$(field "$got" unanswered)" = 0 ] || fail "DNS queries went unanswered: $got"
gap=$(field "$got" max_gap_ms)
[ "${gap:-99999}" -le 1000 ] || fail "DNS answers stopped for ${gap} ms (more than 1 s): $got"
pass "10 socket-activated restarts under load: $got (plain restarts: $plain)"

# a passed socket that matches no configured listener: an error at start, naming it
out=$(on h1 /usr/bin/python3 - "$VXGATE" "$STATE/h1.toml" <<'PY'
import os, socket, subprocess, sys
s = socket.socket(); s.bind(("127.0.0.1", 8443)); s.listen(16)
os.dup2(s.fileno(), 3)
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES="stray")
def pre(): os.environ["LISTEN_PID"] = str(os.getpid())
p = subprocess.run([sys.argv[1], "run", "--config", sys.argv[2]], pass_fds=[3], capture_output=True, text=True, timeout=20, preexec_fn=pre)
print(p.returncode); print(p.stderr)
PY
)
echo "$out" | head -1 | grep -qx 1 || fail "vxgate with a stray passed socket did not fail at start: $out"
echo "$out" | grep -q 'no configured listener takes: tcp 127.0.0.1:8443 (stray)' || fail "the error does not name the stray socket: $out"
pass "a passed socket no listener takes (tcp 127.0.0.1:8443): vxgate refuses to start, naming it"
