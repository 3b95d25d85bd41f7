#!/usr/bin/env bash
# e2e-timeout: 400
# ACME against a real CA (issue 13): Debian's pebble (Let's Encrypt's test CA, real
# validation) and dnsmasq (answering example.com with h1's ingress address) in h1's
# namespace. tls-alpn-01 issues web.example.com's certificate, which curl verifies against
# Pebble's root, with Pebble rejecting 30% of nonces; a restart serves it again without an
# order; a service added through the admin API gets its own; http-01 (on the redirect
# listener) issues another; Pebble stopped: the order fails, is counted and retried while the
# self-signed certificate is served, and succeeds once Pebble is back.
. "$(dirname "$0")/lib.sh"
up --hosts 1 --containers 1
A=$STATE/acme-test
pebble_conf "$A" 127.0.0.1
# (ip netns exec, not the `on` function: $! must be the daemon itself, to end it by PID)
ip netns exec "$P-h1" dnsmasq --keep-in-foreground --no-resolv --no-hosts --listen-address=127.0.0.1 --bind-interfaces \
  --port=5354 --address=/example.com/10.99.0.1 --pid-file= --log-facility=- 2> "$LOGDIR/dnsmasq.log" &
VX_PIDS+=($!)
start_pebble() {  # NONCE_REJECT_PERCENT
  ip netns exec "$P-h1" env PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT="$1" pebble -config "$A/pebble.json" \
    -dnsserver 127.0.0.1:5354 >> "$LOGDIR/pebble.log" 2>&1 &
  PEBBLE_PID=$!
  VX_PIDS+=($PEBBLE_PID)
  for _ in $(seq 100); do
    on h1 curl -s --cacert "$A/ca.pem" https://127.0.0.1:14000/dir >/dev/null && return 0
    sleep 0.1
  done
  fail "pebble did not start: $(tail -5 "$LOGDIR/pebble.log")"
}
start_pebble 30
roots() {  # Pebble's root and intermediate (new with every Pebble start)
  on h1 curl -sf --cacert "$A/ca.pem" https://127.0.0.1:15000/roots/0 > "$A/root.pem"
  on h1 curl -sf --cacert "$A/ca.pem" https://127.0.0.1:15000/intermediates/0 > "$A/inter.pem"
  grep -q "BEGIN CERTIFICATE" "$A/root.pem" || fail "no Pebble root"
}
cfg=$STATE/h1-acme.toml
write_cfg() {  # CHALLENGE [DOMAINS]
  cp "$STATE/h1.toml" "$cfg"
  printf '\n[ingress.acme]\ndirectory = "%s"\nemail = "ops@example.com"\nchallenge = "%s"\nca_file = "%s"\nretry_initial_s = 1\n' \
    "${DIRECTORY:-https://127.0.0.1:14000/dir}" "$1" "$A/ca.pem" >> "$cfg"
  [ -z "${2:-}" ] || printf 'domains = %s\n' "$2" >> "$cfg"
}
metric() {  # NAME: the value; a missing metric fails
  local v
  v=$(on h1 curl -sS --max-time 5 http://127.0.0.1:9180/metrics | awk -v n="$1" '$1 == n { print $2 }')
  [ -n "$v" ] || fail "no metric $1"
  echo "$v"
}
now_ms() { date +%s%3N; }
wait_ok() {  # N: until N orders succeeded in this process; prints the ms it took
  local t0; t0=$(now_ms)
  while [ "$(metric 'vxgate_acme_orders_total{result="ok"}')" -lt "$1" ]; do
    [ $(( $(now_ms) - t0 )) -lt 90000 ] || fail "no $1 issued certificate(s) after 90 s: $(grep -i acme "$LOGDIR/vxgate-h1.log" | tail -5)"
    sleep 0.2
  done
  echo $(( $(now_ms) - t0 ))
}
# verify NAME: curl from the client namespace, trusting only Pebble's root
verify() {
  on cl curl -sS --max-time 10 --cacert "$A/root.pem" --resolve "$1:443:10.99.0.1" -o /dev/null \
    -w '%{http_code}' "https://$1/"
}
serial_of() {  # NAME: the serial of the certificate h1 serves for NAME
  on cl openssl s_client -connect 10.99.0.1:443 -servername "$1" </dev/null 2>/dev/null \
    | openssl x509 -noout -serial | sed 's/serial=//' | tr 'A-F' 'a-f'
}

# 1. tls-alpn-01, 30% of nonces rejected
write_cfg tls-alpn-01
start_vxgate 1 "$cfg"
took=$(wait_ok 1)
roots
code=$(verify web.example.com) || fail "curl does not trust web.example.com's certificate"
[ "$code" = 200 ] || fail "web.example.com answered $code"
failed=$(metric 'vxgate_acme_orders_total{result="failed"}')
certs=$(on h1 curl -sS http://127.0.0.1:9180/v1/certificates)
echo "$certs" | /usr/bin/python3 -c '
import json, sys
c = [x for x in json.load(sys.stdin) if x["domain"] == "web.example.com" and x["source"] == "acme"]
assert len(c) == 1, c
' || fail "/v1/certificates: $certs"
metric 'vxgate_acme_certificate_expiry_seconds{domain="web.example.com"}' >/dev/null
[ "$(stat -c %a "$STATE/h1/acme/web.example.com.key")" = 600 ] || fail "key file mode"
serial=$(serial_of web.example.com)
[ -n "$serial" ] || fail "no serial"
pass "tls-alpn-01: web.example.com issued in ${took} ms (30% of nonces rejected; $failed failed orders retried), curl trusts it against Pebble's root, /v1/certificates says acme, key 0600"

# 2. restart: served from disk, no new order
stop_vxgate 1
start_vxgate 1 "$cfg"
sleep 1
[ "$(metric 'vxgate_acme_orders_total{result="ok"}')" = 0 ] || fail "a restart ordered again"
[ "$(serial_of web.example.com)" = "$serial" ] || fail "a restart serves another certificate"
[ "$(verify web.example.com)" = 200 ] || fail "after the restart"
# the renewal time was asked of the CA (ARI, RFC 9773); Debian's Pebble 2.4 has none, so
# vxgate says it falls back to 2/3 of the lifetime
grep -q "offers no renewal information (ARI)" "$LOGDIR/vxgate-h1.log" || fail "no ARI look logged after the restart"
pass "restart: the same certificate (serial $serial) served from disk, no new order; ARI asked (Pebble has none: 2/3 of the lifetime)"

# 2b. another CA (a switch from staging to production): the stored certificate and account
# are not used; a new account orders a new certificate (Pebble serves the same directory at
# another URL, which is what vxgate compares)
stop_vxgate 1
DIRECTORY="https://localhost:14000/dir"  # (and for the rest of the test)
write_cfg tls-alpn-01
start_vxgate 1 "$cfg"
took=$(wait_ok 1)
new_serial=$(serial_of web.example.com)
[ -n "$new_serial" ] && [ "$new_serial" != "$serial" ] || fail "after a change of CA: serial '$new_serial' (was $serial)"
grep -q "come from another CA" "$LOGDIR/vxgate-h1.log" || fail "the change of CA was not logged"
grep -q "account is for another CA" "$LOGDIR/vxgate-h1.log" || fail "no new account for the new CA"
[ "$(verify web.example.com)" = 200 ] || fail "after the change of CA"
pass "a change of ingress.acme.directory: the other CA's certificate is not served, a new account ordered serial $new_serial in ${took} ms"

# 3. a service added through the admin API gets its own certificate
on h1 "$VXGATE" ctl add --name api-1 --ip 10.200.1.99 --port 80 --label app=api >/dev/null
took=$(wait_ok 2)  # (this process ordered web.example.com in 2b)
code=$(verify api.example.com) || fail "curl does not trust api.example.com's certificate"
api_serial=$(serial_of api.example.com)
# a service that disappears keeps its certificate (files and the one served for its name)
on h1 "$VXGATE" ctl rm api-1 >/dev/null
sleep 1
[ -s "$STATE/h1/acme/api.example.com.crt" ] && [ -s "$STATE/h1/acme/api.example.com.key" ] || fail "api's files went with the service"
[ "$(serial_of api.example.com)" = "$api_serial" ] || fail "api's certificate is no longer served"
pass "a service added through the admin API: api.example.com issued in ${took} ms, trusted (answered $code); removed, it keeps its certificate (files and serial $api_serial)"

# 4. http-01 on the redirect listener, for a listed domain
stop_vxgate 1
write_cfg http-01 '["web.example.com", "www.example.com"]'
start_vxgate 1 "$cfg"
took=$(wait_ok 1)
code=$(verify www.example.com) || fail "curl does not trust www.example.com's certificate"
pass "http-01: www.example.com issued in ${took} ms through the port-80 listener, trusted (answered $code)"

# 5. Pebble away during an order: the self-signed certificate is served, the failure is
# counted and retried, and the order succeeds when Pebble is back (a new Pebble: new root, and
# it has forgotten the account, which vxgate creates again)
kill -KILL "$PEBBLE_PID"; wait "$PEBBLE_PID" 2>/dev/null || true
on h1 curl -s --max-time 2 --cacert "$A/ca.pem" https://127.0.0.1:14000/dir >/dev/null && fail "Pebble still answers"
stop_vxgate 1
write_cfg tls-alpn-01
start_vxgate 1 "$cfg"
on h1 "$VXGATE" ctl add --name late-1 --ip 10.200.1.98 --port 80 --label app=late >/dev/null
t0=$(now_ms)
while [ "$(metric 'vxgate_acme_orders_total{result="failed"}')" -lt 2 ]; do
  [ $(( $(now_ms) - t0 )) -lt 30000 ] || fail "no failed, retried order without Pebble"
  sleep 0.2
done
issuer=$(on cl openssl s_client -connect 10.99.0.1:443 -servername late.example.com </dev/null 2>/dev/null \
  | openssl x509 -noout -issuer)
echo "$issuer" | grep -q "example.com" || fail "late.example.com without Pebble: $issuer"
start_pebble 0
roots
took=$(wait_ok 1)
code=$(verify late.example.com) || fail "curl does not trust late.example.com's certificate"
pass "Pebble stopped: $(metric 'vxgate_acme_orders_total{result="failed"}') failed orders retried with backoff while the self-signed certificate ($issuer) was served; issued ${took} ms after Pebble returned, trusted"
