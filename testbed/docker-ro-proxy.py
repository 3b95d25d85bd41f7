#!/usr/bin/env python3
"""A read-only Docker Engine API proxy for tests: listens on TCP, forwards to dockerd's unix
socket only GET requests for the paths vxgate needs (version, containers list, inspect,
events), answers everything else 403, and logs one line per request: "ALLOW GET /path" or
"DENY METHOD /path". One request per connection (it sends "Connection: close" upstream and
forwards nothing else the client writes), so a second request cannot slip past the check.

    docker-ro-proxy.py LISTEN_HOST:PORT /path/to/docker.sock LOGFILE
"""
import asyncio
import re
import sys

ALLOWED = re.compile(rb"^(/v[0-9.]+)?/(version|_ping|events|containers/json|containers/[^/?]+/json)(\?.*)?$")


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(creader, cwriter, sock, log):
    try:
        head = await creader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        cwriter.close()
        return
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    method, path = (parts[0], parts[1]) if len(parts) >= 3 else (b"?", b"?")
    if method != b"GET" or not ALLOWED.match(path):
        log.write(f"DENY {method.decode(errors='replace')} {path.decode(errors='replace')}\n")
        log.flush()
        cwriter.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await cwriter.drain()
        cwriter.close()
        return
    log.write(f"ALLOW GET {path.decode(errors='replace')}\n")
    log.flush()
    kept = [l for l in lines[1:] if l and not l.lower().startswith(b"connection:")]
    upstream_head = b"\r\n".join([lines[0]] + kept + [b"Connection: close", b"", b""])
    try:
        ureader, uwriter = await asyncio.open_unix_connection(sock)
    except OSError:
        cwriter.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await cwriter.drain()
        cwriter.close()
        return
    uwriter.write(upstream_head)
    await uwriter.drain()
    await pipe(ureader, cwriter)
    uwriter.close()


async def main():
    listen, sock, logfile = sys.argv[1], sys.argv[2], sys.argv[3]
    host, port = listen.rsplit(":", 1)
    log = open(logfile, "a")
    server = await asyncio.start_server(lambda r, w: handle(r, w, sock, log), host, int(port))
    async with server:
        await server.serve_forever()


asyncio.run(main())
