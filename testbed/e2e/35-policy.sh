#!/usr/bin/env bash
# Policy between services (issue 31): labels say who may open connections to whom, enforced
# by each host's nftables for its own containers (table inet vxgate, bridged traffic through
# br_netfilter). Two hosts on etcd, on each: c1 web, c2 api (vxgate.allow_from = "web:8080"),
# c3 db (vxgate.allow_from = "api"), c4 other. web->api:8080 and api->db pass on the same
# host and across hosts; web->db, other->api, web->api:9090 and api->api:9090 do not; db's
# own connections and every reply do. The ingress gets api only once `ingress` is listed. A
# label change holds within 1 s; SIGKILL leaves the table, a restart replaces it (not
# doubled); an isolated network closes what no label opens; without labels the table is gone
# and every connection passes again (the positive control); `vxgate policy flush` removes it.
. "$(dirname "$0")/lib.sh"
command -v nft >/dev/null || fail "nft is missing (apt-get install nftables)"
up --hosts 2 --containers 4 --etcd
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# set_labels H CONTAINER LABELS: the [[containers]] entry's labels in host H's config
set_labels() {
  /usr/bin/python3 - "$STATE/h$1.toml" "$2" "$3" <<'PY'
import re, sys
path, name, labels = sys.argv[1:]
text = open(path).read()
block = re.compile(r'(name = "%s"\n(?:.*\n)*?)labels = \{[^}]*\}' % re.escape(name))
new, n = block.subn(lambda m: m.group(1) + "labels = { %s }" % labels, text, count=1)
assert n == 1, name
open(path, "w").write(new)
PY
}
# set_isolated H on|off: the network's policy in host H's config
set_isolated() {
  sed -i '/^policy = "isolated"$/d' "$STATE/h$1.toml"
  [ "$2" = on ] && sed -i '/^tap = "vxg0"$/a policy = "isolated"' "$STATE/h$1.toml"
  return 0
}
labelled() {
  for h in 1 2; do
    set_labels "$h" "h${h}c1" 'app = "web"'
    set_labels "$h" "h${h}c2" "app = \"api\", \"vxgate.allow_from\" = \"$1\""
    set_labels "$h" "h${h}c3" 'app = "db", "vxgate.allow_from" = "api"'
    set_labels "$h" "h${h}c4" 'app = "other"'
  done
}
labelled "web:8080"
for h in 1 2; do
  # api answers on 8080 and 9090 too
  for port in 8080 9090; do
    on "h${h}c2" /usr/bin/python3 -m http.server "$port" --bind 0.0.0.0 >/dev/null 2>&1 &
  done
  [ "$(on "h$h" cat /proc/sys/net/bridge/bridge-nf-call-iptables)" = 1 ] \
    || fail "bridged traffic is not filtered in h$h (bridge-nf-call-iptables)"
done
ip_of() { tb_cip "${1:1:1}" "${1:3}"; }   # h2c3 -> 10.200.2.13
# reach FROM TO PORT: an HTTP answer within 2 s
reach() { on "$1" curl -s -o /dev/null --max-time 2 "http://$(ip_of "$2"):$3/"; }
table_of() { on "h$1" nft list table inet vxgate 2>/dev/null; }
wait_for() {  # DESCRIPTION CMD...: until CMD succeeds (10 s); prints the ms it took
  local what=$1 t0; shift; t0=$(now_ms)
  until "$@"; do
    [ $(( $(now_ms) - t0 )) -lt 10000 ] || fail "$what: not within 10 s"
    sleep 0.05
  done
  echo $(( $(now_ms) - t0 ))
}
# before any policy: the listeners answer (and the table is not there yet)
for h in 1 2; do
  for port in 8080 9090; do wait_for "h${h}c2 listens on $port" reach "h${h}c4" "h${h}c2" "$port" >/dev/null; done
  table_of "$h" >/dev/null && fail "h$h has a vxgate table before vxgate ran"
done
for h in 1 2; do start_vxgate "$h"; done
has_rules() { table_of "$1" | grep -q "jump p"; }
for h in 1 2; do wait_for "h$h's table" has_rules "$h" >/dev/null; done
# every host knows the other's gateway (published through etcd): its ingress's source
knows_h1() { table_of 2 | grep -A3 'set ingress_v4' | grep -Eq '[{ ]10\.200\.1\.1[ ,}]'; }
wait_for "h1's gateway in h2's table" knows_h1 >/dev/null

must() { reach "$1" "$2" "$3" || fail "$1 -> $2:$3 refused, but the policy allows it"; }
mustnt() { if reach "$1" "$2" "$3"; then fail "$1 -> $2:$3 answered, but the policy forbids it"; fi; }
allowed=( "h1c1 h1c2 8080" "h1c1 h2c2 8080" "h2c1 h1c2 8080" "h1c2 h1c3 80" "h1c2 h2c3 80"
          "h1c3 h1c1 80" "h1c3 h2c1 80" "h2c3 h1c4 80" )
denied=( "h1c1 h1c3 80" "h1c1 h2c3 80" "h1c4 h1c2 8080" "h1c4 h2c2 8080" "h1c1 h1c2 9090"
         "h1c2 h2c2 9090" "h2c4 h1c3 80" )
for c in "${allowed[@]}"; do must $c; done
for c in "${denied[@]}"; do mustnt $c; done
web_db() { on h2 curl -s http://127.0.0.1:9180/metrics | sed -n 's/^vxgate_policy_dropped_packets_total{from="web",to="db"} //p'; }
seen_drops() { [ "$(web_db)" -gt 0 ] 2>/dev/null; }
wait_for "h2's web->db drop counter" seen_drops >/dev/null
drops="$(web_db) packets web->db"
# one line per refused flow, naming both sides (web on h1 tried db on h2 once: its SYN and
# the retransmissions are one flow, logged once)
flow_lines=$(grep 'policy: refused a new flow from web to db' "$LOGDIR/vxgate-h2.log" | grep -F 'from_container=h1c1 ' \
  | grep -F 'to_container=h2c3 ' | grep -cF 'dst=10.200.2.13:80 ' || true)
[ "$flow_lines" = 1 ] || { grep 'refused' "$LOGDIR/vxgate-h2.log" | tail -5; fail "h2 logged $flow_lines lines for the one refused h1c1 -> h2c3:80 flow (want 1)"; }
other_api=$(on h2 curl -s http://127.0.0.1:9180/metrics | sed -n 's/^vxgate_policy_dropped_packets_total{from="other",to="api"} //p')
[ "${other_api:-0}" -gt 0 ] || fail "h2 counted no other->api drops: '$other_api'"
pass "web->api:8080 and api->db on one host and across hosts, db's own connections: allowed; web->db, other->api, web->api:9090, api->api:9090, other->db: refused (h2 counted $drops and $other_api other->api, and logged the h1c1 -> h2c3 flow once)"

# source validation: "other" on h1 forges h2's web address toward api on h2; h1 drops the
# frames at its TAP (counted) and api's namespace sees none; the real web container's SYNs
# are seen there (the positive control)
on h1c4 ip addr add 10.200.2.11/32 dev eth0
on h1c4 ip neigh replace 10.200.2.12 lladdr "$(tb_cmac 2 2)" dev eth0
forged_drops() { on h1 curl -s http://127.0.0.1:9180/metrics | sed -n 's/^vxgate_overlay_drops_total{network="default",reason="forged_source"} //p'; }
d0=$(forged_drops)
[ -n "$d0" ] || fail "no forged_source drop counter on h1"
forged=$(pcap_count h2c2 eth0 "tcp port 8080 and src host 10.200.2.11" "10.200.2.11" 4 \
  bash -c "! ip netns exec $P-h1c4 curl -s --interface 10.200.2.11 --max-time 2 http://10.200.2.12:8080/")
[ "$forged" = 0 ] || fail "api's namespace saw $forged forged packets"
d1=$(forged_drops)
[ "$d1" -gt "$d0" ] || fail "h1 counted no forged frame ($d0 -> $d1)"
real=$(pcap_count h2c2 eth0 "tcp port 8080 and src host 10.200.1.11" "10.200.1.11" 4 reach h1c1 h2c2 8080)
[ "$real" -gt 0 ] 2>/dev/null || fail "the real web container's packets were not seen in api's namespace: $real"
on h1c4 ip addr del 10.200.2.11/32 dev eth0
pass "forged source: h1c4 posing as h2's web toward h2's api: 0 packets in api's namespace, h1 dropped $(( d1 - d0 )) (forged_source); the real web: $real packets seen"

# the ingress: api does not list it -> no backend; listed -> served
code=$(on cl curl -sk -o /dev/null -w '%{http_code}' --max-time 10 --resolve api.example.com:443:10.99.0.1 https://api.example.com/ || true)
case $code in 502|503|504) ;; *) fail "h1's ingress reached api without 'ingress' in its label: $code" ;; esac
labelled "web:8080,ingress"
for h in 1 2; do kill -HUP "$(eval echo "\$VX_PID_$h")"; done
served=""
for _ in $(seq 200); do
  served=$(on cl curl -sk --max-time 2 --resolve api.example.com:443:10.99.0.1 https://api.example.com/ || true)
  [ -n "$served" ] && echo "$served" | grep -q "h[12]c2" && break
  sleep 0.1
done
echo "$served" | grep -q "h[12]c2" || fail "h1's ingress does not serve api with 'ingress' listed: '$served'"
seen=""
for _ in $(seq 40); do
  seen+=" $(on cl curl -sk --max-time 2 --resolve api.example.com:443:10.99.0.1 https://api.example.com/ || true)"
  echo "$seen" | grep -q h1c2 && echo "$seen" | grep -q h2c2 && break
  sleep 0.2
done
echo "$seen" | grep -q h2c2 || fail "h1's ingress never reached h2's api (h1's gateway not let in on h2):$seen"
pass "ingress: api without 'ingress' -> $code; with it, h1's ingress serves api from both hosts"

# a label change holds within 1 s: db on h2 opens to web
mustnt h1c1 h2c3 80
applied_of() { on "h$1" curl -s http://127.0.0.1:9180/metrics | sed -n 's/^vxgate_policy_applied_total //p'; }
n0=$(applied_of 2)
[ -n "$n0" ] || fail "no vxgate_policy_applied_total on h2"
set_labels 2 h2c3 'app = "db", "vxgate.allow_from" = "api,web"'
kill -HUP "$VX_PID_2"
t0=$(now_ms)
newer() { [ "$(applied_of 2)" -gt "$n0" ]; }
wait_for "h2's table after the label change" newer >/dev/null
open_ms=$(( $(now_ms) - t0 ))
must h1c1 h2c3 80
set_labels 2 h2c3 'app = "db", "vxgate.allow_from" = "api"'
kill -HUP "$VX_PID_2"
sleep 1
mustnt h1c1 h2c3 80
[ "$open_ms" -le 1000 ] || fail "the new rule took $open_ms ms (more than 1 s)"
applied=$(on h2 curl -s http://127.0.0.1:9180/metrics | sed -n 's/^vxgate_policy_last_apply_seconds //p')
[ -n "$applied" ] || fail "no vxgate_policy_last_apply_seconds"
pass "label change on h2: web reaches h2's db ${open_ms} ms after the SIGHUP, closed again 1 s after the revert; last apply took ${applied} s"

# the same through the admin API: h2's db re-registered with web allowed holds within 1 s;
# re-registered with the old label, a new connection from web fails again
api() { on "h$1" curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -X "$2" -H 'Content-Type: application/json' "http://127.0.0.1:9180$3" ${4:+-d "$4"}; }
db_entry() { echo "{\"name\":\"h2c3\",\"ip\":\"10.200.2.13\",\"mac\":\"$(tb_cmac 2 3)\",\"port\":80,\"labels\":{\"app\":\"db\",\"vxgate.allow_from\":\"$1\"}}"; }
mustnt h1c1 h2c3 80
[ "$(api 2 DELETE /v1/containers/h2c3)" = 200 ] || fail "DELETE /v1/containers/h2c3 on h2"
[ "$(api 2 POST /v1/containers "$(db_entry api,web)")" = 201 ] || fail "POST h2c3 with api,web on h2"
t0=$(now_ms)
wait_for "web -> h2's db after the API update" reach h1c1 h2c3 80 >/dev/null
api_ms=$(( $(now_ms) - t0 ))
[ "$api_ms" -le 1000 ] || fail "the API's label change took $api_ms ms (more than 1 s)"
[ "$(api 2 DELETE /v1/containers/h2c3)" = 200 ] || fail "DELETE the API's h2c3"
[ "$(api 2 POST /v1/containers "$(db_entry api)")" = 201 ] || fail "POST h2c3 with api on h2"
t0=$(now_ms)
wait_for "web refused by h2's db again" bash -c "! ip netns exec $P-h1c1 curl -s -o /dev/null --max-time 1 http://10.200.2.13:80/" >/dev/null
closed_ms=$(( $(now_ms) - t0 ))
must h1c2 h2c3 80
# back to the config's own entry
[ "$(api 2 DELETE /v1/containers/h2c3)" = 200 ] || fail "DELETE the API's h2c3 (2)"
kill -HUP "$VX_PID_2"
wait_for "h2c3 back from the config" bash -c "ip netns exec $P-h2 curl -s http://127.0.0.1:9180/v1/containers | grep -q '\"h2c3\"'" >/dev/null
mustnt h1c1 h2c3 80
pass "label change through the admin API on h2: web reaches h2's db ${api_ms} ms after the POST; re-posted without web, refused again within ${closed_ms} ms, the probe's own 1 s timeout included (api still reaches it)"

# SIGKILL: the rules stay; a restart replaces them, not doubled
before=$(table_of 1 | grep -c "jump p")
kill -9 "$VX_PID_1"; wait "$VX_PID_1" 2>/dev/null || true
mustnt h1c1 h1c3 80
[ "$(table_of 1 | grep -c "jump p")" = "$before" ] || fail "h1's table changed when vxgate died"
start_vxgate 1
sleep 1
after=$(table_of 1 | grep -c "jump p")
[ "$after" = "$before" ] || fail "after the restart h1 has $after jumps, $before before"
[ "$(on h1 nft list tables | grep -c 'inet vxgate')" = 1 ] || fail "two tables after the restart"
mustnt h1c1 h1c3 80
must h1c1 h1c2 8080
pass "h1's vxgate killed: its $before rules stayed (web -> db still refused); restarted: replaced, one table, $after rules"

# an isolated network: what no label opens is closed
set_isolated 2 on
kill -HUP "$VX_PID_2"
wait_for "h2's web closed" bash -c "! ip netns exec $P-h1c1 curl -s -o /dev/null --max-time 1 http://10.200.2.11:80/" >/dev/null
must h2c1 h1c1 80
must h2c1 h2c2 8080
set_isolated 2 off
kill -HUP "$VX_PID_2"
wait_for "h2's web open again" reach h1c1 h2c1 80 >/dev/null
pass "h2's network isolated: web on h2 refused from h1, its own connections pass; open again after"

# the positive control: without labels the table is gone and everything passes
for h in 1 2; do
  for i in 1 2 3 4; do set_labels "$h" "h${h}c$i" 'app = "web"'; done
  kill -HUP "$(eval echo "\$VX_PID_$h")"
done
gone() { ! table_of "$1" >/dev/null; }
for h in 1 2; do wait_for "h$h's table removed" gone "$h" >/dev/null; done
for c in "${allowed[@]}" "${denied[@]}"; do must $c; done
pass "labels removed: no table on either host, all $(( ${#allowed[@]} + ${#denied[@]} )) connections pass"

# vxgate policy flush: the only way a table goes without vxgate
set_labels 1 h1c3 'app = "db", "vxgate.allow_from" = "api"'
kill -HUP "$VX_PID_1"
wait_for "h1's table back" has_rules 1 >/dev/null
stop_vxgate 1
table_of 1 >/dev/null || fail "SIGTERM removed h1's table"
on h1 "$VXGATE" policy flush >/dev/null || fail "vxgate policy flush failed"
gone 1 || fail "the table is still there after vxgate policy flush"
must h1c1 h1c3 80
pass "SIGTERM kept the table; vxgate policy flush removed it"
