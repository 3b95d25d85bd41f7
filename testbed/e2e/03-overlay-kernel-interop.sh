#!/usr/bin/env bash
# Interop with the Linux kernel's vxlan: h1 runs vxgate, h2 has the kernel's vxlan device
# (VNI 42, dstport 4789) on its bridge instead. ARP resolves, ping, and 100 MiB transfers
# with checksums, both ways (issue: overlay, 6b).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1 --kernel-vxlan 2
# Offloads stay on: the kernel side's veth hands vxgate TCP segments whose checksum is still
# partial (a real NIC would finish it); vxgate must complete them (counted below).
# h1's vxgate learns everything (no static entries, no ARP suppression): strip the MACs
grep -v '^mac = ' "$STATE/h1.toml" > "$STATE/h1-learn.toml"
start_vxgate 1 "$STATE/h1-learn.toml"

on h1c1 ping -c 3 -i 0.2 -W 2 10.200.2.11 >/dev/null || fail "ping vxgate side -> kernel side"
on h1c1 ip neigh show 10.200.2.11 | grep -q "02:00:0a:c8:02:0b" \
  || fail "ARP on the vxgate side did not resolve 10.200.2.11 to h2c1's MAC: $(on h1c1 ip neigh)"
on h2c1 ip neigh show 10.200.1.11 | grep -q "02:00:0a:c8:01:0b" \
  || fail "ARP on the kernel side did not resolve 10.200.1.11: $(on h2c1 ip neigh)"
on h2c1 ping -c 3 -i 0.2 -W 2 10.200.1.11 >/dev/null || fail "ping kernel side -> vxgate side"
pass "ARP resolves and ping works both ways between vxgate and the kernel's vxlan"

learned() { on h2 bridge fdb show dev vxk | grep -q "02:00:0a:c8:01:0b dst 10.99.0.1"; }
for _ in $(seq 20); do learned && break; sleep 0.1; done
learned || fail "the kernel did not learn h1c1 behind vxgate: $(on h2 bridge fdb show dev vxk)"
pass "the kernel's vxlan learned h1c1 behind 10.99.0.1"

# what vxgate puts on the wire parses as VXLAN for tcpdump too: I flag, VNI 42, source
# port in 49152-65535
cap=$LOGDIR/wire.txt
on h2 timeout 3 tcpdump -i eth0 -n -c 4 -v 'udp dst port 4789 and src host 10.99.0.1' >"$cap" 2>/dev/null &
tcpd=$!
sleep 0.5
on h1c1 ping -c 3 -i 0.2 -W 2 10.200.2.11 >/dev/null
wait "$tcpd" || true
grep -q "VXLAN, flags \[I\] (0x08), vni 42" "$cap" || fail "tcpdump does not see VXLAN vni 42: $(cat "$cap")"
sport=$(grep -o '10\.99\.0\.1\.[0-9]* > 10\.99\.0\.2\.4789' "$cap" | head -1 | cut -d. -f5 | cut -d' ' -f1)
[ -n "$sport" ] && [ "$sport" -ge 49152 ] || fail "source port $sport not in 49152-65535"
pass "on the wire: VXLAN flags [I], vni 42, source port $sport"

make_blob 100
upload_check h1c1 10.200.2.11
pass "100 MiB vxgate -> kernel, sha256 matches"
upload_check h2c1 10.200.1.11
pass "100 MiB kernel -> vxgate, sha256 matches"
stop_vxgate 1
done=$(counter 1 checksum_completed)
[ "$done" -gt 0 ] || fail "expected partial checksums from the kernel side to be completed"
seg=$(counter 1 segmented)
# the kernel's veth hands its vxlan device TSO super-frames; vxgate must have cut some
[ "$seg" -gt 0 ] || fail "no TCP super-frame from the kernel's side was cut (segmented=$seg)"
pass "vxgate completed $done partial checksums and cut $seg TCP super-frames from the kernel's side"

# The same with the kernel side's underlay checksumming in software (ethtool tx off):
# complete checksums arrive, none needs completing, and transfers still verify.
up --hosts 2 --containers 1 --kernel-vxlan 2
on h2 ethtool -K eth0 tx off >/dev/null
start_vxgate 1 "$STATE/h1.toml"
upload_check h2c1 10.200.1.11
upload_check h1c1 10.200.2.11
stop_vxgate 1
[ "$(counter 1 checksum_completed)" = 0 ] || fail "complete checksums were rewritten"
pass "with the underlay's checksum offload off: 100 MiB both ways, no checksum rewritten"
