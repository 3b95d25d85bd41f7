#!/usr/bin/env bash
# The encrypted fleet through etcd (issue 29): three hosts on etcd, h1 and h2 encrypted with
# nothing configured per peer (each makes its key at first start and publishes it in its
# node record) and no plain VXLAN socket (no overlay.listen), h3 plain (it publishes no key).
#  1. h1 and h2 find each other's keys in etcd: ping, 100 MiB each way with its SHA-256,
#     25,000 UDP datagrams intact; their underlay traffic is WireGuard only; h3 is left out,
#     logged and named (/v1/overlay, ctl peers) and h1c1 cannot reach it (while it reaches h2c1);
#  2. under a load (ping every 20 ms h1c1 <-> h2c1, and a slow 20 MiB upload), h2's vxgate
#     restarts, then is killed -9 and started (h1 keeps its session: h2 must shake hands at
#     h1's stale datagrams): the longest gaps in the ping replies are reported, each < 5 s;
#  3. h1 gets a new key file + SIGHUP: h2 learns the new key through etcd, the sessions
#     shake hands again; the longest gap is reported and must stay under 5 s; the upload's
#     SHA-256 matches.
. "$(dirname "$0")/lib.sh"
up --hosts 3 --containers 1 --etcd --encrypt
# h3: a plain overlay (no key, a plain VXLAN socket); h1 and h2 have no plain socket at all
sed -i -e '/^\[overlay.encryption\]/,/^$/d' -e 's/^\[overlay\]$/[overlay]\nlisten = "10.99.0.3:4789"/' "$STATE/h3.toml"
grep -q '^listen = "10.99.0.1:4789"' "$STATE/h1.toml" && fail "h1's config has a plain overlay.listen"
grep -q encryption "$STATE/h3.toml" && fail "h3's config still has encryption"
for h in 1 2 3; do start_vxgate "$h"; done
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
api() { on "$1" curl -sS --max-time 5 "http://127.0.0.1:9180$2"; }
pub_of() { "$VXGATE" key show --config "$STATE/h$1.toml" 2>/dev/null; }
PUB1=$(pub_of 1) PUB2=$(pub_of 2)
[ -n "$PUB1" ] && [ -n "$PUB2" ] || fail "no keys: '$PUB1' '$PUB2'"

# 1. the fleet
t0=$(now_ms) ok=""
while [ $(( $(now_ms) - t0 )) -lt 15000 ]; do
  on h1c1 ping -c 1 -W 1 10.200.2.11 >/dev/null 2>&1 && { ok=1; break; }
  sleep 0.1
done
[ -n "$ok" ] || fail "h1c1 cannot reach h2c1 over keys from etcd: $(api h1 /v1/overlay)"
first_ms=$(( $(now_ms) - t0 ))
on h2c1 ping -c 3 -i 0.2 -W 2 10.200.1.11 >/dev/null || fail "no ping h2c1 -> h1c1"
api h1 /v1/overlay | /usr/bin/python3 -c '
import json, sys
e = json.load(sys.stdin)["encryption"]
assert e["public_key"] == sys.argv[1], e
assert [p["public_key"] for p in e["peers"]] == [sys.argv[2]], e
assert e["peers"][0]["address"] == "10.250.0.2" and e["peers"][0]["endpoint"] == "10.99.0.2:51820", e
assert e["nodes_without_key"] == ["h3"], e
' "$PUB1" "$PUB2" || fail "h1's /v1/overlay: $(api h1 /v1/overlay)"
grep -q 'publish no WireGuard key' "$LOGDIR/vxgate-h1.log" || fail "h1 did not log the keyless h3"
on h1 "$VXGATE" ctl peers | grep -q 'not used (they publish no WireGuard key): h3' \
  || fail "ctl peers does not name h3: $(on h1 "$VXGATE" ctl peers)"
# the control: h3c1 is up (its own host reaches it)
on h3 ping -c 1 -W 2 10.200.3.11 >/dev/null || fail "control: h3c1 does not answer its own host"
on h1c1 ping -c 2 -i 0.2 -W 1 10.200.3.11 >/dev/null 2>&1 && fail "h1c1 reached the plain h3c1"
pass "h1 and h2 encrypted with keys from etcd only (first ping after ${first_ms} ms); h3 (no key) left out, logged, named by /v1/overlay and ctl peers; h1c1 cannot reach h3c1"

make_blob 100
cap=$LOGDIR/fleet.pcap
capture_start h1 eth0 'udp and host 10.99.0.1 and host 10.99.0.2' "$cap"
t0=$(now_ms)
upload_check h1c1 10.200.2.11
t1=$(now_ms)
down=$(on h1c1 curl -sS --max-time 180 http://10.200.2.11/bytes/104857600 | sha256sum | cut -d' ' -f1)
t2=$(now_ms)
# the backend's /bytes/N: its 64 KiB PATTERN (bytes 0-255, 256 times), repeated
want=$(/usr/bin/python3 -c '
import hashlib
p = bytes(range(256)) * 256
h = hashlib.sha256()
for _ in range(1600): h.update(p)
print(h.hexdigest())')
[ "$down" = "$want" ] || fail "100 MiB h2c1 -> h1c1: SHA-256 $down, expected $want"
good=$(udp_check h1c1 h2c1 10.200.2.11)
capture_stop
wgp=$(tcpdump -n -r "$cap" 'udp port 51820' 2>/dev/null | wc -l)
vx=$(tcpdump -n -r "$cap" 'udp port 4789' 2>/dev/null | wc -l)
[ "$wgp" -ge 1000 ] || fail "only $wgp WireGuard packets between h1 and h2 (did the capture run?)"
[ "$vx" = 0 ] || fail "$vx plain VXLAN packets between h1 and h2"
mbit() { echo $(( 100 * 8 * 1000 / ($1 > 0 ? $1 : 1) )); }
pass "100 MiB h1c1 -> h2c1 ($(mbit $((t1 - t0))) Mbit/s) and h2c1 -> h1c1 ($(mbit $((t2 - t1))) Mbit/s), SHA-256 match; UDP: $good of 25000 intact, 0 corrupted; between h1 and h2: $wgp WireGuard packets, 0 UDP 4789"

# longest_gap FILE: the longest time in ms between two consecutive ping replies (ping -D)
longest_gap() {
  awk -F'[][]' '/bytes from/ { t = $2 * 1000; if (last && t - last > g) g = t - last; last = t }
                END { printf "%d\n", g }' "$1"
}
# load NAME: ping h1c1 -> h2c1 every 20 ms until stop_load (at most 90 s)
load() {
  # not through `on`: a backgrounded function is a subshell, and $! would not be ping
  ip netns exec "$P-h1c1" ping -D -i 0.02 -W 1 -w 90 10.200.2.11 > "$LOGDIR/$1.ping" 2>&1 &
  PING_PID=$!
}
stop_load() { kill -TERM "$PING_PID" 2>/dev/null; wait "$PING_PID" 2>/dev/null || true; }
# wait_replies FILE N: until FILE has N more replies than now (at most 20 s)
wait_replies() {
  local base; base=$(grep -c 'bytes from' "$1" || true)
  for _ in $(seq 200); do
    [ "$(grep -c 'bytes from' "$1" || true)" -ge $((base + $2)) ] && return 0
    sleep 0.1
  done
  fail "no ping replies came back: $(tail -3 "$1")"
}

# 2. h2 restarts under load; a 20 MiB upload at 2 MiB/s spans this and the key rotation
make_blob 20
on h1c1 curl -sS --max-time 120 --limit-rate 2M -H 'Expect:' -X POST -T "$BLOB" http://10.200.2.11/ \
  > "$LOGDIR/slow-upload.txt" 2>&1 &
up_pid=$!
load restart
wait_replies "$LOGDIR/restart.ping" 20
t_stop=$(now_ms)
stop_vxgate 2
stopped_ms=$(( $(now_ms) - t_stop ))
mv "$LOGDIR/vxgate-h2.log" "$LOGDIR/vxgate-h2-before-restart.log"
start_vxgate 2
wait_replies "$LOGDIR/restart.ping" 50
stop_load
gap=$(longest_gap "$LOGDIR/restart.ping")
[ "$gap" -gt 0 ] || fail "no gap measured (control): $(tail -3 "$LOGDIR/restart.ping")"
[ "$gap" -le 5000 ] || fail "after h2's restart, replies stopped for $gap ms"
# a crash: h2's lease and record stay, so h1 keeps its session and h2 gets stale datagrams
load crash
wait_replies "$LOGDIR/crash.ping" 20
kill -9 "$VX_PID_2"; wait "$VX_PID_2" 2>/dev/null || true
start_vxgate 2
wait_replies "$LOGDIR/crash.ping" 50
stop_load
crash_gap=$(longest_gap "$LOGDIR/crash.ping")
[ "$crash_gap" -gt 0 ] || fail "no gap measured (control): $(tail -3 "$LOGDIR/crash.ping")"
[ "$crash_gap" -le 5000 ] || fail "after h2's crash and start, replies stopped for $crash_gap ms"
handshakes() { api "$1" /metrics | awk -v k="vxgate_overlay_wireguard_handshakes_total{kind=\"$2\"}" '$1 == k { print $2 }'; }
seen=$(handshakes h2 after_restart)
[ -n "$seen" ] || fail "no after_restart handshake counter"
pass "h2's vxgate under load: stopped (in $stopped_ms ms) and started, longest gap in the ping replies $gap ms (h1 saw h2 leave and come back in etcd); killed -9 and started, longest gap $crash_gap ms (h2 started $seen handshakes for the stale sessions h1 kept)"

# 3. h1's key rotates: a new key file + SIGHUP
hs0=$(handshakes h1 completed)
load rotate
wait_replies "$LOGDIR/rotate.ping" 20
(umask 077; wg genkey > "$STATE/h1/wireguard.key.new")
mv "$STATE/h1/wireguard.key.new" "$STATE/h1/wireguard.key"
NEW1=$(wg pubkey < "$STATE/h1/wireguard.key")
[ "$NEW1" != "$PUB1" ] || fail "the new key is the old one"
kill -HUP "$VX_PID_1"
wait_replies "$LOGDIR/rotate.ping" 50
stop_load
gap=$(longest_gap "$LOGDIR/rotate.ping")
[ "$gap" -gt 0 ] || fail "no gap measured (control): $(tail -3 "$LOGDIR/rotate.ping")"
[ "$gap" -le 5000 ] || fail "after h1's key rotation, replies stopped for $gap ms"
api h1 /v1/overlay | /usr/bin/python3 -c '
import json, sys
assert json.load(sys.stdin)["encryption"]["public_key"] == sys.argv[1]' "$NEW1" \
  || fail "h1 does not show its new key: $(api h1 /v1/overlay)"
api h2 /v1/overlay | /usr/bin/python3 -c '
import json, sys
p = json.load(sys.stdin)["encryption"]["peers"]
assert [x["public_key"] for x in p] == [sys.argv[1]] and p[0]["session_up"], p
' "$NEW1" || fail "h2 has not taken h1's new key: $(api h2 /v1/overlay)"
hs1=$(handshakes h1 completed)
[ "$hs1" -gt "$hs0" ] || fail "no handshake after the key rotation ($hs0 -> $hs1)"
wait "$up_pid" || fail "the slow upload failed: $(cat "$LOGDIR/slow-upload.txt")"
[ "$(cat "$LOGDIR/slow-upload.txt")" = "$BLOB_SUM" ] || fail "the slow upload's SHA-256: $(cat "$LOGDIR/slow-upload.txt")"
pass "h1's key rotated (SIGHUP) under load: h2 took the new key from etcd, longest gap $gap ms, handshakes $hs0 -> $hs1; the 20 MiB upload across the restart and the rotation kept its SHA-256"
