#!/usr/bin/env python3
"""HTTPS load for e2e tests: new TLS connections to h1's ingress (10.99.0.1:443) asking for
https://web.example.com/ every 20 ms until STOPFILE exists (or SECONDS pass). Each failure is
printed with its time ("failed at T: why"), then "https ok=N failed=N". Exits 1 when a request
failed or fewer than MIN_OK succeeded.

    https-load.py CAFILE STOPFILE SECONDS MIN_OK
"""
import os, socket, ssl, sys, time

cafile, stopfile, seconds, min_ok = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
ctx = ssl.create_default_context(cafile=cafile)
ok = failed = 0
end = time.time() + seconds
while time.time() < end and not os.path.exists(stopfile):
    try:
        s = ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=5), server_hostname="web.example.com")
        s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        if data.startswith(b"HTTP/1.1 200"):
            ok += 1
        else:
            failed += 1
            print(f"failed at {time.time():.3f}:", data.split(b"\r\n")[0], flush=True)
    except Exception as e:
        failed += 1
        print(f"failed at {time.time():.3f}:", e, flush=True)
    time.sleep(0.02)
print(f"https ok={ok} failed={failed}", flush=True)
sys.exit(1 if failed or ok < min_ok else 0)
