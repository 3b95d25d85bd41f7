#!/usr/bin/env bash
# Runtime changes through the admin API: a container added with `vxgate ctl add` resolves in
# DNS and receives ingress traffic (within a bounded 1 s; the figures are reported, not
# asserted: a loaded machine makes millisecond bounds flaky); removed, it is gone as
# fast; a container of another node with a MAC becomes a static FDB entry (issue: control, 4).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
start_vxgate 1
start_vxgate 2
# a new container on h1, not in any config: namespace h1c9 at 10.200.1.19 with a backend
ns=$P-h1c9
ip netns add "$ns"
ip -n "$P-h1" link add c9 mtu 1450 type veth peer name eth0 netns "$ns"
ip -n "$P-h1" link set c9 master br0 up
ip -n "$ns" link set lo up
ip -n "$ns" link set eth0 mtu 1450 up
ip -n "$ns" addr add 10.200.1.19/16 dev eth0
ip netns exec "$ns" /usr/bin/python3 "$TESTBED/backend.py" --name h1c9 --port 80 >/dev/null 2>&1 &
for _ in $(seq 50); do on h1 curl -s -o /dev/null --max-time 1 http://10.200.1.19/ && break; sleep 0.1; done

on h1 /usr/bin/python3 - "$STATE/h1/tls/self-signed.crt" > "$LOGDIR/runtime.txt" 2>&1 <<'PY' || fail "$(cat "$LOGDIR/runtime.txt")"
import json, socket, ssl, sys, time, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
def api(method, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:9180" + path, method=method,
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=5).status
def dns_ok(name):
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(q, ("10.200.1.1", 53)); r = s.recv(512)
    return r[3] & 0x0F == 0 and r[7] > 0
# one kept-alive TLS connection, opened before the change, so the timings below measure
# vxgate's reaction and not this client's handshakes
conn = ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=5), server_hostname="new.example.com")
reader = conn.makefile("rb")
def https_name(host):
    conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status = reader.readline().split(b" ")[1].decode()
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, reader.read(length).strip().decode()
assert https_name("new.example.com")[0] == "404"

assert not dns_ok("new.example.com")
assert api("POST", "/v1/containers", {"name": "h1c9", "ip": "10.200.1.19", "port": 80, "labels": {"app": "new"}}) == 201
t0 = time.perf_counter()
while not dns_ok("new.example.com"):
    assert time.perf_counter() - t0 < 1, "DNS never answered"
t_dns = time.perf_counter() - t0
while https_name("new.example.com") != ("200", "h1c9"):
    assert time.perf_counter() - t0 < 1, "ingress never routed"
t_http = time.perf_counter() - t0
print(f"after the API answered: DNS in {t_dns*1000:.2f} ms, ingress 200 from h1c9 in {t_http*1000:.2f} ms")
assert api("DELETE", "/v1/containers/h1c9") == 200
t0 = time.perf_counter()
while dns_ok("new.example.com") or https_name("new.example.com")[0] != "404":
    assert time.perf_counter() - t0 < 1, "still served 1 s after removal"
print(f"removed: gone from DNS and ingress in {(time.perf_counter() - t0)*1000:.2f} ms")
PY
pass "$(tr '\n' ';' < "$LOGDIR/runtime.txt")"

# the static FDB follows: a container on h2 with a MAC, added on h1
on h1 "$VXGATE" ctl add --name far --ip 10.200.2.77 --port 80 --mac 02:00:0a:c8:02:4d --node h2 --label app=far >/dev/null
on h1 "$VXGATE" ctl fdb | grep -E "02:00:0a:c8:02:4d +10\.99\.0\.2:4789 +static" >/dev/null \
  || fail "no static FDB entry: $(on h1 "$VXGATE" ctl fdb)"
on h1 "$VXGATE" ctl rm far >/dev/null
fdb=$(on h1 "$VXGATE" ctl fdb) || fail "vxgate ctl fdb failed"
echo "$fdb" | grep -q "10.99.0.2:4789" || fail "ctl fdb lists no entry for h2 (control): $fdb"
echo "$fdb" | grep -q "02:00:0a:c8:02:4d" && fail "FDB entry stayed after removal: $fdb"
pass "a container of h2 added through h1's API becomes a static FDB entry, and goes with it"
