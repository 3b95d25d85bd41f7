#!/usr/bin/env bash
# TLS to backends (issue 17, item 4): a gRPC service labelled vxgate.protocol=h2 is reached
# over HTTP/2 + TLS; with ingress.backend_ca_file its certificate is verified for
# <service>.<zone>: one from another CA, or for another name, is refused (502, the client sees
# UNAVAILABLE) while the right one passes; without a CA file the connection is made unverified
# and a warning is logged.
. "$(dirname "$0")/lib.sh"
up --hosts 1 --containers 3
PKI=$STATE/pki
mkdir -p "$PKI"
ca() {  # NAME: a CA key and certificate
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$1" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.crt" 2>/dev/null
}
leaf() {  # NAME CA DNSNAME: a server certificate for DNSNAME signed by CA
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\n' "$3" > "$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$2.crt" -CAkey "$PKI/$2.key" -CAcreateserial \
    -days 2 -extfile "$PKI/$1.ext" -out "$PKI/$1.crt" 2>/dev/null
}
ca ca1; ca ca2
leaf good ca1 grpc.example.com
leaf wrongname ca1 other.example.com
openssl verify -CAfile "$PKI/ca1.crt" "$PKI/good.crt" >/dev/null || fail "test PKI: good.crt does not verify"

base=$STATE/h1-h2.toml
awk '
  /^name = "h1c3"/ { c = 3 } /^name = "h1c[12]"/ { c = 0 }
  /^port = / && c == 3 { print "port = 50443"; next }
  /^labels = / && c == 3 { print "labels = { app = \"grpc\", \"vxgate.protocol\" = \"h2\" }"; next }
  { print }' "$STATE/h1.toml" > "$base"
grep -q '"h2"' "$base" && grep -q 'port = 50443' "$base" || fail "config not rewritten: $(cat "$base")"
with_ca() {  # CAFILE OUT: the config with ingress.backend_ca_file
  awk -v ca="$1" '{ print } /^\[ingress\]/ { print "backend_ca_file = \"" ca "\"" }' "$base" > "$2"
  grep -q backend_ca_file "$2" || fail "no [ingress] section in $base"
}
with_ca "$PKI/ca1.crt" "$STATE/h1-ca1.toml"
with_ca "$PKI/ca2.crt" "$STATE/h1-ca2.toml"

SERVER=
serve() {  # CERTNAME: (re)start the TLS gRPC server on h1c3:50443
  if [ -n "$SERVER" ]; then
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
    ! on h1c3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/50443' 2>/dev/null || fail "the previous gRPC server still listens"
  fi
  # ip netns exec execs the server: $! is its PID
  ip netns exec "$P-h1c3" /usr/bin/python3 "$TESTBED/grpc-echo.py" server 50443 h1c3 "$PKI/$1.crt" "$PKI/$1.key" \
    > "$LOGDIR/grpc-server-$1.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do on h1c3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/50443' 2>/dev/null && return 0; sleep 0.1; done
  fail "gRPC TLS server with $1 did not listen: $(cat "$LOGDIR/grpc-server-$1.log")"
}
CA=$STATE/h1/tls/self-signed.crt
call() { on cl timeout 60 /usr/bin/python3 "$TESTBED/grpc-echo.py" client 10.99.0.1:443 grpc.example.com "$CA" 2>&1; }
expect_ok() {  # WHAT
  local out
  out=$(call) || fail "$1: gRPC client: $out"
  echo "$out" | grep -qx "unary h1c3:ping OK h1c3" || fail "$1: unary: $out"
  echo "$out" | grep -qx "stream h1c3:m0,h1c3:m1,h1c3:m2,h1c3:m3,h1c3:m4 OK h1c3" || fail "$1: stream: $out"
  echo "$out" | grep -qx "fail PERMISSION_DENIED no entry" || fail "$1: grpc-status: $out"
}
expect_refused() {  # WHAT LOG PATTERN
  local out
  out=$(call) && fail "$1: the call went through: $out"
  echo "$out" | grep -q UNAVAILABLE || fail "$1: expected UNAVAILABLE: $out"
  # the backend is not served while refused: curl sees 502 or 503, never a 200
  local code
  code=$(on cl curl -sS --http2 --max-time 10 --cacert "$CA" --resolve grpc.example.com:443:10.99.0.1 \
    -o /dev/null -w '%{http_code}' https://grpc.example.com/vxgate.Echo/Unary)
  case $code in 502|503) ;; *) fail "$1: curl got $code" ;; esac
  grep -qiE "$3" "$2" || fail "$1: no /$3/ error in the log: $(tail -5 "$2")"
}

serve good
start_vxgate 1 "$STATE/h1-ca1.toml"
expect_ok "CA file, right certificate"
# the active checks speak HTTP/2 over TLS to it too: healthy, and still so after 4 intervals
# (the testbed's interval is 1 s, fall 2: HTTP/1.1 checks would have ejected it)
stays_healthy 1 h1c3
expect_ok "CA file, after 4 health intervals"
pass "vxgate.protocol=h2 with backend_ca_file: unary, bidirectional stream, trailers and grpc-status over TLS to the backend"
stop_vxgate 1

start_vxgate 1 "$STATE/h1-ca2.toml"
expect_refused "certificate from another CA" "$LOGDIR/vxgate-h1.log" "invalid peer certificate: UnknownIssuer"
stop_vxgate 1
pass "a backend certificate from another CA than backend_ca_file is refused"

serve wrongname
start_vxgate 1 "$STATE/h1-ca1.toml"
expect_refused "certificate for another name" "$LOGDIR/vxgate-h1.log" "invalid peer certificate: certificate not valid for name"
stop_vxgate 1
pass "a backend certificate of the right CA for another name than grpc.example.com is refused"

start_vxgate 1 "$base"
expect_ok "no CA file"
grep -q "certificates are not verified" "$LOGDIR/vxgate-h1.log" || fail "no warning about unverified backend TLS: $(tail -5 "$LOGDIR/vxgate-h1.log")"
stop_vxgate 1
pass "without backend_ca_file the backend is reached unverified, and the log says so"
