#!/usr/bin/env bash
# Two hosts running vxgate: ping, and a 100 MiB TCP transfer with checksums, container on h1
# <-> container on h2, both ways (issue: overlay, 6a).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 2
start_vxgate 1
start_vxgate 2

on h1c1 ping -c 3 -i 0.2 -W 2 10.200.2.11 >/dev/null || fail "ping h1c1 -> h2c1"
on h2c2 ping -c 3 -i 0.2 -W 2 10.200.1.12 >/dev/null || fail "ping h2c2 -> h1c2"
pass "ping both ways"

make_blob 100
upload_check h1c1 10.200.2.11
pass "100 MiB h1c1 -> h2c1, sha256 matches"
upload_check h2c1 10.200.1.11
pass "100 MiB h2c1 -> h1c1, sha256 matches"

stop_vxgate 1
stop_vxgate 2
arp=$(counter 1 arp_suppressed)
[ "$arp" -gt 0 ] || fail "h1 answered no ARP request locally (the configs give every container's MAC)"
pass "ARP suppression: h1 answered $arp ARP requests for h2's containers itself"
rx=$(counter 2 rx_bytes)
[ "$rx" -gt $(( 100 * 1024 * 1024 )) ] || fail "h2 counted only $rx bytes received"
pass "counters logged at shutdown (h2 rx_bytes=$rx), exit 0 on SIGTERM"
