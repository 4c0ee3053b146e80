"""The peer of semantics.py, run on Linux: 7001 closes each connection at once, 7002 sends
b"hello12345" and holds the connection until the client closes it, 7004 reads until EOF,
7005 echoes, 7006 reads a port number (2 bytes) and connects back to the client's address
at that port, sends b"back" there and holds that connection until the client closes it
(noting how it ended, as 7008 does, by its own port),
7007 reads nothing for half a second, then reads until EOF, 7008 reads until EOF or a reset
and notes which, by the client's port, and 7009 reads such a port (2 bytes) and answers
b"eof", b"reset" or b"pending", 7012 resets each connection after 0.2 s, 7014 sends 384 KiB
and resets the connection once the client has acknowledged every byte, 7016 sends its FIN and
resets the connection 0.2 s later. Nothing listens on
7003 (7010, 7011, 7013 and 7015 are semantics.py's own)."""
import fcntl
import socket
import struct
import sys
import termios
import threading
import time

HOST = sys.argv[1]


def serve(port, handle):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, port))
    s.listen(64)
    while True:
        c, addr = s.accept()
        threading.Thread(target=handle, args=(c, addr), daemon=True).start()


def close_at_once(c, _addr):
    c.close()


def reset_soon(c, _addr):
    # Not at once: the client's connect is to see the connection up first.
    time.sleep(0.2)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def send_then_reset(c, _addr):
    # More than the preload service's receive ring (256 KiB), less than it and the engine's
    # together: the client reads after a while, every byte first, then the reset.
    c.sendall(b"r" * (384 * 1024))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        queued = struct.unpack("i", fcntl.ioctl(c.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        if queued == 0:
            break
        time.sleep(0.01)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def fin_then_reset(c, _addr):
    c.shutdown(socket.SHUT_WR)
    time.sleep(0.2)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def hello_then_hold(c, _addr):
    c.sendall(b"hello12345")
    while c.recv(4096):
        pass
    c.close()


def drain(c, _addr):
    while c.recv(65536):
        pass
    c.close()


def connect_back(c, _addr):
    port = int.from_bytes(c.recv(2), "big")
    try:
        b = socket.create_connection((c.getpeername()[0], port), timeout=5)
        b.settimeout(None)
        b.sendall(b"back")
        note_end(b, b.getsockname())
    except OSError:
        pass
    c.close()


def drain_later(c, _addr):
    time.sleep(0.5)
    drain(c, None)


ENDS = {}


def note_end(c, addr):
    # The port as accepted: a connection reset before this thread runs has no peer name.
    port = addr[1]
    try:
        while c.recv(65536):
            pass
        ENDS[port] = b"eof"
    except ConnectionResetError:
        ENDS[port] = b"reset"
    c.close()


def tell_end(c, _addr):
    port = int.from_bytes(c.recv(2), "big")
    c.sendall(ENDS.get(port, b"pending"))
    c.close()


def echo(c, _addr):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()


for port, h in ((7001, close_at_once), (7002, hello_then_hold), (7004, drain), (7005, echo), (7006, connect_back), (7007, drain_later),
                (7008, note_end), (7009, tell_end), (7012, reset_soon), (7014, send_then_reset),
                (7016, fin_then_reset)):
    threading.Thread(target=serve, args=(port, h), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
