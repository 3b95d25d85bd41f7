#!/usr/bin/env python3
"""UDP datagram integrity across the overlay: `recv PORT SECONDS` counts datagrams that
arrive intact (length and content derived from their index) and corrupted ones;
`send HOST PORT COUNT SIZE` sends COUNT datagrams of SIZE bytes, each carrying its index."""
import hashlib, socket, struct, sys, time

def body(i, size):
    seed = hashlib.sha256(struct.pack("!I", i)).digest()
    return (struct.pack("!I", i) + seed * (size // 32 + 1))[:size]

if sys.argv[1] == "recv":
    port, secs = int(sys.argv[2]), float(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.5)
    good, bad, seen = 0, 0, set()
    end = time.time() + secs
    while time.time() < end:
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        if len(d) < 4:
            bad += 1
            continue
        i = struct.unpack("!I", d[:4])[0]
        if d == body(i, len(d)) and (i, len(d)) not in seen:
            seen.add((i, len(d)))
            good += 1
        else:
            bad += 1
    print(f"good={good} bad={bad}")
else:
    host, port, count, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(count):
        s.sendto(body(i, size), (host, port))
        if i % 64 == 63:
            time.sleep(0.0005)  # bursts the receiver's buffer can take
