#!/usr/bin/env python3
"""A container's HTTP server in the testbed: GET answers with the container's name; POST and
PUT answer with the SHA-256 of the body, so tests can check uploads end to end; GET /bytes/N
streams N bytes of a fixed pattern (pattern(N) below); GET /sleep/S answers after S seconds; GET /headers answers with the request's header lines;
plain replies carry the request target as received in X-Path;
GET /ws upgrades to a WebSocket that
echoes every message."""
import argparse
import base64
import hashlib
import http.server
import socketserver
import struct
import time

PATTERN = bytes(range(256)) * 256  # 64 KiB block


def pattern(n):
    """The bytes GET /bytes/N sends, for tests to compare against."""
    full, rest = divmod(n, len(PATTERN))
    return PATTERN * full + PATTERN[:rest]


def ws_echo(rfile, wfile):
    """Echoes WebSocket frames (RFC 6455) until a close frame or EOF."""
    while True:
        head = rfile.read(2)
        if len(head) < 2:
            return
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", rfile.read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", rfile.read(8))[0]
        mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = bytearray(rfile.read(length))
        for i in range(len(data)):
            data[i] ^= mask[i % 4]
        if opcode == 8:
            wfile.write(b"\x88\x00")
            wfile.flush()
            return
        if opcode == 9:
            opcode = 10  # ping -> pong
        n = len(data)
        if n < 126:
            hdr = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        wfile.write(hdr + bytes(data))
        wfile.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=80)
    args = ap.parse_args()
    name = args.name.encode() + b"\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, body, ctype="text/plain"):
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Container", args.name)
            # the request target as the container received it (after a proxy's rewrite)
            self.send_header("X-Path", self.path)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
                key = self.headers.get("Sec-WebSocket-Key", "")
                accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.send_header("X-Container", args.name)
                self.end_headers()
                self.wfile.flush()
                ws_echo(self.rfile, self.wfile)
                self.close_connection = True
                return
            if self.path == "/headers":
                # the request's header lines as received, in order, duplicates kept
                self.reply("".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items()).encode())
                return
            if self.path.startswith("/sleep/"):
                time.sleep(float(self.path[len("/sleep/"):]))
                self.reply(name)
                return
            if self.path.startswith("/bytes/"):
                n = int(self.path[len("/bytes/"):])
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(n))
                self.send_header("X-Container", args.name)
                self.end_headers()
                full, rest = divmod(n, len(PATTERN))
                for _ in range(full):
                    self.wfile.write(PATTERN)
                self.wfile.write(PATTERN[:rest])
                return
            self.reply(name)

        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(name)))
            self.end_headers()

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            h = hashlib.sha256()
            while length > 0:
                chunk = self.rfile.read(min(length, 1 << 16))
                if not chunk:
                    break
                h.update(chunk)
                length -= len(chunk)
            self.reply(h.hexdigest().encode() + b"\n")

        do_PUT = do_POST

        def log_message(self, *a):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    Server(("0.0.0.0", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
