#!/usr/bin/env python3
"""Load across restarts, for e2e tests: new HTTPS connections (TLS, GET /, Connection: close)
to HTTPS_ADDR for HOST every 10 ms, and DNS queries (A HOST) over UDP to DNS_ADDR every
10 ms, until STOPFILE exists. HTTPS failures are sorted: refused (the connect was refused:
no listener), in flight (connected, then reset or closed before a whole response) and other;
DNS: answered, unanswered (2 s), and the longest gap between two answers. Beside them a
prober opens (and closes) a bare TCP connection every 2 ms, counting refusals with the rest:
restarts leave a listener-less window of a few ms that requests alone may miss. One line:

  https ok=N refused=N inflight=N other=N probes=N dns ok=N unanswered=N max_gap_ms=N

    restart-load.py HTTPS_ADDR HOST DNS_ADDR STOPFILE
"""
import os, socket, ssl, struct, sys, threading, time

https_addr, host, dns_addr, stopfile = sys.argv[1:5]
hh, hp = https_addr.rsplit(":", 1)
dh, dp = dns_addr.rsplit(":", 1)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
res = {"ok": 0, "refused": 0, "inflight": 0, "other": 0, "probes": 0}
dns = {"ok": 0, "unanswered": 0, "gap": 0.0}

def https():
    while not os.path.exists(stopfile):
        try:
            raw = socket.create_connection((hh, int(hp)), timeout=10)
        except ConnectionRefusedError:
            res["refused"] += 1
            print(f"https refused at {time.time():.3f}", flush=True)
            time.sleep(0.01)
            continue
        except Exception as e:
            res["other"] += 1
            print(f"https connect failed at {time.time():.3f}: {e}", flush=True)
            time.sleep(0.01)
            continue
        try:
            s = ctx.wrap_socket(raw, server_hostname=host)
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            if data.startswith(b"HTTP/1.1 200"):
                res["ok"] += 1
            else:
                res["other"] += 1
                print(f"https bad answer at {time.time():.3f}: {data[:40]!r}", flush=True)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError, ssl.SSLEOFError, socket.timeout) as e:
            res["inflight"] += 1
            print(f"https in flight at {time.time():.3f}: {e}", flush=True)
        except Exception as e:
            res["other"] += 1
            print(f"https failed at {time.time():.3f}: {e}", flush=True)
        finally:
            raw.close()
        time.sleep(0.01)

def probe():
    while not os.path.exists(stopfile):
        try:
            socket.create_connection((hh, int(hp)), timeout=10).close()
            res["probes"] += 1
        except ConnectionRefusedError:
            res["refused"] += 1
            print(f"probe refused at {time.time():.3f}", flush=True)
        except Exception as e:
            res["other"] += 1
            print(f"probe failed at {time.time():.3f}: {e}", flush=True)
        time.sleep(0.002)

def query(qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in host.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)

def dns_load():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    last = None
    qid = 0
    while not os.path.exists(stopfile):
        qid = (qid + 1) & 0xFFFF
        s.sendto(query(qid), (dh, int(dp)))
        try:
            while True:
                data, _ = s.recvfrom(4096)
                if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                    break
            now = time.time()
            if data[3] & 0x0F == 0 and struct.unpack(">H", data[6:8])[0] > 0:
                dns["ok"] += 1
                if last is not None:
                    dns["gap"] = max(dns["gap"], now - last)
                last = now
            else:
                print(f"dns rcode {data[3] & 0x0F} at {now:.3f}", flush=True)
        except socket.timeout:
            dns["unanswered"] += 1
            print(f"dns unanswered at {time.time():.3f}", flush=True)
        time.sleep(0.01)

t = [threading.Thread(target=f) for f in (https, probe, dns_load)]
for x in t:
    x.start()
for x in t:
    x.join()
print(f"https ok={res['ok']} refused={res['refused']} inflight={res['inflight']} other={res['other']} probes={res['probes']} "
      f"dns ok={dns['ok']} unanswered={dns['unanswered']} max_gap_ms={int(dns['gap'] * 1000)}", flush=True)
