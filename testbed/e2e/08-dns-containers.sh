#!/usr/bin/env bash
# A container resolves names through its resolv.conf (its host's br0 address, where vxgate's
# DNS listens): web.example.com gives the web containers of both hosts, and curl reaches the
# service by name through the overlay (issue: DNS, 6).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 2
start_vxgate 1
start_vxgate 2

got=$(on h1c2 getent ahosts web.example.com | awk '{print $1}' | sort -u | xargs)
[ "$got" = "10.200.1.11 10.200.2.11" ] || fail "h1c2 resolved web.example.com to '$got'"
got=$(on h2c1 getent ahosts api.example.com | awk '{print $1}' | sort -u | xargs)
[ "$got" = "10.200.1.12 10.200.2.12" ] || fail "h2c1 resolved api.example.com to '$got'"
pass "web.example.com and api.example.com resolve to containers on both hosts (getent, resolv.conf)"

[ "$(on h1c1 getent hosts h2c2.example.com | awk '{print $1}')" = 10.200.2.12 ] || fail "container name"
pass "container names resolve"

# (glibc sorts the addresses by RFC 6724 prefix match, so curl by service name picks the
# same-host container; the other host's is reached by its container name)
got=$(on h1c2 curl -s --max-time 5 http://web.example.com/)
[[ $got == h?c1 ]] || fail "curl web.example.com answered '$got'"
got=$(on h1c2 curl -s --max-time 5 http://h2c1.example.com/)
[ "$got" = h2c1 ] || fail "curl h2c1.example.com answered '$got'"
pass "curl by name: web.example.com answered by $(on h1c2 curl -s --max-time 5 http://web.example.com/), h2c1.example.com by h2c1 across the overlay"

out=$(on h1c1 dig +time=2 +tries=1 nope.example.com)
[[ $out == *"status: NXDOMAIN"* ]] || fail "NXDOMAIN expected: $out"
pass "NXDOMAIN for names that do not exist in the zone"
