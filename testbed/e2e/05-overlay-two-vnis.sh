#!/usr/bin/env bash
# Two networks with different VNIs on the same hosts: nothing crosses (issue: overlay, 6d).
# Network "default" (VNI 42, TAP vxg0 on br0) has h1c1 and h2c1. Network "blue" (VNI 43,
# TAP vxg1 on br1) has containers h1c9 and h2c9 with the SAME IPs as h1c1 and h2c1, so a
# frame that leaked from one VNI to the other would be answered by the wrong container.
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
for h in 1 2; do
  on "h$h" ip link add br1 mtu 1450 type bridge
  on "h$h" ip link set br1 up
  on "h$h" ip tuntap add dev vxg1 mode tap
  on "h$h" ip link set vxg1 mtu 1450 master br1 up
  ns=$P-h${h}c9
  ip netns add "$ns"
  ip -n "$P-h$h" link add c9 mtu 1450 type veth peer name eth0 netns "$ns"
  ip -n "$P-h$h" link set c9 master br1 up
  ip -n "$ns" link set eth0 address "$(printf '02:00:0b:00:%02x:09' "$h")" mtu 1450 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.200.$h.11/16" dev eth0
  # the blue network's config: a second [[overlay.networks]] entry, learning only
  grep -v '^mac = ' "$STATE/h$h.toml" | sed '/^\[dns\]/i [[overlay.networks]]\nname = "blue"\nvni = 43\ntap = "vxg1"\nmtu = 1450\n' > "$STATE/h$h-two.toml"
  start_vxgate "$h" "$STATE/h$h-two.toml"
done

on h1c1 ping -c 3 -i 0.2 -W 2 10.200.2.11 >/dev/null || fail "ping within VNI 42"
on h1c9 ping -c 3 -i 0.2 -W 2 10.200.2.11 >/dev/null || fail "ping within VNI 43"
on h1c1 ip neigh show 10.200.2.11 | grep -q 02:00:0a:c8:02:0b || fail "VNI 42 resolved the wrong MAC: $(on h1c1 ip neigh)"
on h1c9 ip neigh show 10.200.2.11 | grep -q 02:00:0b:00:02:09 || fail "VNI 43 resolved the wrong MAC: $(on h1c9 ip neigh)"
pass "each VNI resolves and reaches its own container for the same IP"

# traffic on VNI 42 never shows up in VNI 43's containers (and the reverse); the positive
# controls: the same captures on each VNI's own container see that VNI's traffic
c42=$(pcap_count h2c1 eth0 'ether host 02:00:0a:c8:01:0b or ether host 02:00:0a:c8:02:0b' . 4 \
     on h1c1 ping -c 20 -i 0.05 -W 2 10.200.2.11)
[ "$c42" -ge 40 ] || fail "control: h2c1 saw only $c42 frames of its own VNI 42 ping"
c43=$(pcap_count h2c9 eth0 'ether host 02:00:0b:00:01:09 or ether host 02:00:0b:00:02:09' . 4 \
     on h1c9 ping -c 20 -i 0.05 -W 2 10.200.2.11)
[ "$c43" -ge 40 ] || fail "control: h2c9 saw only $c43 frames of its own VNI 43 ping"
n=$(pcap_count h2c9 eth0 'ether host 02:00:0a:c8:01:0b or ether host 02:00:0a:c8:02:0b' . 4 \
     on h1c1 ping -c 20 -i 0.05 -W 2 10.200.2.11)
[ "$n" = 0 ] || fail "$n frames of VNI 42 reached VNI 43's container"
n=$(pcap_count h2c1 eth0 'ether host 02:00:0b:00:01:09 or ether host 02:00:0b:00:02:09' . 4 \
     on h1c9 ping -c 20 -i 0.05 -W 2 10.200.2.11)
[ "$n" = 0 ] || fail "$n frames of VNI 43 reached VNI 42's container"
pass "nothing crosses between VNI 42 and VNI 43 (controls: each VNI's own container saw $c42 and $c43 frames of the same pings)"
