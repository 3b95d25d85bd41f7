#!/usr/bin/env bash
# 1422-byte ICMP payloads with DF set pass container to container at MTU 1450
# (1422 + 8 ICMP + 20 IP = 1450; outer 1450 + 14 + 8 + 8 + 20 = 1500 on the underlay).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
start_vxgate 1
start_vxgate 2
on h1c1 ping -M do -s 1422 -c 5 -i 0.2 -W 2 10.200.2.11 >/dev/null || fail "1422-byte DF ping h1 -> h2"
on h2c1 ping -M do -s 1422 -c 5 -i 0.2 -W 2 10.200.1.11 >/dev/null || fail "1422-byte DF ping h2 -> h1"
pass "1422-byte DF pings both ways"
# one byte more does not fit the container MTU: refused locally, not black-holed
on h1c1 ping -M do -s 1423 -c 1 -W 1 10.200.2.11 >/dev/null 2>&1 && fail "1423 bytes with DF should not fit"
pass "1423 bytes with DF refused at the sender"
