#!/usr/bin/env bash
# A backend killed mid-run: GETs keep succeeding (a connect failure is retried on another
# backend and ejects the dead one; the active checker keeps it out) (issue: ingress, 6).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
start_vxgate 1
start_vxgate 2
on cl /usr/bin/python3 - "$STATE/h1/tls/self-signed.crt" "$STATE/h2c1.pid" > "$LOGDIR/run.txt" <<'PY' || fail "$(cat "$LOGDIR/run.txt")"
import os, signal, socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
pid = int(open(sys.argv[2]).read())
ok = failed = 0
seen_after = set()
start = time.time()
killed_at = None
while time.time() - start < 8:
    if killed_at is None and time.time() - start > 2:
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
    try:
        s = ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=5), server_hostname="web.example.com")
        s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200"):
            ok += 1
            if killed_at is not None and time.time() - killed_at > 0.5:
                seen_after.add(body.strip().decode())
        else:
            failed += 1
            print("failed:", head.split(b"\r\n")[0], file=sys.stderr)
    except Exception as e:
        failed += 1
        print("failed:", e, file=sys.stderr)
after = sorted(seen_after)
print(f"ok={ok} failed={failed} answered after the kill: {after}")
if "h2c1" in seen_after:
    print("h2c1 still answered after it was killed", file=sys.stderr)
    sys.exit(1)
sys.exit(1 if failed or ok < 20 else 0)
PY
pass "backend killed mid-run: $(cat "$LOGDIR/run.txt")"
