#!/usr/bin/env python3
"""Linux TCP echo server for the interop tests: accept one connection on HOST:PORT, echo
until the peer closes, close, exit. Prints 'listening' once ready."""
import os, socket, sys

host, port = sys.argv[1], int(sys.argv[2])
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
cc = os.environ.get("FLEXTOE_TCP_CC")
if cc:
    # Per socket (accepted sockets inherit it), so that a test can compare like with like.
    ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
ls.bind((host, port))
ls.listen(1)
ls.settimeout(60)
print("listening", flush=True)
c, _ = ls.accept()
c.settimeout(120)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
n = 0
while True:
    d = c.recv(1 << 20)
    if not d:
        break
    n += len(d)
    c.sendall(d)
c.shutdown(socket.SHUT_WR)
c.close()
print(f"echoed {n}", flush=True)
