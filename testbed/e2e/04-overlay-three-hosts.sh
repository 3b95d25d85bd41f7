#!/usr/bin/env bash
# Three hosts running vxgate, learning only (no MACs in the configs): a broadcast from h1
# reaches h2 and h3; after learning, unicast h1 -> h2 reaches only h2 (no VXLAN packet arrives
# at h3) (issue: overlay, 6c).
. "$(dirname "$0")/lib.sh"
up --hosts 3 --containers 1
for h in 1 2 3; do
  grep -v '^mac = ' "$STATE/h$h.toml" > "$STATE/h$h-learn.toml"
  start_vxgate "$h" "$STATE/h$h-learn.toml"
done

# A UDP broadcast from h1c1 to the whole /16 reaches the containers on h2 and h3.
bcast() {
  on h1c1 /usr/bin/python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for _ in range(3): s.sendto(b"hello", ("10.200.255.255", 9999))'
}
for h in 2 3; do
  on "h${h}c1" timeout 5 tcpdump -i eth0 -n -c 3 'udp port 9999' >"$LOGDIR/b$h.txt" 2>/dev/null &
  eval "cap$h=\$!"
done
sleep 0.7
bcast
wait "$cap2" || true
wait "$cap3" || true
for h in 2 3; do
  [ "$(grep -c '10.200.1.11.* > 10.200.255.255.9999' "$LOGDIR/b$h.txt")" = 3 ] \
    || fail "broadcast did not reach h${h}c1: $(cat "$LOGDIR/b$h.txt")"
done
pass "a broadcast from h1 reaches h2 and h3"

# learning: one exchange, then unicast
on h1c1 ping -c 2 -i 0.2 -W 2 10.200.2.11 >/dev/null || fail "ping h1c1 -> h2c1"
flow='10\.200\.(1|2)\.11 > 10\.200\.(2|1)\.11: ICMP'
n3=$(pcap_count h3 eth0 'udp port 4789' "$flow" 4 on h1c1 ping -c 20 -i 0.05 -W 2 10.200.2.11)
n2=$(pcap_count h2 eth0 'udp port 4789' "$flow" 4 on h1c1 ping -c 20 -i 0.05 -W 2 10.200.2.11)
[ "$n2" -ge 40 ] || fail "h2 saw only $n2 VXLAN packets for 20 pings"
[ "$n3" = 0 ] || fail "h3 saw $n3 VXLAN packets of the h1 <-> h2 unicast flow"
pass "after learning, unicast h1 <-> h2 sends $n2 packets to h2 and $n3 to h3"
