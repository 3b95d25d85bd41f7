#!/usr/bin/env bash
# Docker as a registry source (issue 12), with a real Docker Engine on each of two hosts:
# dockerd 20.10 in each host's namespace, etcd, one "vxnet" bridge network per host (its own
# --ip-range, bridge vxbr0) joined by vxgate's overlay (vxgate attaches its TAP to vxbr0).
# Containers: h1c1, h2c1 (app=web), h2api (app=api, vxgate.port=8080), h1sick (app=web, a
# failing HEALTHCHECK). Shows: every host's DNS answers web.example.com with exactly the
# healthy web containers of both hosts; a container on h1 resolves api.example.com through
# Docker's embedded DNS (which forwards to vxgate) and fetches from h2's container across the
# overlay; the ingress round-robins over both hosts; docker stop -> gone, with no failed
# request after; docker start -> back with its address; dockerd killed -> the last state is
# still served, and after it restarts a new container appears on the other host too; vxgate
# started before dockerd picks the containers up once dockerd is there; h1 reads Docker through
# a GET-only proxy that denies nothing it asks; config/API entries cannot take Docker's names;
# a Docker network deleted and re-created gets vxgate's TAP on its new bridge.
# The fleet is encrypted (issue 29): each vxgate makes its WireGuard key at first start and
# publishes it through etcd, nothing is configured per peer, and the hosts' underlay carries
# WireGuard only (a capture during the cross-host fetches; `vxgate ctl peers`).
# Waits are bounded ("eventually, within N s") and the observed delays are reported.
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1 --docker --encrypt
tb_docker_web 1 h1sick 80 --label app=web --health-cmd false --health-interval 1s --health-retries 1
tb_docker_web 2 h2api 8080 --label app=api --label vxgate.port=8080
# h1's vxgate reads Docker through a GET-only proxy on loopback TCP (least privilege, and the
# tcp:// endpoint); h2's through dockerd's unix socket
ip netns exec "$P-h1" /usr/bin/python3 "$TESTBED/docker-ro-proxy.py" 127.0.0.1:2375 \
  "$(tb_ddir 1)/docker.sock" "$LOGDIR/proxy.txt" >"$LOGDIR/proxy.log" 2>&1 &
sed 's|^endpoint = "unix://.*docker.sock"$|endpoint = "tcp://127.0.0.1:2375"|' "$STATE/h1.toml" > "$LOGDIR/h1.toml"
grep -qx 'endpoint = "tcp://127.0.0.1:2375"' "$LOGDIR/h1.toml" || fail "h1's config has no proxy endpoint"
for _ in $(seq 100); do on h1 curl -s -o /dev/null http://127.0.0.1:2375/version && break; sleep 0.05; done
start_vxgate 1 "$LOGDIR/h1.toml"
start_vxgate 2

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# ips H NAME: the A records host H's vxgate answers for NAME, sorted, space-separated.
ips() { on "h$1" dig +short +time=1 +tries=1 @"10.200.$1.1" "$2" | sort | tr '\n' ' ' | sed 's/ $//'; }
admin() { on "h$1" curl -sS --max-time 5 "http://127.0.0.1:9180$2"; }
# metric H NAME: a sample of host H's /metrics; a missing sample is a failure.
metric() {
  local v
  v=$(admin "$1" /metrics | awk -v n="$2" '$1 == n { print $2 }')
  [ -n "$v" ] || fail "h$1 has no metric $2"
  echo "$v"
}
# eventually SECONDS DESC CMD...: runs CMD every 20 ms until it succeeds; prints the ms it took.
eventually() {
  local secs=$1 desc=$2 t0
  shift 2
  t0=$(now_ms)
  while ! "$@" >/dev/null 2>&1; do
    (( $(now_ms) - t0 < secs * 1000 )) || fail "not within ${secs}s: $desc"
    sleep 0.02
  done
  echo $(( $(now_ms) - t0 ))
}
ips_are() { [ "$(ips "$1" "$2")" = "$3" ]; }
metric_is() { [ "$(metric "$1" "$2")" = "$3" ]; }
sorted() { printf '%s\n' "$@" | sort | tr '\n' ' ' | sed 's/ $//'; }
# reaches NAME: one of 6 requests to web.example.com through h1's ingress lands on NAME
reaches() {
  local seen="" _i
  for _i in $(seq 6); do seen+=" $(https_get web.example.com /)"; done
  echo "$seen" | grep -qw "$1"
}

IP_H1C1=$(tb_docker_ip 1 h1c1) IP_H2C1=$(tb_docker_ip 2 h2c1)
IP_SICK=$(tb_docker_ip 1 h1sick) IP_API=$(tb_docker_ip 2 h2api)
[ -n "$IP_H1C1" ] && [ -n "$IP_H2C1" ] && [ -n "$IP_SICK" ] && [ -n "$IP_API" ] \
  || fail "docker gave no addresses: $IP_H1C1 $IP_H2C1 $IP_SICK $IP_API"
WEB=$(sorted "$IP_H1C1" "$IP_H2C1")

# 1. every host answers web with exactly the healthy web containers of both hosts
for h in 1 2; do
  ms=$(eventually 20 "h$h resolves web.example.com to $WEB (got '$(ips "$h" web.example.com)')" \
    ips_are "$h" web.example.com "$WEB")
  echo "h$h: web.example.com = $WEB after ${ms} ms"
done
# the unhealthy container was seen (positive control), on both hosts, and kept out
for h in 1 2; do
  admin "$h" /v1/containers | /usr/bin/python3 -c '
import json, sys
cs = {c["name"]: c for c in json.load(sys.stdin)}
sick = cs.get("h1sick")
assert sick and sick["ready"] is False, f"h1sick: {sick}"
assert cs["h1c1"]["origin"] == ("docker" if sys.argv[1] == "1" else "remote"), cs["h1c1"]
assert cs["h2api"]["port"] == 8080, cs["h2api"]
' "$h" || fail "h$h's /v1/containers: $(admin "$h" /v1/containers)"
done
[ "$(ips 1 h1sick.example.com)" = "$IP_SICK" ] || fail "h1sick.example.com does not resolve"
tb_docker 1 inspect -f '{{.State.Health.Status}}' h1sick | grep -qx 'unhealthy\|starting' \
  || fail "h1sick is not unhealthy in Docker"
# a config/API container may not take a Docker container's name or IP, nor remove it
code=$(on h1 curl -s -o /dev/null -w '%{http_code}' -X POST -H "Content-Type: application/json" -d "{\"name\":\"h1c1\",\"ip\":\"10.200.1.250\",\"port\":80}" http://127.0.0.1:9180/v1/containers)
[ "$code" = 409 ] || fail "POST of a container named like a Docker one answered $code"
code=$(on h1 curl -s -o /dev/null -w '%{http_code}' -X POST -H "Content-Type: application/json" -d "{\"name\":\"other\",\"ip\":\"$IP_H1C1\",\"port\":80}" http://127.0.0.1:9180/v1/containers)
[ "$code" = 409 ] || fail "POST of a container with a Docker one's IP answered $code"
code=$(on h1 curl -s -o /dev/null -w '%{http_code}' -X DELETE http://127.0.0.1:9180/v1/containers/h1c1)
[ "$code" = 409 ] || fail "DELETE of a Docker container answered $code"
pass "both hosts resolve web to $WEB; h1sick ($IP_SICK, unhealthy in Docker) is listed, not ready, out of web"

# (busybox wget -T segfaults in this static build: the wait is bounded from outside instead)
# 2. a container on h1 resolves api.example.com through Docker's embedded DNS (127.0.0.11
#    forwards to vxgate at 10.200.1.1) and fetches from h2's container across the overlay
tb_docker 1 exec h1c1 cat /etc/resolv.conf | grep -q '127.0.0.11' || fail "h1c1 does not use Docker's DNS"
resolved=$(tb_docker 1 exec h1c1 sh -c 'nslookup api.example.com' 2>&1 | awk '/^Address/ && !/#53|:53$/ {print $2}' | tail -1)
[ "$resolved" = "$IP_API" ] || fail "h1c1 resolved api.example.com to '$resolved', expected $IP_API"
capture_start h1 eth0 'udp and host 10.99.0.1 and host 10.99.0.2' "$LOGDIR/fleet.pcap"
got=$(timeout 20 "$TB_DOCKER" -H "unix://$(tb_ddir 1)/docker.sock" exec h1c1 sh -c 'wget -q -O - http://api.example.com:8080/') || fail "h1c1 cannot fetch from h2api"
[ "$got" = h2api ] || fail "h1c1 fetched '$got' from api.example.com"
got=$(timeout 20 "$TB_DOCKER" -H "unix://$(tb_ddir 2)/docker.sock" exec h2c1 sh -c 'wget -q -O - http://h1c1.example.com/') || fail "h2c1 cannot fetch from h1c1"
[ "$got" = h1c1 ] || fail "h2c1 fetched '$got' from h1c1.example.com"
capture_stop
wgp=$(tcpdump -n -r "$LOGDIR/fleet.pcap" 'udp port 51820' 2>/dev/null | wc -l)
vx=$(tcpdump -n -r "$LOGDIR/fleet.pcap" 'udp port 4789' 2>/dev/null | wc -l)
[ "$wgp" -ge 4 ] || fail "only $wgp WireGuard packets between h1 and h2 during the fetches: $(tcpdump -n -r "$LOGDIR/fleet.pcap" 2>&1 | head -5)"
[ "$vx" = 0 ] || fail "$vx plain VXLAN packets between h1 and h2"
PUB2=$("$VXGATE" key show --config "$STATE/h2.toml" 2>/dev/null)
on h1 "$VXGATE" ctl peers | awk -v k="$PUB2" '$1 == "10.250.0.2" && $2 == k && / up / { f = 1 } END { exit !f }' \
  || fail "h1's ctl peers does not show h2's key from etcd with a session: $(on h1 "$VXGATE" ctl peers)"
pass "h1c1 resolved api.example.com -> $resolved via 127.0.0.11 and fetched 'h2api' across the overlay; h2c1 fetched h1c1; between the hosts $wgp WireGuard packets and 0 UDP 4789; h1's ctl peers shows h2's key (from etcd) with its session up"

# 3. the ingress round-robins over both hosts' containers, never the unhealthy one
seen=""
for _ in $(seq 8); do seen+=" $(https_get web.example.com /)"; done
for c in h1c1 h2c1; do echo "$seen" | grep -qw "$c" || fail "h1's ingress never reached $c: $seen"; done
echo "$seen" | grep -qw h1sick && fail "the ingress sent a request to h1sick: $seen"
[ "$(https_get api.example.com /)" = h2api ] || fail "api.example.com through h1's ingress"
pass "h1's ingress answered from$seen; api.example.com -> h2api:8080"

# HTTPS load on h1's ingress for the rest of the test: every failure is logged with its time
stop=$LOGDIR/stop
on cl /usr/bin/python3 "$TESTBED/https-load.py" "$STATE/h1/tls/self-signed.crt" "$stop" 200 1 > "$LOGDIR/https.txt" 2>&1 &
LOAD=$!
failures_since() { awk -v t="$1" '/^failed at/ { sub(":", "", $3); if ($3 + 0 >= t) n++ } END { print n + 0 }' "$LOGDIR/https.txt"; }

echo "4 $(date +%s.%N)" >> "$LOGDIR/steps"
# 4. docker stop: gone from both hosts' DNS and from the ingress, no failed request after
calls0=$(metric 1 vxgate_docker_api_calls_total)
calls2=$(metric 2 vxgate_docker_api_calls_total)
tb_docker 2 stop -t 1 h2c1 >/dev/null
ms2=$(eventually 10 "h2c1 leaves h2's DNS" ips_are 2 web.example.com "$IP_H1C1")
ms1=$(eventually 10 "h2c1 leaves h1's DNS" ips_are 1 web.example.com "$IP_H1C1")
after=$(date +%s.%N)
sleep 0.3
for _ in $(seq 10); do
  [ "$(https_get web.example.com /)" = h1c1 ] || fail "after docker stop, a request did not land on h1c1"
done
[ "$(failures_since "$after")" = 0 ] || fail "requests failed after h2c1 was gone: $(cat "$LOGDIR/https.txt")"
stop_calls=$(( $(metric 2 vxgate_docker_api_calls_total) - calls2 ))
pass "docker stop h2c1: gone from h2's DNS ${ms2} ms and h1's ${ms1} ms after 'docker stop' returned; 10 requests after, all to h1c1; h2 made $stop_calls Engine API calls for it"

echo "5 $(date +%s.%N)" >> "$LOGDIR/steps"
# 5. docker start: back, with a new address (another container took its old one meanwhile)
tb_docker_web 2 h2tmp 80
[ "$(tb_docker_ip 2 h2tmp)" = "$IP_H2C1" ] || echo "note: h2tmp got $(tb_docker_ip 2 h2tmp), not h2c1's old $IP_H2C1"
calls2=$(metric 2 vxgate_docker_api_calls_total)
tb_docker 2 start h2c1 >/dev/null
NEW=$(tb_docker_ip 2 h2c1)
[ -n "$NEW" ] && [ "$NEW" != "$IP_H2C1" ] || fail "h2c1 has address '$NEW' after docker start (old: $IP_H2C1)"
WEB=$(sorted "$IP_H1C1" "$NEW")
ms2=$(eventually 10 "h2c1 ($NEW) back in h2's DNS" ips_are 2 web.example.com "$WEB")
ms1=$(eventually 10 "h2c1 ($NEW) back in h1's DNS" ips_are 1 web.example.com "$WEB")
start_calls=$(( $(metric 2 vxgate_docker_api_calls_total) - calls2 ))
[ "$start_calls" -le 1 ] || fail "docker start cost $start_calls Engine API calls (expected one inspect)"
# the first request may find h2c1's server not listening yet (ejected, then re-admitted by
# the health checks): a bounded wait, and the time it took is reported
back=$(eventually 10 "the ingress reaches the restarted h2c1" reaches h2c1)
[ "$(ips 1 h2c1.example.com)" = "$NEW" ] || fail "h2c1.example.com is $(ips 1 h2c1.example.com), expected $NEW"
pass "docker start h2c1: $IP_H2C1 -> $NEW; in h2's DNS after ${ms2} ms, h1's after ${ms1} ms; $start_calls API call; the ingress reached it after ${back} ms"
IP_H2C1=$NEW
tb_docker 2 rm -f h2tmp >/dev/null
events=$(admin 2 /metrics | grep '^vxgate_docker_events_total' | awk '$2 > 0 {printf "%s ", $0}')
echo "$events" | grep -q 'type="start"} [1-9]' && echo "$events" | grep -q 'type="die"} [1-9]' \
  || fail "h2 did not count its start and die events: $events"

echo "6 $(date +%s.%N)" >> "$LOGDIR/steps"
# 6. dockerd killed (--live-restore keeps the containers): the last state is served
tb_dockerd_stop 2 KILL
noticed=$(eventually 10 "h2 notices that dockerd is gone" metric_is 2 vxgate_docker_connected 0)
grep -q "docker: .*serving the last known state" "$LOGDIR/vxgate-h2.log" || fail "no outage log line on h2"
sleep 1
for h in 1 2; do
  [ "$(ips "$h" web.example.com)" = "$WEB" ] || fail "h$h dropped containers while dockerd was down: $(ips "$h" web.example.com)"
done
kept=$(eventually 10 "the ingress reaches h2c1 while dockerd is down" reaches h2c1)
tb_dockerd_start 2
tb_docker_web 2 h2web2 80 --label app=web
IP_W2=$(tb_docker_ip 2 h2web2)
WEB=$(sorted "$IP_H1C1" "$IP_H2C1" "$IP_W2")
ms=$(eventually 20 "h2web2 ($IP_W2) in h1's DNS after dockerd came back" ips_are 1 web.example.com "$WEB")
[ "$(metric 2 vxgate_docker_connected)" = 1 ] || fail "h2 not connected again"
[ "$(metric 2 vxgate_docker_resyncs_total)" -ge 2 ] || fail "h2 did not resync"
pass "dockerd on h2 killed: h2 noticed in ${noticed} ms and both hosts kept serving the last state (the ingress reached h2c1 after ${kept} ms); restarted, h2web2 (started after) reached h1's DNS ${ms} ms after docker run returned"

echo "7 $(date +%s.%N)" >> "$LOGDIR/steps"
# 7. vxgate started while dockerd is down picks the containers up once dockerd is there
stop_vxgate 2
tb_dockerd_stop 2
start_vxgate 2
[ "$(metric 2 vxgate_docker_connected)" = 0 ] || fail "h2 connected to a stopped dockerd"
[ "$(metric 2 vxgate_docker_containers_published)" = 0 ] || fail "h2 published containers without dockerd"
grep -q "docker: .*serving the last known state" "$LOGDIR/vxgate-h2.log" || fail "no log line on h2 about the missing dockerd"
[ "$(ips 1 web.example.com)" = "$IP_H1C1" ] || fail "h1 still has h2's containers from a vxgate that has none: $(ips 1 web.example.com)"
t0=$(now_ms)
tb_dockerd_start 2
ms=$(eventually 20 "h1 resolves h2's containers again" ips_are 1 web.example.com "$WEB")
[ "$(metric 2 vxgate_docker_containers_published)" = 3 ] || fail "h2 publishes $(metric 2 vxgate_docker_containers_published) containers, expected 3 (h2c1, h2api, h2web2)"
pass "vxgate on h2 started before dockerd: h1 resolves web to $WEB ${ms} ms after dockerd answered ($(( $(now_ms) - t0 )) ms after dockerd was started)"

echo "8 $(date +%s.%N)" >> "$LOGDIR/steps"
# 8. h1 only ever read from Docker: everything went through the GET-only proxy, which denied
#    nothing, and events flowed through it (a container started on h1 appears)
tb_docker_web 1 h1extra 80 --label app=extra
IP_X=$(tb_docker_ip 1 h1extra)
ms=$(eventually 10 "h1extra in h1's DNS through the proxy" ips_are 1 extra.example.com "$IP_X")
allowed=$(grep -c '^ALLOW GET' "$LOGDIR/proxy.txt" || true)
denied=$(grep -c '^DENY' "$LOGDIR/proxy.txt" || true)
# (bollard 0.21 sends unversioned paths, which dockerd serves at its own API version)
v='(/v[0-9.]+)?'
grep -Eq "^ALLOW GET $v/events\?" "$LOGDIR/proxy.txt" && grep -Eq "^ALLOW GET $v/containers/json" "$LOGDIR/proxy.txt" \
  && grep -Eq "^ALLOW GET $v/containers/[0-9a-f]{64}/json" "$LOGDIR/proxy.txt" || fail "h1's requests: $(cat "$LOGDIR/proxy.txt")"
[ "$denied" = 0 ] || fail "the proxy denied vxgate's requests: $(grep DENY "$LOGDIR/proxy.txt")"
[ "$(metric 1 vxgate_docker_api_calls_total)" -le "$allowed" ] || fail "h1 counted more API calls than the proxy saw"
code=$(on h1 curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:2375/v1.41/containers/create)
[ "$code" = 403 ] && grep -q '^DENY POST' "$LOGDIR/proxy.txt" || fail "the proxy let a POST through ($code)"
pass "h1 read Docker through a GET-only proxy: $allowed GETs, 0 denied (a POST control was denied); h1extra in DNS ${ms} ms after docker run"

echo "9 $(date +%s.%N)" >> "$LOGDIR/steps"
# 9. the Docker network re-created on h2: its new bridge gets vxgate's TAP again (the bridge
#    follower), and the hosts reach each other over it
ids=$(tb_docker 2 ps -aq)
tb_docker 2 rm -f $ids >/dev/null
tb_docker 2 network rm vxnet >/dev/null
eventually 10 "vxbr0 gone on h2" sh -c "! ip -n '$P-h2' link show vxbr0" >/dev/null
tb_docker 2 network create --subnet 10.200.0.0/16 --ip-range 10.200.2.0/24 --gateway 10.200.2.1 \
  --aux-address zero=10.200.2.0 -o com.docker.network.bridge.name=vxbr0 \
  -o com.docker.network.driver.mtu=1390 vxnet >/dev/null
ms=$(eventually 10 "h2's TAP back in the new vxbr0" sh -c "ip -n '$P-h2' link show vxg0 | grep -q 'master vxbr0'")
grep -q "overlay: TAP attached again, to the re-created bridge" "$LOGDIR/vxgate-h2.log" || fail "h2 did not log the re-attachment"
tb_docker_web 2 h2new 80 --label app=new
IP_NEW=$(tb_docker_ip 2 h2new)
eventually 10 "h2new in h1's DNS" ips_are 1 new.example.com "$IP_NEW" >/dev/null
got=$(timeout 20 "$TB_DOCKER" -H "unix://$(tb_ddir 1)/docker.sock" exec h1c1 sh -c 'wget -q -O - http://new.example.com/') \
  || fail "h1c1 cannot reach h2new over the re-created network"
[ "$got" = h2new ] || fail "h1c1 fetched '$got' from new.example.com"
pass "vxnet re-created on h2: TAP attached to the new vxbr0 ${ms} ms after 'network create' returned; h1c1 fetched h2new across it"

touch "$stop"
load_rc=0
wait "$LOAD" || load_rc=$?
load=$(tail -1 "$LOGDIR/https.txt")
echo "$load" | grep -q '^https ok=[1-9]' || fail "the HTTPS load did not run: $(cat "$LOGDIR/https.txt")"
# each failed request, with the step it happened in
awk 'NR == FNR { t[NR] = $2; n[NR] = $1; k = NR; next }
     /^failed at/ { at = $3; sub(":", "", at); s = "1-3"; for (i = 1; i <= k; i++) if (at + 0 >= t[i]) s = n[i]; print "request failed in step " s ": " $0 }' \
  "$LOGDIR/steps" "$LOGDIR/https.txt"
[ "$load_rc" = 0 ] && echo "$load" | grep -q 'failed=0$' || fail "requests failed under the changes: $load"
pass "HTTPS load on h1 over the whole test: $load; h2's events up to step 5: $events"
