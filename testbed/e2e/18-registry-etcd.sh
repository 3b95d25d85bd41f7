#!/usr/bin/env bash
# The registry on etcd (issue 8): three hosts, a three-member etcd cluster (one member in each
# host's namespace), each vxgate configured with only its own container and no overlay peers.
# Every host resolves and proxies to every container and finds its peers through etcd; HTTPS
# and DNS keep answering while one member is lost and while the whole cluster is down for
# 10 s; changes made meanwhile converge; a host whose vxgate dies leaves the other hosts'
# DNS and peers within lease_ttl_s (3) + 1 s.
. "$(dirname "$0")/lib.sh"
up --hosts 3 --containers 1 --etcd
for h in 1 2 3; do start_vxgate "$h"; done
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
ips() { on "h$1c1" dig +short +time=1 +tries=1 @"10.200.$1.1" "$2" | sort -u | tr '\n' ' '; }
api() { on "$1" curl -sS --max-time 5 -X "$2" -H 'Content-Type: application/json' "http://127.0.0.1:9180$3" ${4:+-d "$4"}; }

# 1. the fleet: every host sees every web container, and its peers
for h in 1 2 3; do
  got=""
  for _ in $(seq 100); do
    got=$(ips "$h" web.example.com)
    [ "$got" = "10.200.1.11 10.200.2.11 10.200.3.11 " ] && break
    sleep 0.05
  done
  [ "$got" = "10.200.1.11 10.200.2.11 10.200.3.11 " ] || fail "h$h resolves web.example.com to '$got'"
done
peers=$(api h1 GET /v1/overlay/peers)
echo "$peers" | grep -q '"10.99.0.2:4789"' && echo "$peers" | grep -q '"10.99.0.3:4789"' \
  || fail "h1's peers from etcd: $peers"
on h1c1 ping -c 3 -i 0.2 -W 1 10.200.3.11 >/dev/null || fail "h1c1 cannot ping h3c1 over peers from etcd"
seen=""
for _ in $(seq 6); do seen+=" $(https_get web.example.com /)"; done
for c in h1c1 h2c1 h3c1; do
  echo "$seen" | grep -qw "$c" || fail "h1's ingress never reached $c: $seen"
done
pass "3 hosts from etcd: each resolves web to 3 containers; h1 peers with h2 and h3; ping h1c1->h3c1; h1's ingress reached$seen"

# 2. requests flow while etcd members go away
# both loops run until the stop file appears (at most 90 s)
stop=$LOGDIR/stop
on cl /usr/bin/python3 "$TESTBED/https-load.py" "$STATE/h1/tls/self-signed.crt" "$stop" 90 100 > "$LOGDIR/https.txt" 2>&1 &
https_pid=$!
(
  end=$(( $(date +%s) + 90 )) ok=0 bad=0
  while [ "$(date +%s)" -lt "$end" ] && [ ! -e "$stop" ]; do
    for h in 2 3; do
      if [ "$(ips "$h" h1c1.example.com)" = "10.200.1.11 " ]; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    done
    sleep 0.1
  done
  echo "dns ok=$ok failed=$bad"
) > "$LOGDIR/dns.txt" 2>&1 &
dns_pid=$!

sleep 2
kill -9 "$(cat "$STATE/etcd-h3.pid")"
sleep 1
api h2 POST /v1/containers '{"name":"extra","ip":"10.200.2.99","port":80,"labels":{"app":"extra"}}' >/dev/null \
  || fail "add extra on h2"
# if the killed member led the cluster, writes wait for an election, and a client whose
# connection went to that member notices at its 3 s call timeout: allow 10 s
t0=$(now_ms) got=""
while [ $(( $(now_ms) - t0 )) -lt 10000 ]; do
  got=$(ips 1 extra.example.com)
  [ "$got" = "10.200.2.99 " ] && break
  sleep 0.02
done
[ "$got" = "10.200.2.99 " ] || fail "with h3's etcd member down, h2's new container did not reach h1: '$got'"
one_down_ms=$(( $(now_ms) - t0 ))
tb_etcd_start 3
sleep 2

for h in 1 2 3; do kill -9 "$(cat "$STATE/etcd-h$h.pid")"; done
down_at=$(now_ms)
sleep 2
api h2 POST /v1/containers '{"name":"late","ip":"10.200.2.98","port":80,"labels":{"app":"late"}}' >/dev/null \
  || fail "add late on h2 while etcd is down"
[ -z "$(ips 1 late.example.com)" ] || fail "h1 knew late while etcd was down?"
sleep $(( 10 - ($(now_ms) - down_at) / 1000 ))
for h in 1 2 3; do tb_etcd_start "$h"; done
t0=$(now_ms) got=""
while [ $(( $(now_ms) - t0 )) -lt 15000 ]; do
  got=$(ips 1 late.example.com)
  [ "$got" = "10.200.2.98 " ] && break
  sleep 0.05
done
[ "$got" = "10.200.2.98 " ] || fail "after etcd came back, h2's late container did not reach h1"
converge_ms=$(( $(now_ms) - t0 ))
touch "$stop"
wait "$https_pid" || fail "HTTPS through h1 while etcd was away: $(cat "$LOGDIR/https.txt")"
wait "$dns_pid"
grep -q "failed=0" "$LOGDIR/dns.txt" || fail "DNS while etcd was away: $(cat "$LOGDIR/dns.txt")"
errors=$(api h1 GET /metrics | sed -n 's/^vxgate_registry_etcd_errors_total //p')
leader=""
grep -q "put: no answer" "$LOGDIR/vxgate-h2.log" && leader=" (h2's first write got no answer within 3 s, likely during a leader election, and was retried)"
pass "one etcd member killed: a change on h2 reached h1's DNS in ${one_down_ms} ms$leader; whole cluster down 10 s: $(cat "$LOGDIR/https.txt"), $(cat "$LOGDIR/dns.txt") (h2, h3 asking for h1c1), h1 logged $errors etcd errors; a change made meanwhile reached h1 ${converge_ms} ms after etcd restarted"

# 3. a host dies: the others drop it within the lease TTL (3 s) + 1 s
kill -9 "$VX_PID_3"
t0=$(now_ms)
for h in 1 2; do
  while [ -n "$(ips "$h" h3c1.example.com)" ]; do
    [ $(( $(now_ms) - t0 )) -lt 4000 ] || fail "h$h still resolves h3c1 4 s after h3's vxgate died"
    sleep 0.05
  done
done
gone_ms=$(( $(now_ms) - t0 ))
[ "$(ips 1 web.example.com)" = "10.200.1.11 10.200.2.11 " ] || fail "h1's web after h3 left: $(ips 1 web.example.com)"
peers=$(api h1 GET /v1/overlay/peers)
echo "$peers" | grep -q '10.99.0.2' || fail "h2 is not among h1's peers (control): $peers"
echo "$peers" | grep -q '10.99.0.3' && fail "h3 still h1's peer: $peers"
pass "h3's vxgate killed: gone from h1's and h2's DNS and h1's peers after ${gone_ms} ms (lease 3 s)"
