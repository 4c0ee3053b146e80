"""After fork, the child's engine sockets are lost cleanly (a call fails, nothing hangs) and
the parent's keep working. Argument: the echo peer's address (peer.py, port 7005)."""
import os
import socket
import sys

s = socket.create_connection((sys.argv[1], 7005), timeout=5)
s.sendall(b"before")
assert s.recv(6) == b"before"
pid = os.fork()
if pid == 0:
    try:
        s.settimeout(2)
        s.sendall(b"child")
        r = s.recv(5)
        print(f"child: {r!r}", flush=True)
    except OSError as e:
        print(f"child: error {type(e).__name__}", flush=True)
    os._exit(0)
os.waitpid(pid, 0)
s.sendall(b"after")
print(f"parent: {s.recv(5)!r}", flush=True)
s.close()
