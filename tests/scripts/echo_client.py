#!/usr/bin/env python3
"""Linux TCP client for the interop tests: send N deterministic bytes to HOST:PORT, read
the echo back, compare SHA-256 of what was sent and what came back. Exit 0 when equal."""
import hashlib, os, socket, sys, threading, time

host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0

def chunks(total):
    # A cheap deterministic stream: a counter-keyed SHA-256 expansion, 64 KiB at a time.
    sent, block = 0, 0
    while sent < total:
        seed = hashlib.sha256(block.to_bytes(8, 'little')).digest()
        c = (seed * 2048)[: min(65536, total - sent)]
        yield c
        sent += len(c)
        block += 1

cc = os.environ.get("FLEXTOE_TCP_CC")
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
if cc:
    # Per socket, so that a test can compare like with like without touching the host.
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
s.settimeout(timeout)
t0 = time.monotonic()
s.connect((host, port))
connect_secs = time.monotonic() - t0
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sent_hash = hashlib.sha256()
recv_hash = hashlib.sha256()
received = [0]

def reader():
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        recv_hash.update(d)
        received[0] += len(d)

t = threading.Thread(target=reader)
t.start()
for c in chunks(total):
    sent_hash.update(c)
    s.sendall(c)
s.shutdown(socket.SHUT_WR)
t.join(timeout)
s.close()
ok = received[0] == total and sent_hash.digest() == recv_hash.digest()
print(f"sent {total} received {received[0]} sha256 {recv_hash.hexdigest()} connect {connect_secs:.3f} {'ok' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 1)
