#!/usr/bin/env python3
"""A container's HTTP server in the testbed: GET answers with the container's name; POST and
PUT answer with the SHA-256 of the body, so tests can check uploads end to end."""
import argparse
import hashlib
import http.server
import socketserver


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
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.reply(name)

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
