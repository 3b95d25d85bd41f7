#!/usr/bin/env bash
# e2e-timeout: 400
# ACME once per fleet (issue 13): two hosts sharing etcd, Pebble (real validation) in h1's
# namespace on the underlay, and dnsmasq telling Pebble that every name is at h2's ingress.
# 1. h1 orders web.example.com (tls-alpn-01) while h2 orders nothing (domains = []): the CA
#    validates at h2, which answers the challenge h1 put in etcd; h2 serves h1's certificate.
# 2. The same with http-01 on h2's port 80, for www.example.com.
# 3. Both nodes order the services' names: four services added at once (two on each node)
#    are ordered exactly once each in the fleet (both nodes' metrics, and Pebble's log), and
#    both nodes serve the same serial for every name, trusted by curl.
# 4. A node that joins with an empty state_dir gets every certificate from etcd, no order.
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1 --etcd
A=$STATE/acme-test
pebble_conf "$A" 10.99.0.1
# every name is at h2's ingress, for the CA
ip netns exec "$P-h1" dnsmasq --keep-in-foreground --no-resolv --no-hosts --listen-address=127.0.0.1 --bind-interfaces \
  --port=5354 --address=/example.com/10.99.0.2 --pid-file= --log-facility=- 2> "$LOGDIR/dnsmasq.log" &
VX_PIDS+=($!)
ip netns exec "$P-h1" env PEBBLE_VA_NOSLEEP=1 pebble -config "$A/pebble.json" -dnsserver 127.0.0.1:5354 \
  >> "$LOGDIR/pebble.log" 2>&1 &
VX_PIDS+=($!)
for _ in $(seq 100); do
  on h2 curl -s --cacert "$A/ca.pem" https://10.99.0.1:14000/dir >/dev/null && break
  sleep 0.1
done
on h2 curl -sf --cacert "$A/ca.pem" https://10.99.0.1:15000/roots/0 > "$A/root.pem" || fail "Pebble did not start: $(tail -5 "$LOGDIR/pebble.log")"
grep -q "BEGIN CERTIFICATE" "$A/root.pem" || fail "no Pebble root"

write_cfg() {  # H CHALLENGE [DOMAINS]
  local cfg=$STATE/h$1-acme.toml
  cp "$STATE/h$1.toml" "$cfg"
  printf '\n[ingress.acme]\ndirectory = "https://10.99.0.1:14000/dir"\nemail = "ops@example.com"\nchallenge = "%s"\nca_file = "%s"\nretry_initial_s = 1\n' \
    "$2" "$A/ca.pem" >> "$cfg"
  [ -z "${3:-}" ] || printf 'domains = %s\n' "$3" >> "$cfg"
}
metric() {  # H NAME: the value; a missing metric fails
  local v
  v=$(on "h$1" curl -sS --max-time 5 http://127.0.0.1:9180/metrics | awk -v n="$2" '$1 == n { print $2 }')
  [ -n "$v" ] || fail "no metric $2 on h$1"
  echo "$v"
}
ok_orders() { metric "$1" 'vxgate_acme_orders_total{result="ok"}'; }
issued_at_ca() { grep -c "Issued certificate serial" "$LOGDIR/pebble.log" || true; }
now_ms() { date +%s%3N; }
# serial H NAME: the serial of the certificate host H's ingress serves for NAME, if curl trusts
# it against Pebble's root (empty otherwise)
serial() {
  local ip=10.99.0.$1
  on cl curl -sS --max-time 5 --cacert "$A/root.pem" --resolve "$2:443:$ip" -o /dev/null "https://$2/" 2>/dev/null || return 0
  on cl openssl s_client -connect "$ip:443" -servername "$2" </dev/null 2>/dev/null \
    | openssl x509 -noout -serial | sed 's/serial=//' | tr 'A-F' 'a-f'
}
# no_order_running: once both nodes hold every certificate (wait_served), none can start an
# order; this waits until none is under way either: no order lock left in etcd (every order
# holds one until it ends)
no_order_running() {
  local t0 held
  t0=$(now_ms)
  while :; do
    held=$(on h1 env ETCDCTL_API=3 etcdctl --endpoints "$(tb_etcd_endpoints)" get --prefix --keys-only /vxgate/acme/lock/) \
      || fail "etcdctl cannot list the order locks"
    [ -z "$(echo "$held" | tr -d '[:space:]')" ] && return 0
    [ $(( $(now_ms) - t0 )) -lt 30000 ] || fail "order locks still held after 30 s: $held"
    sleep 0.2
  done
}
# wait_served NAME...: until both nodes serve one trusted certificate per name; prints ms
wait_served() {
  local t0 n s1 s2 all
  t0=$(now_ms)
  while :; do
    all=1
    for n in "$@"; do
      s1=$(serial 1 "$n"); s2=$(serial 2 "$n")
      { [ -n "$s1" ] && [ "$s1" = "$s2" ]; } || { all=""; break; }
    done
    [ -n "$all" ] && break
    [ $(( $(now_ms) - t0 )) -lt 90000 ] || fail "after 90 s, $n: h1 serves '$s1', h2 '$s2': $(grep -h 'acme' "$LOGDIR"/vxgate-h*.log | tail -8)"
    sleep 0.3
  done
  echo $(( $(now_ms) - t0 ))
}

# 1. tls-alpn-01 ordered by h1, validated at h2
write_cfg 1 tls-alpn-01 '["web.example.com"]'
write_cfg 2 tls-alpn-01 '[]'
start_vxgate 2 "$STATE/h2-acme.toml"
start_vxgate 1 "$STATE/h1-acme.toml"
took=$(wait_served web.example.com)
[ "$(ok_orders 1)" = 1 ] && [ "$(ok_orders 2)" = 0 ] || fail "orders: h1 $(ok_orders 1), h2 $(ok_orders 2)"
grep -q "acme: certificate from the fleet" "$LOGDIR/vxgate-h2.log" || fail "h2 did not log the fleet's certificate"
pass "tls-alpn-01: h1 ordered web.example.com, the CA validated at h2 (challenge shared through etcd); both serve serial $(serial 2 web.example.com), trusted, ${took} ms"

# 2. http-01 ordered by h1, validated on h2's port 80
stop_vxgate 1; stop_vxgate 2
write_cfg 1 http-01 '["web.example.com", "www.example.com"]'
write_cfg 2 http-01 '[]'
start_vxgate 2 "$STATE/h2-acme.toml"
start_vxgate 1 "$STATE/h1-acme.toml"
took=$(wait_served www.example.com)
[ "$(ok_orders 1)" = 1 ] && [ "$(ok_orders 2)" = 0 ] || fail "orders: h1 $(ok_orders 1), h2 $(ok_orders 2) (web.example.com must come from etcd, not be ordered again)"
pass "http-01: h1 ordered www.example.com, the CA fetched the token from h2's port 80; both serve it, ${took} ms; web.example.com not ordered again"

# 3. every node orders the services' names: exactly one order per name in the fleet
stop_vxgate 1; stop_vxgate 2
write_cfg 1 tls-alpn-01
write_cfg 2 tls-alpn-01
ca_before=$(issued_at_ca)
[ "$ca_before" -ge 2 ] || fail "Pebble's log does not show the 2 issued certificates (saw $ca_before): the count below would mean nothing"
start_vxgate 1 "$STATE/h1-acme.toml"
start_vxgate 2 "$STATE/h2-acme.toml"
# the services web (already issued), a1..a4 (two added on each node at once)
adds=()
for i in 1 2 3 4; do
  h=$(( (i + 1) % 2 + 1 ))
  on "h$h" "$VXGATE" ctl add --name "a$i-1" --ip "10.200.$h.9$i" --port 80 --label "app=a$i" >/dev/null &
  adds+=($!)
done
for pid in "${adds[@]}"; do wait "$pid" || fail "ctl add failed"; done
took=$(wait_served a1.example.com a2.example.com a3.example.com a4.example.com web.example.com)
no_order_running
o1=$(ok_orders 1) o2=$(ok_orders 2) ca=$(( $(issued_at_ca) - ca_before ))
[ $((o1 + o2)) = 4 ] || fail "4 names, $o1 orders on h1 and $o2 on h2"
[ "$ca" = 4 ] || fail "Pebble issued $ca certificates for 4 names"
for n in a1 a2 a3 a4 web; do
  s1=$(serial 1 "$n.example.com")
  [ -n "$s1" ] && [ "$s1" = "$(serial 2 "$n.example.com")" ] || fail "$n: the nodes serve different certificates"
done
pass "4 new services on 2 nodes: $o1 orders on h1 + $o2 on h2 = 4, Pebble issued $ca; both nodes serve the same trusted serial for all 5 names (${took} ms)"

# 4. a node joining with an empty state_dir takes every certificate from etcd
stop_vxgate 2
rm -rf "$STATE/h2/acme"
start_vxgate 2 "$STATE/h2-acme.toml"
took=$(wait_served a1.example.com a2.example.com a3.example.com a4.example.com web.example.com www.example.com)
no_order_running
[ "$(ok_orders 2)" = 0 ] || fail "the joining node ordered $(ok_orders 2) certificates"
[ "$(( $(issued_at_ca) - ca_before ))" = 4 ] || fail "Pebble issued more"
[ "$(stat -c %a "$STATE/h2/acme/a1.example.com.key")" = 600 ] || fail "the fleet's key written with mode $(stat -c %a "$STATE/h2/acme/a1.example.com.key")"
pass "h2 restarted with an empty state_dir: 6 certificates from etcd in ${took} ms, no order, written to its state_dir (0600)"
