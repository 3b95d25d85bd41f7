#!/usr/bin/env bash
# Policy from Docker labels (issue 31), on the e2e 21 setup: dockerd (--iptables=false) on two
# hosts, etcd, one vxnet bridge per host joined by vxgate's overlay; the checks of e2e 35 with
# Docker containers. On h2 an api container labelled vxgate.allow_from=web:8080: h1's web
# container fetches from it across the overlay, on 8080 but not 9090, h1's "other" container
# cannot (the connection times out; h2 logs the flow once) and h2's own web can; the ingress
# gets 502/503 from it. On h1 a db labelled vxgate.allow_from=api: h2's api reaches it, web on
# either host does not, and db's own outbound connections pass.
# "other" forging h2's web address reaches nothing (h1's source validation drops it; the real
# web's packets are seen: the positive control). h2's vxgate killed with SIGKILL: the rules
# stay; restarted: replaced, not doubled. Re-run with web:8080,ingress: the ingress serves it
# (a label change by restart holds within 1 s of Docker's event). h2's network isolated: the
# unlabelled web on h2 closed, its own connections pass. Re-run without the label: it takes
# everyone again and the table is gone.
. "$(dirname "$0")/lib.sh"
command -v nft >/dev/null || fail "nft is missing (apt-get install nftables)"
up --hosts 2 --containers 1 --docker
tb_docker_web 1 other 80 --label app=other
tb_docker_web 2 h2api 8080 --label app=api --label vxgate.port=8080 --label vxgate.allow_from=web:8080
# db on h1 takes connections from api alone (any port)
tb_docker_web 1 h1db 80 --label app=db --label vxgate.allow_from=api
start_vxgate 1
start_vxgate 2
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# fetch H CONTAINER URL: wget inside a Docker container of host H (5 s)
fetch() { timeout 5 "$TB_DOCKER" -H "unix://$(tb_ddir "$1")/docker.sock" exec "$2" wget -q -O - "$3" 2>/dev/null; }
table_of() { on "h$1" nft list table inet vxgate 2>/dev/null; }
has_rules() { table_of 2 | grep -q "jump p"; }
for _ in $(seq 200); do has_rules && break; sleep 0.05; done
has_rules || fail "h2 has no policy table for h2api: $(on h2 curl -s http://127.0.0.1:9180/v1/policy)"
api=$(tb_docker_ip 2 h2api)
[ -n "$api" ] || fail "no address for h2api"
got=""
for _ in $(seq 40); do got=$(fetch 1 h1c1 "http://$api:8080/" || true); [ "$got" = h2api ] && break; sleep 0.25; done
[ "$got" = h2api ] || fail "h1's web could not fetch from h2api:8080: '$got'"
[ "$(fetch 2 h2c1 "http://$api:8080/" || true)" = h2api ] || fail "h2's web could not fetch from h2api:8080"
if fetch 1 other "http://$api:8080/" >/dev/null; then fail "h1's other container reached h2api"; fi
# api answers on 9090 too: web may not reach that port
tb_docker 2 exec -d h2api httpd -p 9090 -h /w
db=$(tb_docker_ip 1 h1db)
got=""
for _ in $(seq 40); do got=$(fetch 2 h2api "http://$db/" || true); [ "$got" = h1db ] && break; sleep 0.25; done
[ "$got" = h1db ] || fail "h2's api could not fetch from h1's db: '$got'"
if fetch 1 h1c1 "http://$db/" >/dev/null; then fail "h1's web reached h1's db (same host)"; fi
if fetch 2 h2c1 "http://$db/" >/dev/null; then fail "h2's web reached h1's db (across hosts)"; fi
if fetch 1 h1c1 "http://$api:9090/" >/dev/null; then fail "h1's web reached h2api:9090"; fi
[ "$(fetch 2 h2api "http://127.0.0.1:9090/" || true)" = h2api ] || fail "h2api's 9090 does not answer (the refusal above proves nothing)"
[ "$(fetch 1 h1db "http://$(tb_docker_ip 2 h2c1)/" || true)" = h2c1 ] || fail "h1's db could not open its own connection to h2's web"
policy=$(on h2 curl -s http://127.0.0.1:9180/v1/policy)
echo "$policy" | grep -q '"container": "h2api"' || fail "GET /v1/policy does not list h2api: $policy"
flows=$(grep 'policy: refused a new flow from other to api' "$LOGDIR/vxgate-h2.log" | grep -F 'from_container=other ' \
  | grep -cF "dst=$api:8080 " || true)
[ "$flows" -ge 1 ] || fail "h2 logged no refused flow from other to h2api: $(grep refused "$LOGDIR/vxgate-h2.log" | tail -3)"
pass "Docker labels: h2api (vxgate.allow_from=web:8080) answers h1's and h2's web on 8080, not on 9090, not h1's other (logged: $flows flow lines); h1db (allow_from=api) answers h2's api, not web on either host; db's own connections pass; /v1/policy lists them"

# the ingress: api does not list it -> no backend
ingress_api() { on cl curl -sk -o /dev/null -w '%{http_code}' --max-time 10 --resolve "api.example.com:443:10.99.0.$1" https://api.example.com/ || true; }
code=$(ingress_api 1)
case $code in 502|503|504) ;; *) fail "h1's ingress reached h2api without 'ingress' in its label: $code" ;; esac

# source validation: h1's other poses as h2's web (h2c1) toward h2api; h1 drops the frames
# at its TAP (counted), h2api's namespace sees none; h1's real web is seen (positive control)
IP_OTHER=$(tb_docker_ip 1 other) IP_H1C1=$(tb_docker_ip 1 h1c1) IP_H2C1=$(tb_docker_ip 2 h2c1)
attach() { ip netns attach "$P-$1" "$(tb_docker "$2" inspect -f '{{.State.Pid}}' "$3")"; }
attach d1other 1 other
attach d2api 2 h2api
api_mac=$(tb_docker 2 inspect -f '{{with index .NetworkSettings.Networks "vxnet"}}{{.MacAddress}}{{end}}' h2api)
on d1other ip addr add "$IP_H2C1/32" dev eth0
on d1other ip neigh replace "$api" lladdr "$api_mac" dev eth0
forged_drops() { on h1 curl -s http://127.0.0.1:9180/metrics | sed -n 's/^vxgate_overlay_drops_total{network="default",reason="forged_source"} //p'; }
d0=$(forged_drops)
[ -n "$d0" ] || fail "no forged_source drop counter on h1"
forged=$(pcap_count d2api eth0 "tcp port 8080 and src host $IP_H2C1" "$IP_H2C1" 4 \
  bash -c "! ip netns exec $P-d1other curl -s --interface $IP_H2C1 --max-time 2 http://$api:8080/")
[ "$forged" = 0 ] || fail "h2api's namespace saw $forged forged packets"
d1=$(forged_drops)
[ "$d1" -gt "$d0" ] || fail "h1 counted no forged frame ($d0 -> $d1)"
real=$(pcap_count d2api eth0 "tcp port 8080 and src host $IP_H1C1" "$IP_H1C1" 4 fetch 1 h1c1 "http://$api:8080/")
[ "$real" -gt 0 ] 2>/dev/null || fail "h1's real web was not seen in h2api's namespace: $real"
on d1other ip addr del "$IP_H2C1/32" dev eth0
pass "forged source: h1's other posing as h2's web toward h2api: 0 packets in h2api's namespace, h1 dropped $(( d1 - d0 )) (forged_source); the real web: $real packets seen; ingress without 'ingress' -> $code"

# SIGKILL: the rules stay; a restart replaces them, not doubled
before=$(table_of 2 | grep -c "jump p")
kill -9 "$VX_PID_2"; wait "$VX_PID_2" 2>/dev/null || true
[ "$(table_of 2 | grep -c "jump p")" = "$before" ] || fail "h2's table changed when vxgate died"
if fetch 1 other "http://$api:8080/" >/dev/null; then fail "h1's other reached h2api while h2's vxgate was down"; fi
start_vxgate 2
applied_once() { [ "$(on h2 curl -s http://127.0.0.1:9180/metrics | sed -n 's/^vxgate_policy_applied_total //p')" -ge 1 ] 2>/dev/null; }
for _ in $(seq 100); do applied_once && break; sleep 0.05; done
applied_once || fail "the restarted vxgate on h2 applied no table"
after=$(table_of 2 | grep -c "jump p")
[ "$after" = "$before" ] || fail "after the restart h2 has $after jumps, $before before"
[ "$(on h2 nft list tables | grep -c 'inet vxgate')" = 1 ] || fail "two tables after the restart"
if fetch 1 other "http://$api:8080/" >/dev/null; then fail "h1's other reached h2api after the restart"; fi
[ "$(fetch 1 h1c1 "http://$api:8080/" || true)" = h2api ] || fail "h1's web lost h2api after the restart"
pass "h2's vxgate killed: its $before rules stayed (other still refused); restarted: replaced, one table, $after rules"

# re-run with 'ingress' listed: the ingress serves it, other is still refused
tb_docker 2 rm -f h2api >/dev/null
ip netns del "$P-d2api"
tb_docker_web 2 h2api 8080 --label app=api --label vxgate.port=8080 --label vxgate.allow_from=web:8080,ingress
api=$(tb_docker_ip 2 h2api)
served=""
for h in 1 2; do
  for _ in $(seq 100); do served=$(on cl curl -sk --max-time 2 --resolve "api.example.com:443:10.99.0.$h" https://api.example.com/ || true); [ "$served" = h2api ] && break; sleep 0.1; done
  [ "$served" = h2api ] || fail "h$h's ingress does not serve h2api with 'ingress' listed: '$served'; h2's ingress set: $(table_of 2 | grep -A2 ingress_v4 | tr '\n\t' '  ')"
done
if fetch 1 other "http://$api:8080/" >/dev/null; then fail "h1's other reached h2api (web:8080,ingress)"; fi
pass "h2api re-run with vxgate.allow_from=web:8080,ingress: both hosts' ingresses serve it, other still refused"

# an isolated network: h2's unlabelled web closes to h1, its own connections pass
set_isolated() {
  sed -i '/^policy = "isolated"$/d' "$STATE/h2.toml"
  [ "$1" = on ] && sed -i '/^tap = "vxg0"$/a policy = "isolated"' "$STATE/h2.toml"
  kill -HUP "$VX_PID_2"
}
set_isolated on
closed=""
for _ in $(seq 40); do fetch 1 h1c1 "http://$IP_H2C1/" >/dev/null || { closed=1; break; }; sleep 0.25; done
[ -n "$closed" ] || fail "h2's unlabelled web still answers h1's web with the network isolated"
[ "$(fetch 2 h2c1 "http://$IP_H1C1/" || true)" = h1c1 ] || fail "h2's web could not reach h1's web (its own connection) while isolated"
set_isolated off
got=""
for _ in $(seq 40); do got=$(fetch 1 h1c1 "http://$IP_H2C1/" || true); [ "$got" = h2c1 ] && break; sleep 0.25; done
[ "$got" = h2c1 ] || fail "h2's web stayed closed after the network was opened again: '$got'"
pass "h2's network isolated: its unlabelled web refused from h1, its own connections pass; open again after"

# re-run without the label: open again, and the table gone
tb_docker 2 rm -f h2api >/dev/null
t0=$(now_ms)
tb_docker_web 2 h2api 8080 --label app=api --label vxgate.port=8080
gone() { ! table_of 2 >/dev/null; }
for _ in $(seq 200); do gone && break; sleep 0.05; done
gone || fail "h2's table stayed after the label went away"
gone_ms=$(( $(now_ms) - t0 ))
api=$(tb_docker_ip 2 h2api)
got=""
for _ in $(seq 40); do got=$(fetch 1 other "http://$api:8080/" || true); [ "$got" = h2api ] && break; sleep 0.25; done
[ "$got" = h2api ] || fail "h1's other could not fetch from the unlabelled h2api: '$got'"
pass "h2api re-run without the label: the table gone ${gone_ms} ms after docker run (rm and run included), h1's other reaches it"
