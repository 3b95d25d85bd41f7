#!/usr/bin/env bash
# The encrypted overlay (issue 29): VXLAN between tunnel addresses inside WireGuard.
#  1. the positive control, plain: a marker sent h1c1 -> h2c1 is seen in a capture on the
#     underlay, and a spoofed plain VXLAN frame from the underlay reaches h1c1;
#  2. two vxgate hosts encrypted (keys from `vxgate key show`): ping both ways, a file across
#     with its SHA-256, the marker delivered but absent from the underlay capture, which holds
#     WireGuard on 51820 and no UDP 4789; the spoofed plain frame and garbage WireGuard
#     datagrams reach nobody and are counted, while traffic goes on;
#  3. interop: h2 becomes wireguard-go (Debian's) with the kernel's vxlan over its interface
#     and h2's vxgate key; ping both ways; `wg show` has the handshake with the public key
#     that `vxgate key show` printed for h1.
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
MARK="vxgate-secret-$RANDOM$RANDOM"
for h in 1 2; do   # container MTU 1390: 1500 - IPv4 20 - UDP 8 - WireGuard 32 - inner 28 - VXLAN 8 - Ethernet 14
  ip -n "$P-h$h" link set vxg0 mtu 1390
  ip -n "$P-h$h" link set c1 mtu 1390
  ip -n "$P-h${h}c1" link set eth0 mtu 1390
done
# capture NAME FILTER: tcpdump on h1's underlay port, ASCII, into $LOGDIR/NAME.cap
capture() {
  ip netns exec "$P-h1" tcpdump -i eth0 -n -l -A --immediate-mode "$2" > "$LOGDIR/$1.cap" 2>/dev/null &
  CAP_PID=$!
  sleep 0.5
}
stop_capture() { sleep 0.3; kill "$CAP_PID" 2>/dev/null; wait "$CAP_PID" 2>/dev/null || true; }
# marker: UDP datagram with the marker from h1c1 to h2c1:9999; prints what h2c1 received
marker() {
  on h2c1 timeout 5 /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9999)); s.settimeout(4)
print(s.recv(2048).decode())' > "$LOGDIR/got.txt" 2>&1 &
  local rx=$!
  sleep 0.3
  on h1c1 /usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3): s.sendto(sys.argv[1].encode(), ("10.200.2.11", 9999)); time.sleep(0.1)' "$MARK"
  wait "$rx" || true
  cat "$LOGDIR/got.txt"
}
# spoof: from h2's underlay address, a plain VXLAN frame (VNI 42, to h1c1's MAC, from
# h2c1's) carrying the marker in IPv4/UDP to h1c1:9998; prints how many h1c1 received
spoof() {
  on h1c1 timeout 4 /usr/bin/python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9998)); s.settimeout(3)
n = 0
try:
    while True:
        s.recv(2048); n += 1
except OSError:
    pass
print(n)' > "$LOGDIR/spoof-in.txt" 2>&1 &
  local rx=$!
  sleep 0.5
  on h2 /usr/bin/python3 -c '
import socket, struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
mark = sys.argv[1].encode()
udp = struct.pack("!HHHH", 1234, 9998, 8 + len(mark), 0) + mark
hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                  socket.inet_aton("10.200.2.11"), socket.inet_aton("10.200.1.11"))
ip = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + udp
eth = bytes.fromhex("02000ac8010b") + bytes.fromhex("02000ac8020b") + b"\x08\x00"
vx = b"\x08\x00\x00\x00" + (42 << 8).to_bytes(4, "big")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(vx + eth + ip, ("10.99.0.1", 4789))' "$MARK"
  wait "$rx" 2>/dev/null || true
  tail -1 "$LOGDIR/spoof-in.txt"
}
metric() { on h1 curl -sS --max-time 5 http://127.0.0.1:9180/metrics | awk -v k="$1" '$1 == k { print $2 }'; }

# 1. plain: the controls
for h in 1 2; do sed -i 's/^mtu = 1450/mtu = 1390/' "$STATE/h$h.toml"; start_vxgate "$h"; done
on h1c1 ping -c 2 -i 0.2 -W 2 10.200.2.11 >/dev/null || fail "plain: no ping"
capture plain 'udp'
got=$(marker)
stop_capture
[ "$got" = "$MARK" ] || fail "plain: the marker did not arrive: '$got'"
plain_seen=$(grep -c "$MARK" "$LOGDIR/plain.cap" || true)
[ "$plain_seen" -ge 1 ] || fail "plain: the marker is not in the underlay capture (the control failed)"
plain_spoof=$(spoof)
[ "$plain_spoof" -ge 1 ] || fail "plain: the spoofed frame did not reach h1c1 (the control failed)"
pass "plain (controls): the marker is on the underlay ($plain_seen times) and a spoofed VXLAN frame reached h1c1 ($plain_spoof times)"
stop_vxgate 1; stop_vxgate 2

# 2. encrypted
enc_config() {  # H: a config with [overlay.encryption], without plain peers
  local h=$1 o=$((3 - $1)) out=$STATE/h$1-wg.toml
  awk '/^peers = / || /^peer_nodes = / || /^peer_gateways = / { next } { print }' "$STATE/h$h.toml" > "$out"
  {
    echo
    echo "[overlay.encryption]"
    echo "mode = \"wireguard\""
    echo "listen = \"10.99.0.$h:51820\""
    echo "address = \"10.250.0.$h\""
    echo "private_key_file = \"$STATE/h$h/wg.key\""
    if [ -n "${2:-}" ]; then
      echo "[[overlay.encryption.peers]]"
      echo "public_key = \"$2\""
      echo "endpoint = \"10.99.0.$o:51820\""
      echo "address = \"10.250.0.$o\""
    fi
  } >> "$out"
  # the [overlay.encryption] section must follow [overlay]'s keys: move [[overlay.networks]] after
  echo "$out"
}
mkdir -p "$STATE/h1" "$STATE/h2"
PUB1=$("$VXGATE" key show --config "$(enc_config 1)" 2>/dev/null)
PUB2=$("$VXGATE" key show --config "$(enc_config 2)" 2>/dev/null)
[ "$(wg pubkey < "$STATE/h1/wg.key")" = "$PUB1" ] || fail "vxgate key show disagrees with wg pubkey"
[ "$(stat -c %a "$STATE/h1/wg.key")" = 600 ] || fail "the key file is not 0600"
for h in 1 2; do
  o=$((3 - h)); pub=PUB$o
  cfg=$(enc_config "$h" "${!pub}")
  "$VXGATE" check --config "$cfg" >/dev/null || fail "check: $("$VXGATE" check --config "$cfg" 2>&1)"
  start_vxgate "$h" "$cfg"
done
t0=$(date +%s%N)
for _ in $(seq 50); do on h1c1 ping -c 1 -W 1 10.200.2.11 >/dev/null 2>&1 && break; sleep 0.1; done
on h1c1 ping -c 3 -i 0.2 -W 2 10.200.2.11 >/dev/null || fail "encrypted: no ping h1c1 -> h2c1"
on h2c1 ping -c 3 -i 0.2 -W 2 10.200.1.11 >/dev/null || fail "encrypted: no ping h2c1 -> h1c1"
first_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
capture enc 'udp'
got=$(marker)
make_blob 20
got_sum=$(on h1c1 curl -sS --max-time 60 -H 'Expect:' -X POST -T "$BLOB" http://10.200.2.11/ | awk '{print $1}')
stop_capture
[ "$got" = "$MARK" ] || fail "encrypted: the marker did not arrive: '$got'"
[ "$got_sum" = "$BLOB_SUM" ] || fail "encrypted: 20 MiB across, SHA-256 $got_sum, sent $BLOB_SUM"
enc_seen=$(grep -c "$MARK" "$LOGDIR/enc.cap" || true)
vx=$(grep -c '\.4789[ :]' "$LOGDIR/enc.cap" || true)
wgp=$(grep -c '\.51820[ :]' "$LOGDIR/enc.cap" || true)
[ "$enc_seen" = 0 ] || fail "encrypted: the marker is readable on the underlay ($enc_seen times)"
[ "$vx" = 0 ] || fail "encrypted: $vx UDP 4789 packets on the underlay"
[ "$wgp" -ge 10 ] || fail "encrypted: only $wgp WireGuard packets in the capture"
pass "encrypted: ping both ways (first answer after ${first_ms} ms, handshake included), 20 MiB across with its SHA-256, the marker delivered; underlay: $wgp WireGuard packets, 0 UDP 4789, the marker 0 times"

before=$(metric vxgate_overlay_plaintext_dropped_total)
enc_spoof=$(spoof)
[ "$enc_spoof" = 0 ] || fail "encrypted: the spoofed plain frame reached h1c1"
after=$(metric vxgate_overlay_plaintext_dropped_total)
[ "$after" -ge $(( ${before:-0} + 3 )) ] || fail "plaintext drops not counted: $before -> $after"
on h2 /usr/bin/python3 -c '
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for t in (1, 2, 4):   # an initiation, a response and a transport message, all garbage
    for _ in range(5):
        s.sendto(t.to_bytes(4, "little") + os.urandom(144), ("10.99.0.1", 51820))'
sleep 0.3
garbage=$(on h1 curl -sS http://127.0.0.1:9180/metrics | awk '$1 ~ /^vxgate_overlay_wireguard_dropped_total/ { n += $2 } END { print n + 0 }')
[ "$garbage" -ge 15 ] || fail "garbage WireGuard datagrams not counted ($garbage)"
on h1c1 ping -c 3 -i 0.2 -W 2 10.200.2.11 >/dev/null || fail "traffic stopped after the spoofing"
peers=$(on h1 curl -sS http://127.0.0.1:9180/v1/overlay)
echo "$peers" | /usr/bin/python3 -c '
import json, sys
e = json.load(sys.stdin)["encryption"]
p = e["peers"][0]
assert e["public_key"] == sys.argv[1] and p["public_key"] == sys.argv[2], e
assert p["session_up"] and p["rx_bytes"] > 0 and p["tx_bytes"] > 0, p
' "$PUB1" "$PUB2" || fail "GET /v1/overlay: $peers"
# /v1/overlay/peers (the Fleet page) gives the session's bytes for a WireGuard peer
vteps=$(on h1 curl -sS http://127.0.0.1:9180/v1/overlay/peers)
echo "$vteps" | /usr/bin/python3 -c '
import json, sys
p = [p for p in json.load(sys.stdin) if p["vtep"] == "10.250.0.2:4789"]
assert len(p) == 1 and p[0]["transport"] == "wireguard" and p[0]["tx_bytes"] > 0 and p[0]["rx_bytes"] > 0, p
' || fail "GET /v1/overlay/peers: $vteps"
table=$(on h1 "$VXGATE" ctl peers)
# keys hold + and /: compare fields, not a regex
echo "$table" | grep -qF "public key: $PUB1" \
  && echo "$table" | awk -v k="$PUB2" '$1 == "10.250.0.2" && $2 == k && / up / { found = 1 } END { exit !found }' \
  || fail "vxgate ctl peers: $table"
pass "encrypted: spoofed plain VXLAN reached nobody (plaintext drops $before -> $after), $garbage garbage WireGuard datagrams dropped, traffic went on; /v1/overlay, /v1/overlay/peers and vxgate ctl peers show the session"

# 3. interop: h2 is wireguard-go + the kernel's vxlan, with h2's key
stop_vxgate 2
WGIF=wg$P
ip netns exec "$P-h2" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go -f "$WGIF" > "$LOGDIR/wireguard-go.log" 2>&1 &
VX_PIDS+=($!)
for _ in $(seq 50); do ip -n "$P-h2" link show "$WGIF" >/dev/null 2>&1 && break; sleep 0.1; done
on h2 wg set "$WGIF" private-key "$STATE/h2/wg.key" listen-port 51820 \
  peer "$PUB1" endpoint 10.99.0.1:51820 allowed-ips 10.250.0.1/32 persistent-keepalive 25
ip -n "$P-h2" addr add 10.250.0.2/24 dev "$WGIF"
ip -n "$P-h2" link set "$WGIF" mtu 1440 up
ip -n "$P-h2" link add vxk type vxlan id 42 dstport 4789 local 10.250.0.2 dev "$WGIF"
on h2 bridge fdb append 00:00:00:00:00:00 dev vxk dst 10.250.0.1
ip -n "$P-h2" link set vxk mtu 1390 master br0 up
ok=""
for _ in $(seq 50); do on h1c1 ping -c 1 -W 1 10.200.2.11 >/dev/null 2>&1 && { ok=1; break; }; sleep 0.2; done
[ -n "$ok" ] || fail "interop: no ping h1c1 -> h2c1 through wireguard-go: $(on h2 wg show "$WGIF")"
on h1c1 ping -c 3 -i 0.2 -W 2 10.200.2.11 >/dev/null || fail "interop: ping h1c1 -> h2c1"
on h2c1 ping -c 3 -i 0.2 -W 2 10.200.1.11 >/dev/null || fail "interop: ping h2c1 -> h1c1"
got=$(marker)
[ "$got" = "$MARK" ] || fail "interop: the marker did not arrive: '$got'"
show=$(on h2 wg show "$WGIF")
echo "$show" | grep -q "peer: $PUB1" || fail "wg show has no peer $PUB1: $show"
echo "$show" | grep -q "latest handshake" || fail "wg show: no handshake: $show"
pass "interop: vxgate <-> wireguard-go with the kernel's vxlan over $WGIF: ping both ways, the marker delivered; wg show: peer $PUB1 with a handshake"
