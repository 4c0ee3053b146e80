"""For the crash tests. `server IP PORT`: listen, print "listening", accept one connection,
send b"hello", print "accepted", then sleep (to be killed). `server-fork IP PORT`: the same,
and after "accepted" fork a child that sleeps 30 s, and print "forked PID". `client IP PORT`: connect to
peer.py's port 7002, read its 10 bytes, print "blocked", then block in recv; print
"error NAME" when it fails. `keepalive IP PORT`: the same with keep-alives on (1 s idle, 1 s
interval, 2 probes). `keepalive-server IP PORT`: a listener with those options; accept one
connection, send b"hello", print "blocked", block in recv and print how it ended."""
import os
import socket
import sys
import time

mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])


def keepalive(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)


def accept_one(options=None):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if options:
        options(l)
    l.bind((ip, port))
    l.listen(4)
    print("listening", flush=True)
    c, _ = l.accept()
    c.sendall(b"hello")
    return c


def block_in_recv(s):
    print("blocked", flush=True)
    try:
        r = s.recv(100)
        print(f"returned {r!r}", flush=True)
    except OSError as e:
        print(f"error {type(e).__name__}", flush=True)


if mode == "keepalive-server":
    # The options on the listener: the accepted connection inherits them, as on Linux.
    block_in_recv(accept_one(keepalive))
elif mode in ("server", "server-fork"):
    c = accept_one()
    print("accepted", flush=True)
    if mode == "server-fork":
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        print(f"forked {pid}", flush=True)
    time.sleep(60)
else:
    if mode == "keepalive":
        # SO_KEEPALIVE before connect, the timing after: both must reach the engine.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.settimeout(5)
        s.connect((ip, port))
        keepalive(s)
    else:
        s = socket.create_connection((ip, port), timeout=5)
    s.settimeout(None)
    got = b""
    while len(got) < 10:
        got += s.recv(10 - len(got))
    block_in_recv(s)
