#!/usr/bin/env python3
"""Socket activation as a systemd socket unit does it, for tests: binds the listed sockets
once, runs COMMAND with them as descriptors 3, 4, ... (LISTEN_FDS, LISTEN_PID,
LISTEN_FDNAMES), and runs it again each time it exits (Restart=always), the sockets staying
open in between, until the harness gets SIGTERM (passed on to the child). The child's pid is
written to PIDFILE at each start. With --no-pass nothing is bound or passed: the command binds
its own sockets (a plain restart, the positive control).

    socket-activate.py --pidfile F [--tcp NAME=IP:PORT]... [--udp NAME=IP:PORT]... [--no-pass] -- CMD...
"""
import argparse, os, signal, socket, subprocess, sys

ap = argparse.ArgumentParser()
ap.add_argument("--pidfile", required=True)
ap.add_argument("--tcp", action="append", default=[])
ap.add_argument("--udp", action="append", default=[])
ap.add_argument("--no-pass", action="store_true")
ap.add_argument("cmd", nargs=argparse.REMAINDER)
a = ap.parse_args()
cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd

socks = []
if not a.no_pass:
    for kind, specs in ((socket.SOCK_STREAM, a.tcp), (socket.SOCK_DGRAM, a.udp)):
        for spec in specs:
            name, addr = spec.split("=", 1)
            host, port = addr.rsplit(":", 1)
            s = socket.socket(socket.AF_INET, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port)))
            if kind == socket.SOCK_STREAM:
                s.listen(4096)
            socks.append((name, s))
# out of the way of 3.. so that the child's dup2 cannot overwrite one not yet moved
high = [os.dup(s.fileno()) for _, s in socks]
moved = []
for fd in high:
    moved.append(os.dup2(fd, 200 + len(moved), inheritable=False))
n = len(socks)
if n:
    os.environ["LISTEN_FDS"] = str(n)
    os.environ["LISTEN_FDNAMES"] = ":".join(name for name, _ in socks)

def preexec():
    for i, fd in enumerate(moved):
        os.dup2(fd, 3 + i)  # inheritable
    if n:
        os.environ["LISTEN_PID"] = str(os.getpid())

child = None
stopping = False

def on_term(signum, frame):
    global stopping
    stopping = True
    if child and child.poll() is None:
        child.send_signal(signal.SIGTERM)

signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)
starts = 0
while not stopping:
    child = subprocess.Popen(cmd, preexec_fn=preexec, pass_fds=list(range(3, 3 + n)))
    starts += 1
    with open(a.pidfile + ".tmp", "w") as f:
        f.write(f"{child.pid}\n")
    os.replace(a.pidfile + ".tmp", a.pidfile)
    rc = child.wait()
    print(f"socket-activate: child {child.pid} exited {rc} (start {starts})", file=sys.stderr, flush=True)
sys.exit(0)
