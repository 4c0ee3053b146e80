"""The peer of semantics.py, run on Linux: 7001 closes each connection at once, 7002 sends
b"hello12345" and holds the connection until the client closes it, 7004 reads until EOF,
7005 echoes, 7006 reads a port number (2 bytes) and connects back to the client's address
at that port, sends b"back" there and holds that connection until the client closes it,
7007 reads nothing for half a second, then reads until EOF. Nothing listens on 7003."""
import socket
import sys
import threading
import time

HOST = sys.argv[1]


def serve(port, handle):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def close_at_once(c):
    c.close()


def hello_then_hold(c):
    c.sendall(b"hello12345")
    while c.recv(4096):
        pass
    c.close()


def drain(c):
    while c.recv(65536):
        pass
    c.close()


def connect_back(c):
    port = int.from_bytes(c.recv(2), "big")
    try:
        b = socket.create_connection((c.getpeername()[0], port), timeout=5)
        b.settimeout(None)
        b.sendall(b"back")
        while b.recv(4096):
            pass
        b.close()
    except OSError:
        pass
    c.close()


def drain_later(c):
    time.sleep(0.5)
    drain(c)


def echo(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()


for port, h in ((7001, close_at_once), (7002, hello_then_hold), (7004, drain), (7005, echo), (7006, connect_back), (7007, drain_later)):
    threading.Thread(target=serve, args=(port, h), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
