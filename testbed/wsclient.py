#!/usr/bin/env python3
"""A WebSocket client for tests: connects over TLS (trusting CA), sends messages and checks
each comes back; exits 0 when all echoes match, printing which container answered (its
X-Container header). Usage: wsclient.py HOST IP PORT CA [N [HOLD]]: with HOLD (seconds), the
WebSocket stays open after the echoes (no close frame) until the server ends it or HOLD
passes, and the client says which, and after how long."""
import base64
import os
import socket
import ssl
import struct
import sys
import time

host, ip, port, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
n = int(sys.argv[5]) if len(sys.argv) > 5 else 5
hold = float(sys.argv[6]) if len(sys.argv) > 6 else None
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection((ip, port), timeout=10), server_hostname=host)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
f = s.makefile("rb")
status = f.readline()
if b" 101 " not in status:
    sys.exit(f"no upgrade: {status!r}")
container = "?"
while (line := f.readline()) not in (b"\r\n", b""):
    name, _, value = line.decode().partition(":")
    if name.strip().lower() == "x-container":
        container = value.strip()


def send(opcode, data):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    n = len(data)
    hdr = struct.pack("!BB", 0x80 | opcode, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    s.sendall(hdr + mask + masked)


def recv():
    head = f.read(2)
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", f.read(2))[0]
    return head[0] & 0x0F, f.read(length)


for i in range(n):
    msg = f"hello {i} ".encode() * (i * 50 + 1)
    send(1, msg)
    op, data = recv()
    if op != 1 or data != msg:
        sys.exit(f"echo {i} differs")
if hold is None:
    send(8, b"")
    print(f"{n} echoes ok from {container}")
    sys.exit(0)
print(f"{n} echoes ok from {container}; holding", flush=True)
t0 = time.monotonic()
s.settimeout(hold)
try:
    rest = f.read(1)
    print(f"closed by the server after {time.monotonic() - t0:.1f} s" if rest == b""
          else f"unexpected data from the server: {rest!r}")
except (TimeoutError, socket.timeout):
    print(f"still open after {hold} s")
except (ConnectionError, ssl.SSLError) as e:
    print(f"closed by the server after {time.monotonic() - t0:.1f} s ({type(e).__name__})")
