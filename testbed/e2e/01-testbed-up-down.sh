#!/usr/bin/env bash
# testbed/up.sh builds the documented topology, and down.sh leaves nothing behind:
# no namespace, no link, no netns resolv.conf, no process, no state.
. "$(dirname "$0")/lib.sh"

links_before=$(ip -o link show | wc -l)
up --hosts 2 --containers 2

[ "$(tb_namespaces | wc -l)" = 8 ] || fail "expected 8 namespaces, got: $(tb_namespaces | xargs)"
on h1 ip -br addr show br0 | grep -q "10.200.1.1/16" || fail "h1 br0 address"
on h2c2 ip -br addr show eth0 | grep -q "10.200.2.12/16" || fail "h2c2 address"
[ "$(on h1c1 cat /sys/class/net/eth0/mtu)" = 1450 ] || fail "container MTU"
grep -q "nameserver 10.200.2.1" "/etc/netns/$P-h2c1/resolv.conf" || fail "resolv.conf"
[ "$(on h1c2 curl -s --max-time 5 http://10.200.1.11/)" = h1c1 ] || fail "backend h1c1 does not answer with its name"
on cl ping -c1 -W2 10.99.0.2 >/dev/null || fail "client cannot reach h2 on the underlay"
"$VXGATE" check --config "$STATE/h1.toml" >/dev/null || fail "generated config rejected"
pass "topology as documented"

# up.sh again cleans the leftovers of the first run (as after a crash) and succeeds
up --hosts 1 --containers 1
[ "$(tb_namespaces | wc -l)" = 4 ] || fail "leftovers after re-up: $(tb_namespaces | xargs)"
pass "up.sh removes leftovers first"

backend_pid=$(cat "$STATE/h1c1.pid")
"$TESTBED/down.sh" --prefix "$P" >/dev/null
[ -z "$(tb_namespaces)" ] || fail "namespaces left: $(tb_namespaces | xargs)"
ls /etc/netns/"$P"-* >/dev/null 2>&1 && fail "netns resolv.conf left"
[ -e "$STATE" ] && fail "state dir left"
alive "$backend_pid" && fail "backend process $backend_pid left running"
[ "$(ip -o link show | wc -l)" = "$links_before" ] || fail "root namespace links changed"
pass "down.sh leaves nothing behind"
