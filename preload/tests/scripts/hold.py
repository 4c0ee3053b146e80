"""For the crash tests. `server IP PORT`: listen, print "listening", accept one connection,
send b"hello", print "accepted", then sleep (to be killed). `server-fork IP PORT`: the same,
and after "accepted" fork a child that sleeps 30 s, and print "forked PID". `client IP PORT`: connect to
peer.py's port 7002, read its 10 bytes, print "blocked", then block in recv; print
"error NAME" when it fails."""
import os
import socket
import sys
import time

mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode in ("server", "server-fork"):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((ip, port))
    l.listen(4)
    print("listening", flush=True)
    c, _ = l.accept()
    c.sendall(b"hello")
    print("accepted", flush=True)
    if mode == "server-fork":
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        print(f"forked {pid}", flush=True)
    time.sleep(60)
else:
    s = socket.create_connection((ip, port), timeout=5)
    s.settimeout(None)
    got = b""
    while len(got) < 10:
        got += s.recv(10 - len(got))
    print("blocked", flush=True)
    try:
        r = s.recv(100)
        print(f"returned {r!r}", flush=True)
    except OSError as e:
        print(f"error {type(e).__name__}", flush=True)
