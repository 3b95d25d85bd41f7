#!/usr/bin/env bash
# The overlay's datapath under load (issue 7): the mode vxgate reports (admin API, log,
# metrics), 1 GiB each way with SHA-256 checked, and the underlay's checksum offload switched
# off on h1 (ethtool -K eth0 tx off): older kernels refuse UDP GSO there (EIO) and vxgate
# falls back to one datagram per send; newer ones checksum in software. Either way the data
# must arrive intact. Runs with offloads on (default) or VXG_OFFLOAD=off.
. "$(dirname "$0")/lib.sh"
mode=${VXG_OFFLOAD:-auto}
up --hosts 2 --containers 1
start_vxgate 1
start_vxgate 2
# metric HOST NAME: the value, and a failure when the metric is missing (use in assignments)
metric() {
  local v
  v=$(on "h$1" curl -s http://127.0.0.1:9180/metrics | awk -v n="$2" '$1 == n { print $2 }')
  [ -n "$v" ] || fail "h$1 has no metric $2"
  echo "$v"
}
info=$(on h1 curl -s http://127.0.0.1:9180/v1/overlay)
if [ "$mode" = off ]; then
  echo "$info" | grep -q '"datapath": *"portable"' || fail "offload off, but: $info"
  grep -q "overlay up (datapath: portable" "$LOGDIR/vxgate-h1.log" || fail "start log does not say portable"
else
  for f in tap_tso udp_gso udp_gro; do
    echo "$info" | grep -q "\"$f\": *true" || fail "offload $f not on: $info"
  done
  grep -q "overlay up (datapath: offload" "$LOGDIR/vxgate-h1.log" || fail "start log does not say offload"
  dm=$(metric 1 'vxgate_overlay_datapath_mode{mode="offload"}')
  [ "$dm" = 1 ] || fail "metric datapath_mode: $dm"
fi
pass "datapath ($mode): $(grep -o 'datapath: [^)]*)' "$LOGDIR/vxgate-h1.log" | head -1)"

make_blob 1024
t0=$(date +%s%N)
upload_check h1c1 10.200.2.11
t1=$(date +%s%N)
upload_check h2c1 10.200.1.11
t2=$(date +%s%N)
mbit() { echo $(( 8 * 1024 * 1000 / (($1) / 1000000) )); }
extra=""
if [ "$mode" != off ]; then
  tso=$(metric 1 'vxgate_overlay_offload_events_total{network="default",event="tso_frames"}')
  gro=$(metric 2 'vxgate_overlay_offload_events_total{network="default",event="gro_merged"}')
  [ "$tso" -gt 0 ] || fail "h1 segmented no TSO super-frame"
  [ "$gro" -gt 0 ] || fail "h2 merged no received segment"
  extra=" (h1 cut $tso TSO super-frames; h2 merged $gro segments)"
fi
pass "1 GiB h1c1 -> h2c1 at $(mbit $((t1 - t0))) Mbit/s and h2c1 -> h1c1 at $(mbit $((t2 - t1))) Mbit/s (curl POST, backend hashing), sha256 matches$extra"

# UDP datagrams keep their boundaries and contents (merged into USO frames for the TAP where
# the kernel takes them): 20000 of 100 bytes and 5000 of 1300, each derived from its index
merged() { metric 2 'vxgate_overlay_offload_events_total{network="default",event="gro_merged"}'; }
m0=$(merged)
good=$(udp_check h1c1 h2c1 10.200.2.11)
m1=$(merged)
udp_merged=$((m1 - m0))
uso=$(on h2 curl -s http://127.0.0.1:9180/v1/overlay | /usr/bin/python3 -c 'import json,sys; print(str(json.load(sys.stdin)["offloads"]["tap_uso"]).lower())') \
  || fail "/v1/overlay has no offloads.tap_uso"
if [ "$mode" != off ] && [ "$uso" = true ]; then
  # the kernel takes USO frames on the TAP: a burst of one flow's datagrams must be merged
  [ "$udp_merged" -gt 0 ] || fail "tap_uso on h2, but no received UDP datagram was merged"
  how="h2 merged $udp_merged datagrams into USO frames for its TAP"
else
  how="tap_uso $uso: one TAP write per datagram ($udp_merged merged)"
fi
pass "UDP: $good of 25000 datagrams arrived intact, 0 corrupted ($how)"

# Per-peer counters (GET /v1/overlay/peers, the Fleet page): while 3000 datagrams of 1000
# bytes go h1c1 -> h2c1 (one way; ARP answered locally), what h1 counts as sent to h2's VTEP
# and h2 as received from h1's must be those 3000 VXLAN datagrams (1050 bytes each: VXLAN,
# Ethernet, IP and UDP headers around them), and their bytes must equal the UDP payload that
# h2's kernel counted arriving (nft at prerouting: IP bytes less 28 per packet it saw; its
# packets are GRO-merged there, so only the bytes compare)
on h2 nft -f - <<'NFT'
table inet vxpeer {
  chain pre { type filter hook prerouting priority -300; udp dport 4789 counter; }
}
NFT
# peer HOST FIELD: the one peer's FIELD in HOST's /v1/overlay/peers (fails when missing)
peer() {
  on "$1" curl -sf http://127.0.0.1:9180/v1/overlay/peers | /usr/bin/python3 -c '
import json, sys
p = json.load(sys.stdin)
assert len(p) == 1 and p[0]["transport"] == "vxlan", p
print(p[0][sys.argv[1]])' "$2" || fail "$1: no $2 in /v1/overlay/peers"
}
nft_udp() {  # packets and bytes (IP) that h2's prerouting counter saw
  on h2 nft list chain inet vxpeer pre | sed -n 's/.*counter packets \([0-9]*\) bytes \([0-9]*\).*/\1 \2/p'
}
sleep 1
read -r np0 nb0 <<<"$(nft_udp)"
tp0=$(peer h1 tx_packets); tb0=$(peer h1 tx_bytes)
rp0=$(peer h2 rx_packets); rb0=$(peer h2 rx_bytes)
on h1c1 /usr/bin/python3 "$TESTBED/udpcheck.py" send 10.200.2.11 9000 3000 1000
sleep 1
read -r np1 nb1 <<<"$(nft_udp)"
tp1=$(peer h1 tx_packets); tb1=$(peer h1 tx_bytes)
rp1=$(peer h2 rx_packets); rb1=$(peer h2 rx_bytes)
np=$((np1 - np0)); nb=$((nb1 - nb0 - 28 * np))
[ "$nb" -ge $((3000 * 1050)) ] || fail "h2's kernel saw only $nb bytes of VXLAN for 3000 x 1050"
tp=$((tp1 - tp0)); tb=$((tb1 - tb0)); rp=$((rp1 - rp0)); rb=$((rb1 - rb0))
# the health checks' few small datagrams a second may fall between one reading and the next:
# up to 16 datagrams and 4000 bytes apart, never more
near() { local d=$(($1 - $2)); [ "${d#-}" -le "$3" ]; }
[ "$tp" -ge 3000 ] && near "$tb" "$nb" 4000 \
  || fail "h1 counted $tp datagrams / $tb bytes to h2; sent 3000, h2's kernel got $nb bytes"
near "$rp" "$tp" 16 && near "$rb" "$nb" 4000 \
  || fail "h2 counted $rp datagrams / $rb bytes from h1; h1 sent $tp, h2's kernel got $nb bytes"
pass "per-peer counters: h1 -> h2 $tp datagrams / $tb bytes in h1's tx, $rp / $rb in h2's rx, $nb bytes in h2's kernel (nft, $np packets after GRO)"
grep -q "vxgate_overlay_peer_bytes_total{peer=\"[0-9.:]*\",direction=\"tx\"} [1-9]" \
  <<<"$(on h1 curl -s http://127.0.0.1:9180/metrics)" || fail "no vxgate_overlay_peer_bytes_total on h1"

# h1's underlay without checksum offload: UDP GSO sends fail with EIO in the kernel
stop_vxgate 1
on h1 ethtool -K eth0 tx off >/dev/null
start_vxgate 1
make_blob 100
upload_check h1c1 10.200.2.11
upload_check h2c1 10.200.1.11
extra=""
if [ "$mode" != off ]; then
  if [ "$(metric 1 'vxgate_overlay_offload{feature="udp_gso"}')" = 0 ]; then
    grep -q "refused a UDP GSO send" "$LOGDIR/vxgate-h1.log" || fail "GSO off without a log line"
    extra=": the kernel refused UDP GSO; vxgate logged it and sends one datagram per call"
  else
    extra=": this kernel ($(uname -r)) still takes UDP GSO and checksums in software"
  fi
fi
drops=$(metric 1 'vxgate_overlay_drops_total{network="default",reason="send"}')
[ "$drops" -le 1 ] || fail "h1 dropped $drops datagrams on send"
pass "underlay tx checksum offload off on h1: 100 MiB both ways, sha256 matches, send drops $drops$extra"

# Without UDP GSO and GRO (VXGATE_OFFLOAD_DISABLE, as on kernels that lack them): batches go
# out with sendmmsg and come in with recvmmsg; TCP and UDP still arrive intact
if [ "$mode" != off ]; then
  stop_vxgate 1
  stop_vxgate 2
  export VXGATE_OFFLOAD_DISABLE=udp_gso,udp_gro
  start_vxgate 1
  start_vxgate 2
  unset VXGATE_OFFLOAD_DISABLE
  info=$(on h1 curl -s http://127.0.0.1:9180/v1/overlay)
  echo "$info" | grep -q '"udp_gro": *false' && echo "$info" | grep -q '"udp_gso": *false' \
    || fail "GSO/GRO not off: $info"
  upload_check h1c1 10.200.2.11
  upload_check h2c1 10.200.1.11
  on h2c1 /usr/bin/python3 "$TESTBED/udpcheck.py" recv 9000 5 > "$LOGDIR/udp2.txt" &
  rp=$!
  sleep 0.5
  on h1c1 /usr/bin/python3 "$TESTBED/udpcheck.py" send 10.200.2.11 9000 20000 100
  wait "$rp"
  grep -q "bad=0" "$LOGDIR/udp2.txt" || fail "UDP without GRO: $(cat "$LOGDIR/udp2.txt")"
  good=$(sed -n 's/.*good=\([0-9]*\).*/\1/p' "$LOGDIR/udp2.txt")
  [ "${good:-0}" -ge 18000 ] || fail "UDP without GRO: only $good of 20000"
  pass "UDP GSO/GRO off (sendmmsg/recvmmsg): 100 MiB both ways intact, UDP $good of 20000 intact, $(grep -o 'datapath: [^)]*)' "$LOGDIR/vxgate-h1.log" | tail -1)"
fi
