#!/usr/bin/env bash
# The registry on etcd over TLS with client certificates and etcd's own authentication
# (issue 29, item 5): Debian's etcd started with --client-cert-auth, --trusted-ca-file,
# --cert-file, --key-file and `auth enable`; two vxgate hosts configured with registry.tls,
# registry.username and registry.password_file form a fleet (each resolves both hosts'
# containers). A client certificate from another CA, and a wrong password, are refused
# with a clear error in the log and vxgate_registry_etcd_connected 0, while the other host
# stays connected (the positive control).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1 --etcd   # (the testbed's plain cluster is not used here)
PKI=$LOGDIR/pki
mkdir -p "$PKI"
# a CA, etcd's server certificate (for 10.99.0.1), a client certificate, and another CA's
ossl() { openssl "$@" >/dev/null 2>&1 || fail "openssl $*"; }
for ca in ca other; do
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=vxgate test $ca" -keyout "$PKI/$ca.key" -out "$PKI/$ca.pem"
done
issue() {  # NAME CA SUBJECT [SAN]
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.csr"
  local ext=$PKI/$1.ext
  { echo "basicConstraints=CA:FALSE"; [ -n "${4:-}" ] && echo "subjectAltName=$4"; } > "$ext"
  ossl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$2.pem" -CAkey "$PKI/$2.key" -CAcreateserial \
    -days 2 -extfile "$ext" -out "$PKI/$1.pem"
  chmod 600 "$PKI/$1.key"
}
issue server ca etcd "IP:10.99.0.1"
issue client ca vxgate
issue stranger other vxgate

ip netns exec "$P-h1" etcd --name tls1 --data-dir "$STATE/etcd-tls" \
  --listen-client-urls https://10.99.0.1:2479 --advertise-client-urls https://10.99.0.1:2479 \
  --listen-peer-urls http://127.0.0.1:2480 --initial-advertise-peer-urls http://127.0.0.1:2480 \
  --initial-cluster tls1=http://127.0.0.1:2480 --initial-cluster-state new \
  --client-cert-auth --trusted-ca-file "$PKI/ca.pem" \
  --cert-file "$PKI/server.pem" --key-file "$PKI/server.key" > "$LOGDIR/etcd-tls.log" 2>&1 &
VX_PIDS+=($!)   # stopped with the test
ctl() {
  on h1 env ETCDCTL_API=3 etcdctl --endpoints https://10.99.0.1:2479 --cacert "$PKI/ca.pem" \
    --cert "$PKI/client.pem" --key "$PKI/client.key" --command-timeout=3s "$@"
}
for _ in $(seq 100); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
ctl endpoint health >/dev/null 2>&1 || fail "etcd over TLS did not come up: $(tail -5 "$LOGDIR/etcd-tls.log")"
# etcd's auth: root, and a vxgate user that may read and write /vxgate/
ctl user add root --new-user-password=rootpw >/dev/null
ctl user add vxgate --new-user-password=vxpw >/dev/null
ctl role add vxgate >/dev/null
ctl role grant-permission vxgate --prefix=true readwrite /vxgate/ >/dev/null
ctl user grant-role vxgate vxgate >/dev/null
ctl auth enable >/dev/null || fail "auth enable"
# the control for auth itself: without the password, a write is refused
if ctl --user vxgate:wrong put /vxgate/x y >/dev/null 2>&1; then fail "etcd accepted a wrong password"; fi
printf 'vxpw\n' > "$PKI/vxgate.pass"
printf 'not-the-password\n' > "$PKI/wrong.pass"
chmod 600 "$PKI"/*.pass

# HOST CERT PASSFILE: the host's config with the registry on the TLS etcd
tls_config() {
  local out=$STATE/h$1-tls.toml
  awk -v pki="$PKI" -v cert="$2" -v pass="$3" '
    /^endpoints = / {
      print "endpoints = [\"https://10.99.0.1:2479\"]"
      print "tls = { ca_file = \"" pki "/ca.pem\", cert_file = \"" pki "/" cert ".pem\", key_file = \"" pki "/" cert ".key\" }"
      print "username = \"vxgate\""
      print "password_file = \"" pki "/" pass ".pass\""
      next
    }
    { print }' "$STATE/h$1.toml" > "$out"
  grep -q 'https://10.99.0.1:2479' "$out" || fail "config not rewritten"
  echo "$out"
}
"$VXGATE" check --config "$(tls_config 1 client vxgate)" >/dev/null || fail "check refused the TLS config"
start_vxgate 1 "$(tls_config 1 client vxgate)"
start_vxgate 2 "$(tls_config 2 client vxgate)"
ips() { on "h$1c1" dig +short +time=1 +tries=1 @"10.200.$1.1" "$2" | sort -u | tr '\n' ' '; }
metric() { on "h$1" curl -sS --max-time 5 http://127.0.0.1:9180/metrics | awk -v k="$2" '$1 == k { print $2 }'; }
for h in 1 2; do
  got=""
  for _ in $(seq 100); do
    got=$(ips "$h" web.example.com)
    [ "$got" = "10.200.1.11 10.200.2.11 " ] && break
    sleep 0.1
  done
  [ "$got" = "10.200.1.11 10.200.2.11 " ] || fail "h$h resolves web.example.com to '$got' over the TLS etcd"
  [ "$(metric "$h" vxgate_registry_etcd_connected)" = 1 ] || fail "h$h not connected"
done
keys=$(ctl --user root:rootpw get --prefix --keys-only /vxgate/ | grep -c . || true)
[ "$keys" -ge 4 ] || fail "the fleet's records are not in the TLS etcd ($keys keys)"
pass "2 hosts over etcd with TLS, client certificates and auth: each resolves web to both containers; $keys records under /vxgate/"

# a client certificate from another CA, then a wrong password: refused, said clearly
refused() {  # CERT PASS WHAT PATTERN
  stop_vxgate 2
  start_vxgate 2 "$(tls_config 2 "$1" "$2")"
  local log=$LOGDIR/vxgate-h2.log
  for _ in $(seq 100); do grep -Eiq "$4" "$log" && break; sleep 0.1; done
  # (each retry logs its error; how far the TLS alert gets before the connection closes
  # varies between tries)
  local said
  said=$(grep -Ei "WARN.*etcd: .*($4)" "$log" | tail -1)
  [ -n "$said" ] || fail "$3: no clear error in the log: $(grep -i 'etcd' "$log" | tail -3)"
  [ "$(metric 2 vxgate_registry_etcd_connected)" = 0 ] || fail "$3: h2 connected"
  [ "$(metric 1 vxgate_registry_etcd_connected)" = 1 ] || fail "$3: h1 (the control) lost etcd"
  echo "$3: $(echo "$said" | sed 's/.*etcd: //' | cut -c1-200)"
}
refused stranger vxgate "a certificate from another CA" "BadCertificate|UnknownCA|certificate"
refused client wrong "a wrong password" "authentication failed|invalid user ID or password"
pass "refused with a clear error: another CA's client certificate, a wrong password; h1 stayed connected"

# https:// without ca_file: the system roots. The testbed's CA is no system root (the control:
# refused as an unknown issuer); SSL_CERT_FILE makes it the system store (as an operator's own
# CA installed in the store would be), and the same config connects.
roots_config() {
  local out=$STATE/h2-roots.toml
  sed "s|ca_file = \"$PKI/ca.pem\", ||" "$(tls_config 2 client vxgate)" > "$out"
  grep -q 'ca_file' "$out" && fail "ca_file still in the config"
  echo "$out"
}
stop_vxgate 2
start_vxgate 2 "$(roots_config)"
for _ in $(seq 100); do grep -Eiq "UnknownIssuer|unknown issuer|certificate" "$LOGDIR/vxgate-h2.log" && break; sleep 0.1; done
said=$(grep -Ei "WARN.*etcd: .*(UnknownIssuer|unknown issuer|certificate)" "$LOGDIR/vxgate-h2.log" | tail -1)
[ -n "$said" ] || fail "system roots without our CA: no clear error: $(grep -i etcd "$LOGDIR/vxgate-h2.log" | tail -3)"
[ "$(metric 2 vxgate_registry_etcd_connected)" = 0 ] || fail "connected without a root for etcd's certificate"
stop_vxgate 2
cfg=$(roots_config)
ip netns exec "$P-h2" env SSL_CERT_FILE="$PKI/ca.pem" "$VXGATE" run --config "$cfg" > "$LOGDIR/vxgate-h2.log" 2>&1 &
VX_PIDS+=($!)
VX_PID_2=$!
ok=""
for _ in $(seq 100); do
  [ "$(metric 2 vxgate_registry_etcd_connected 2>/dev/null)" = 1 ] && { ok=1; break; }
  sleep 0.1
done
[ -n "$ok" ] || fail "with the CA in the system store (SSL_CERT_FILE), h2 did not connect: $(grep -i etcd "$LOGDIR/vxgate-h2.log" | tail -3)"
pass "https:// without ca_file uses the system roots: refused while the CA is not among them ($(echo "$said" | sed 's/.*etcd: //' | cut -c1-120)), connected once it is (SSL_CERT_FILE)"
