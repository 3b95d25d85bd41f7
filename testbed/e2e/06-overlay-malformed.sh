#!/usr/bin/env bash
# Malformed datagrams (truncated, I flag clear, unknown VNI, oversize, random bytes) from a
# peer and from an unknown address are dropped and counted; forwarding carries on
# (issue: overlay, 6e).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
start_vxgate 1
start_vxgate 2
on h2c1 ping -c 2 -i 0.2 -W 2 10.200.1.11 >/dev/null || fail "ping before"

send_junk() {
  on "$1" /usr/bin/python3 - <<'PY'
import os, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst = ("10.99.0.1", 4789)
def vxlan(vni, flags=0x08):
    return struct.pack("!B3xI", flags, vni << 8)
frame = bytes.fromhex("ffffffffffff02000ac8020b0800") + bytes(46)
for _ in range(10):
    s.sendto(b"\x08\x00", dst)                          # truncated header
    s.sendto(vxlan(42) + frame[:10], dst)               # truncated inner frame
    s.sendto(vxlan(42, flags=0x00) + frame, dst)        # I flag clear
    s.sendto(vxlan(4242) + frame, dst)                  # unknown VNI
    s.sendto(vxlan(42) + frame[:14] + bytes(3000), dst) # oversize for MTU 1450
for _ in range(1000):
    s.sendto(os.urandom(1 + os.urandom(1)[0] * 4), dst) # random bytes
PY
}
# UDP datagrams the kernel drops for a full receive buffer (the burst can outrun vxgate on a
# loaded machine): counted so every junk datagram is accounted for
rcvbuf_errors() { on h1 awk '/^Udp:/ { if (h) { print $(i) } else { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") break; h = 1 } }' /proc/net/snmp; }
rcv0=$(rcvbuf_errors)
[ -n "$rcv0" ] || fail "no RcvbufErrors counter in h1's /proc/net/snmp"
send_junk h2   # from the peer
send_junk cl   # from an address that is not a peer
on h2c1 ping -c 3 -i 0.2 -W 2 10.200.1.11 >/dev/null || fail "forwarding stopped after the junk"
pass "forwarding carries on after 2100 junk datagrams"

kill -0 "$VX_PID_1" || fail "vxgate on h1 died"
stop_vxgate 1
not_peer=$(underlay_counter 1 drop_not_from_peer)
no_i=$(underlay_counter 1 drop_no_i_flag)
vni=$(underlay_counter 1 drop_unknown_vni)
trunc=$(( $(underlay_counter 1 drop_truncated) + $(counter 1 drop_truncated) ))
over=$(counter 1 drop_oversize)
echo "counted: not_from_peer=$not_peer no_i_flag=$no_i unknown_vni=$vni truncated=$trunc oversize=$over"
lost=$(( $(rcvbuf_errors) - rcv0 ))
# every datagram from the non-peer is counted by vxgate, or was dropped by the kernel before
# vxgate could read it (reported; exactly 1050 counted on an idle machine)
(( not_peer >= 1 && not_peer <= 1050 && not_peer + lost >= 1050 )) \
  || fail "1050 datagrams from the non-peer: $not_peer counted, $lost lost in the socket buffer"
echo "non-peer: $not_peer of 1050 counted, $lost dropped by the kernel (receive buffer full)"
[ "$over" -ge 10 ] || fail "oversize: $over"
[ "$trunc" -ge 20 ] || fail "truncated: $trunc"
[ "$no_i" -ge 10 ] || fail "no I flag: $no_i"
[ "$vni" -ge 10 ] || fail "unknown VNI: $vni"
pass "drops counted by reason: not_from_peer=$not_peer no_i_flag=$no_i unknown_vni=$vni truncated=$trunc oversize=$over"
