"""Socket semantics, one line per case: run once on kernel sockets and once on the engine
(LD_PRELOAD); the two outputs must be equal. Arguments: the peer's address (peer.py runs
there) and this side's own address (for the cases that listen)."""
import errno
import fcntl
import select
import socket
import struct
import sys
import termios
import time

PEER, OWN = sys.argv[1], sys.argv[2]


def err(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) else type(e).__name__


def case(name):
    def wrap(f):
        try:
            out = f()
        except OSError as e:
            out = "raised " + err(e)
        print(f"{name}: {out}", flush=True)
        return f
    return wrap


@case("connect to a closed port")
def _():
    s = socket.socket()
    try:
        s.connect((PEER, 7003))
        return "connected"
    except OSError as e:
        return err(e)
    finally:
        s.close()


@case("nonblocking connect to a closed port, then SO_ERROR")
def _():
    s = socket.socket()
    s.setblocking(False)
    r = s.connect_ex((PEER, 7003))
    p = select.poll()
    p.register(s, select.POLLOUT)
    ev = p.poll(5000)
    bits = ev[0][1] if ev else 0
    e1 = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    e2 = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    s.close()
    names = [n for n, b in (("OUT", select.POLLOUT), ("ERR", select.POLLERR), ("HUP", select.POLLHUP)) if bits & b]
    return f"{errno.errorcode[r]} poll={'|'.join(names)} SO_ERROR={errno.errorcode.get(e1, e1)} then {e2}"


def wait_out(s):
    p = select.poll()
    p.register(s, select.POLLOUT)
    p.poll(5000)


def echo_once(s):
    s.setblocking(True)
    s.settimeout(5)
    s.sendall(b"again")
    return s.recv(100)


@case("connect again after a refused connect: blocking, nonblocking, from a bound port")
def _():
    out = []
    s = socket.socket()
    try:
        s.connect((PEER, 7003))
    except OSError as e:
        out.append(err(e))
    s.connect((PEER, 7005))
    out.append(f"then connected, echo {echo_once(s)!r}")
    s.close()
    # Nonblocking: the error once, the next connect ECONNABORTED, then a new connection.
    s = socket.socket()
    s.setblocking(False)
    out.append(errno.errorcode.get(s.connect_ex((PEER, 7003)), "0"))
    wait_out(s)
    out.append(f"SO_ERROR {errno.errorcode.get(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), '0')}")
    for _ in range(2):
        out.append(errno.errorcode.get(s.connect_ex((PEER, 7005)), "0"))
    wait_out(s)
    out.append(f"then {errno.errorcode.get(s.connect_ex((PEER, 7005)), '0')}, echo {echo_once(s)!r}")
    s.close()
    # Edge-triggered epoll: the next connection's readiness is a new edge.
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((PEER, 7003))
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLET)
    first = bool(ep.poll(5))
    s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    s.connect_ex((PEER, 7005))
    s.connect_ex((PEER, 7005))
    second = [ev & select.EPOLLOUT != 0 for _, ev in ep.poll(5)]
    out.append(f"epoll edges {first} {second}")
    ep.close()
    s.close()
    # A nonblocking connect whose error no call reported: the next connect reports it.
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((PEER, 7003))
    wait_out(s)
    out.append(errno.errorcode.get(s.connect_ex((PEER, 7005)), "0"))
    s.close()
    # The bind stands: the next connection goes from the same port.
    s = socket.socket()
    s.bind((OWN, 7015))
    try:
        s.connect((PEER, 7003))
    except OSError as e:
        out.append(err(e))
    kept = s.getsockname()[1] == 7015
    s.connect((PEER, 7005))
    out.append(f"port kept {kept}, from it {s.getsockname()[1] == 7015}, echo {echo_once(s)!r}")
    s.close()
    return ", ".join(out)


@case("read after the peer closed")
def _():
    s = socket.create_connection((PEER, 7001), timeout=5)
    a = s.recv(100)
    b = s.recv(100)
    s.close()
    return f"{a!r} {b!r}"


@case("write after shutdown(SHUT_WR)")
def _():
    s = socket.create_connection((PEER, 7004), timeout=5)
    s.sendall(b"x" * 1000)
    s.shutdown(socket.SHUT_WR)
    try:
        s.send(b"y")
        r = "sent"
    except OSError as e:
        r = err(e)
    s.close()
    return r


@case("nonblocking accept with nothing pending")
def _():
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((OWN, 7101))
    l.listen(8)
    l.setblocking(False)
    try:
        l.accept()
        r = "accepted"
    except OSError as e:
        r = err(e)
    try:
        l.getpeername()
        p = "peer"
    except OSError as e:
        p = err(e)
    acc = l.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    l.close()
    return f"{r}, getpeername on the listener: {p}, SO_ACCEPTCONN={acc}"


def hello():
    s = socket.create_connection((PEER, 7002), timeout=5)
    deadline = time.time() + 5
    while time.time() < deadline:
        buf = bytearray(4)
        fcntl.ioctl(s, termios.FIONREAD, buf)
        if struct.unpack("i", buf)[0] >= 10:
            break
        time.sleep(0.01)
    return s


@case("FIONREAD, MSG_PEEK, names")
def _():
    s = hello()
    buf = bytearray(4)
    fcntl.ioctl(s, termios.FIONREAD, buf)
    n = struct.unpack("i", buf)[0]
    peek = s.recv(4, socket.MSG_PEEK)
    got = s.recv(100)
    own, peer = s.getsockname(), s.getpeername()
    s.close()
    return f"FIONREAD={n} peek={peek!r} read={got!r} own_ip={own[0] == OWN} peer={peer == (PEER, 7002)}"


def epoll_case(flags):
    s = hello()
    s.setblocking(False)
    ep = select.epoll()
    ep.register(s, select.EPOLLIN | flags)
    out = []
    out.append(len(ep.poll(1)))
    out.append(s.recv(5))
    out.append(len(ep.poll(0.2)))
    out.append(s.recv(5))
    try:
        s.recv(5)
        out.append("data")
    except OSError as e:
        out.append(err(e))
    out.append(len(ep.poll(0.2)))
    ep.close()
    s.close()
    return " ".join(map(str, out))


def epoll_names(evs):
    names = (("IN", select.EPOLLIN), ("OUT", select.EPOLLOUT), ("ERR", select.EPOLLERR),
             ("HUP", select.EPOLLHUP), ("RDHUP", select.EPOLLRDHUP))
    return [(fd, "|".join(n for n, b in names if ev & b)) for fd, ev in evs]


@case("epoll registration before connect: the connection's events, with the data given")
def _():
    s = socket.socket()
    s.setblocking(False)
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP)
    s.connect_ex((PEER, 7005))
    first = epoll_names(ep.poll(5))
    s.send(b"hi")
    time.sleep(0.3)
    second = epoll_names(ep.poll(5))
    got = s.recv(10)
    s.close()
    ep.close()
    # A one-shot registration that fired before connect stays off until it is modified.
    s = socket.socket()
    s.setblocking(False)
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLONESHOT)
    fired = len(ep.poll(0.2))
    s.connect_ex((PEER, 7005))
    time.sleep(0.3)
    off = epoll_names(ep.poll(0.2))
    ep.modify(s.fileno(), select.EPOLLOUT | select.EPOLLONESHOT)
    again = epoll_names(ep.poll(5))
    s.close()
    ep.close()
    return f"{first} then {second}, echo {got!r}; one-shot fired {fired}, then {off}, modified {again}"


@case("SIOCOUTQ: written bytes count until the peer acknowledges them; 0 on a socket not connected")
def _():
    b = socket.socket()
    unbound = struct.unpack("i", fcntl.ioctl(b.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    b.close()
    # The peer reads nothing for half a second: 1 MiB waits for it.
    s = socket.create_connection((PEER, 7007), timeout=10)
    s.sendall(b"q" * (1 << 20))
    outq = lambda: struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    queued = outq() > 0
    deadline = time.monotonic() + 10
    while outq() > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    left = outq()
    s.close()
    return f"unconnected {unbound}, queued after sendall {queued}, then {left}"


@case("epoll level-triggered")
def _():
    return epoll_case(0)


@case("epoll edge-triggered")
def _():
    return epoll_case(select.EPOLLET)


def edge_out_after_running_out(send):
    # The peer reads nothing for half a second: the sends run out of room.
    s = socket.create_connection((PEER, 7007), timeout=5)
    s.setblocking(False)
    ep = select.epoll()
    ep.register(s, select.EPOLLOUT | select.EPOLLET)
    first = len(ep.poll(1))
    # Until a send takes less than it is given (or none: the buffer filled exactly).
    ran_out = False
    for _ in range(1024):
        try:
            ran_out = send(s, 1 << 20) < 1 << 20
        except BlockingIOError:
            ran_out = True
        if ran_out:
            break
    # The peer drains everything meanwhile: the space is back where it was at the report.
    time.sleep(1.5)
    then = len(ep.poll(2))
    ep.close()
    s.close()
    return f"{first} ran out={ran_out} then {then}"


@case("epoll edge-triggered EPOLLOUT after a short send, once the peer has read it all")
def _():
    chunk = bytes(1 << 20)
    return edge_out_after_running_out(lambda s, n: s.send(chunk[:n]))


@case("epoll edge-triggered EPOLLOUT after a short sendfile, once the peer has read it all")
def _():
    import os
    import tempfile
    with tempfile.TemporaryFile() as f:
        f.write(bytes(1 << 20))
        f.flush()
        return edge_out_after_running_out(lambda s, n: os.sendfile(s.fileno(), f.fileno(), 0, n))


@case("accept with the descriptor table full: EMFILE, and the connection stays queued")
def _():
    import os
    import resource
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((OWN, 7010))
    l.listen(4)
    c = socket.create_connection((PEER, 7006), timeout=5)
    c.sendall((7010).to_bytes(2, "big"))
    ready = len(select.select([l], [], [], 5)[0])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fill = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        while True:
            fill.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    try:
        l.accept()[0].close()
        first = "accepted"
    except OSError as e:
        first = err(e)
    for fd in fill:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    l.settimeout(2)
    try:
        a, _ = l.accept()
        a.settimeout(5)
        then = a.recv(4)
        a.close()
    except socket.timeout:
        then = "timed out"
    except OSError as e:
        then = err(e)
    c.close()
    l.close()
    return f"ready={ready} {first}, then {then!r}"


def poll_names(s):
    p = select.poll()
    p.register(s, select.POLLIN | select.POLLOUT | select.POLLRDHUP)
    ev = p.poll(1000)
    bits = ev[0][1] if ev else 0
    names = (("IN", select.POLLIN), ("OUT", select.POLLOUT), ("RDHUP", select.POLLRDHUP),
             ("HUP", select.POLLHUP), ("ERR", select.POLLERR))
    return "|".join(n for n, b in names if bits & b)


def shutdown_while_blocked(s, call, how):
    """Run `call` in another thread, shut `s` down (`how`) while it blocks; what the call
    gave (or the error it raised) and whether it still blocks."""
    import threading
    got = []

    def run():
        try:
            got.append(call())
        except OSError as e:
            got.append(err(e))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.2)
    s.shutdown(how)
    t.join(3)
    return f"{got} alive={t.is_alive()}"


@case("shutdown(SHUT_RD) with data received: recv returns it, then the end")
def _():
    s = hello()
    s.shutdown(socket.SHUT_RD)
    first = s.recv(100)
    then = s.recv(100)
    s.close()
    return f"{first!r} then {then!r}"


@case("shutdown(SHUT_RD) ends a recv blocked in another thread; poll after it")
def _():
    s = socket.create_connection((PEER, 7005), timeout=5)
    s.settimeout(None)
    out = shutdown_while_blocked(s, lambda: s.recv(4), socket.SHUT_RD)
    out += f" poll={poll_names(s)}"
    s.close()
    return out


@case("epoll edge-triggered: shutdown(SHUT_RD) is a new edge")
def _():
    s = hello()
    s.setblocking(False)
    ep = select.epoll()
    ep.register(s, select.EPOLLIN | select.EPOLLET)
    a = len(ep.poll(1))
    b = len(ep.poll(0.2))
    s.shutdown(socket.SHUT_RD)
    c = len(ep.poll(1))
    ep.close()
    s.close()
    return f"{a} {b} {c}"


@case("shutdown of a listener: SHUT_WR does nothing, SHUT_RDWR ends a blocked accept")
def _():
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((OWN, 7011))
    l.listen(4)
    l.shutdown(socket.SHUT_WR)
    out = shutdown_while_blocked(l, l.accept, socket.SHUT_RDWR)
    l.close()
    return out


@case("select with a ready socket and a timeout")
def _():
    s = hello()
    r, w, x = select.select([s], [s], [], 1)
    s.close()
    return f"readable={len(r)} writable={len(w)}"


@case("nonblocking connect that succeeds, connect again")
def _():
    s = socket.socket()
    s.setblocking(False)
    r = s.connect_ex((PEER, 7004))
    p = select.poll()
    p.register(s, select.POLLOUT)
    ev = p.poll(5000)
    e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    again = s.connect_ex((PEER, 7004))
    s.close()
    return f"{errno.errorcode[r]} ready={len(ev)} SO_ERROR={e} again={errno.errorcode.get(again, again)}"


def end_seen_by_peer(port):
    for _ in range(100):
        q = socket.create_connection((PEER, 7009), timeout=5)
        q.sendall(port.to_bytes(2, "big"))
        end = q.recv(16)
        q.close()
        if end != b"pending":
            break
        time.sleep(0.02)
    return end.decode()


@case("close with data queued, then with SO_LINGER on at zero, then accepted from a listener with it: the peer reads the end, then resets")
def _():
    ends = []
    for linger in (None, struct.pack("ii", 1, 0)):
        s = socket.create_connection((PEER, 7008), timeout=5)
        port = s.getsockname()[1]
        s.sendall(b"x" * 1000)
        if linger:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.close()
        ends.append(end_seen_by_peer(port))
    # An accepted socket takes its listener's SO_LINGER.
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    l.bind((OWN, 0))
    l.listen(1)
    l.settimeout(5)
    s = socket.create_connection((PEER, 7006), timeout=5)
    s.sendall(l.getsockname()[1].to_bytes(2, "big"))
    a, addr = l.accept()
    a.settimeout(5)
    back = a.recv(4)
    a.close()
    ends.append(f"{back!r} {end_seen_by_peer(addr[1])}")
    s.close()
    l.close()
    return " then ".join(ends)


@case("a signal whose handler raises ends a blocking send, recv and accept")
def _():
    import signal

    class Alarm(Exception):
        pass

    def raise_alarm(sig, frame):
        raise Alarm()

    old = signal.signal(signal.SIGALRM, raise_alarm)
    # The peer reads nothing for half a second: the send fills every buffer before.
    w = socket.create_connection((PEER, 7007), timeout=5)
    w.settimeout(None)
    s = socket.create_connection((PEER, 7002), timeout=5)
    s.recv(10)
    s.settimeout(None)
    l = socket.socket()
    l.bind((OWN, 0))
    l.listen(1)
    out = []
    try:
        for name, call in (("send", lambda: w.sendall(b"x" * (64 << 20))),
                           ("recv", lambda: s.recv(10)), ("accept", l.accept)):
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            try:
                call()
                out.append(f"{name} returned")
            except Alarm:
                out.append(f"{name} interrupted")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        s.close()
        w.close()
        l.close()
    return ", ".join(out)


@case("bind to port 0: getsockname reads the port, a second bind to it fails, listen keeps it, a connect goes from a bound port")
def _():
    a = socket.socket()
    a.bind((OWN, 0))
    port = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind((OWN, port))
        second = "bound"
    except OSError as e:
        second = err(e)
    b.close()
    a.listen(1)
    kept = a.getsockname()[1] == port
    a.close()
    c = socket.socket()
    c.bind((OWN, 0))
    cport = c.getsockname()[1]
    c.settimeout(5)
    c.connect((PEER, 7005))
    same = c.getsockname()[1] == cport
    c.sendall(b"hi")
    got = c.recv(2)
    c.close()
    return f"port known {port != 0}, second bind {second}, listen keeps it {kept}, connect from it {same}, echo {got!r}"


@case("after the peer's reset: recv reports it once, then reads the end; send fails with EPIPE; poll before and after")
def _():
    s = socket.create_connection((PEER, 7012), timeout=5)
    time.sleep(1.0)
    out = [poll_names(s)]
    import os
    f = open(__file__, "rb")
    calls = (("recv", lambda: s.recv(10)), ("recv", lambda: s.recv(10)),
             ("sendfile", lambda: os.sendfile(s.fileno(), f.fileno(), 0, 1)),
             ("send", lambda: s.send(b"x")), ("send", lambda: s.send(b"x")))
    for name, call in calls:
        try:
            out.append(f"{name} {call()!r}")
        except OSError as e:
            out.append(f"{name} {err(e)}")
    out.append(f"SO_ERROR {s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)}")
    out.append(poll_names(s))
    f.close()
    s.close()
    return ", ".join(out)


@case("bytes, then the peer's reset: recv reads every byte received before it, then reports it")
def _():
    s = socket.create_connection((PEER, 7014), timeout=10)
    # The peer's 384 KiB arrive while nothing reads them; its reset after them.
    time.sleep(1.0)
    n = 0
    try:
        while True:
            d = s.recv(65536)
            if not d:
                end = "the end"
                break
            n += len(d)
    except OSError as e:
        end = err(e)
    s.close()
    return f"{n} bytes, then {end}"


@case("the peer's FIN, then its reset: recv reads the end; the reset is SO_ERROR's, then send's EPIPE")
def _():
    s = socket.create_connection((PEER, 7016), timeout=5)
    time.sleep(1.0)
    out = [repr(s.recv(10)), repr(s.recv(10))]
    out.append(f"SO_ERROR {errno.errorcode.get(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), '0')}")
    try:
        out.append(f"send {s.send(b'x', socket.MSG_NOSIGNAL)}")
    except OSError as e:
        out.append(f"send {err(e)}")
    s.close()
    # The send reports it first.
    s = socket.create_connection((PEER, 7016), timeout=5)
    time.sleep(1.0)
    try:
        out.append(f"send {s.send(b'x', socket.MSG_NOSIGNAL)}")
    except OSError as e:
        out.append(f"send {err(e)}")
    out.append(f"SO_ERROR {errno.errorcode.get(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), '0')}")
    s.close()
    return ", ".join(out)


@case("shutdown(SHUT_RD), then the peer's reset: recv reports it once, then reads the end")
def _():
    s = socket.create_connection((PEER, 7012), timeout=5)
    s.shutdown(socket.SHUT_RD)
    time.sleep(1.0)
    out = []
    for _ in range(2):
        try:
            out.append(repr(s.recv(10)))
        except OSError as e:
            out.append(err(e))
    s.close()
    return ", ".join(out)


@case("a listener shut down keeps its port: another bind to it fails, listening again works")
def _():
    l = socket.socket()
    l.bind((OWN, 7013))
    l.listen(1)
    l.shutdown(socket.SHUT_RDWR)
    b = socket.socket()
    try:
        b.bind((OWN, 7013))
        second = "bound"
    except OSError as e:
        second = err(e)
    b.close()
    try:
        l.listen(1)
        again = f"listening on {l.getsockname()[1]}"
    except OSError as e:
        again = err(e)
    l.close()
    return f"second bind {second}, {again}"


@case("dup: the copy works after the original closes; O_NONBLOCK is shared")
def _():
    s = hello()
    fd2 = socket.dup(s.fileno())
    s.setblocking(False)
    fl = fcntl.fcntl(fd2, fcntl.F_GETFL) & 0o4000 != 0
    s.close()
    c = socket.socket(fileno=fd2)
    got = c.recv(100)
    c.close()
    return f"nonblock={fl} read={got!r}"


@case("poll over a pipe and a socket")
def _():
    import os
    s = hello()
    r, w = os.pipe()
    p = select.poll()
    p.register(r, select.POLLIN)
    p.register(s, select.POLLIN)
    first = sorted(fd == s.fileno() for fd, _ in p.poll(1000))
    s.recv(100)
    os.write(w, b"!")
    second = sorted(fd == s.fileno() for fd, _ in p.poll(1000))
    os.close(r)
    os.close(w)
    s.close()
    return f"first: socket={first} then: socket={second}"


@case("epoll one-shot")
def _():
    s = hello()
    s.setblocking(False)
    ep = select.epoll()
    ep.register(s, select.EPOLLIN | select.EPOLLONESHOT)
    a = len(ep.poll(1))
    b = len(ep.poll(0.2))
    ep.modify(s, select.EPOLLIN | select.EPOLLONESHOT)
    c = len(ep.poll(1))
    ep.close()
    s.close()
    return f"{a} {b} {c}"


@case("a blocking recv in one thread while another thread sends")
def _():
    import threading
    s = socket.create_connection((PEER, 7005), timeout=5)
    got = []
    t = threading.Thread(target=lambda: got.append(s.recv(4)))
    t.start()
    time.sleep(0.1)
    s.sendall(b"ping")
    t.join(5)
    s.close()
    return f"{got}"


@case("writev and readv with overlapping buffers")
def _():
    import os
    s = socket.create_connection((PEER, 7005), timeout=5)
    out = memoryview(bytearray(b"abcdefgh"))
    sent = os.writev(s.fileno(), [out[0:6], out[2:8]])
    deadline = time.time() + 5
    while time.time() < deadline:
        buf = bytearray(4)
        fcntl.ioctl(s, termios.FIONREAD, buf)
        if struct.unpack("i", buf)[0] >= 12:
            break
        time.sleep(0.01)
    back = bytearray(9)
    mv = memoryview(back)
    got = os.readv(s.fileno(), [mv[0:6], mv[3:9]])
    s.close()
    return f"sent {sent}, read {got}: {bytes(back)!r}"


@case("epoll with maxevents 1: a ready socket and a ready pipe both come out")
def _():
    import os
    s = hello()
    r, w = os.pipe()
    os.write(w, b"x")
    ep = select.epoll()
    ep.register(s, select.EPOLLIN)
    ep.register(r, select.EPOLLIN)
    seen = set()
    for _ in range(2):
        for fd, _ in ep.poll(1, 1):
            seen.add("socket" if fd == s.fileno() else "pipe")
    ep.close()
    s.close()
    os.close(r)
    os.close(w)
    return " ".join(sorted(seen))


@case("SO_RCVTIMEO (set before connect) and SO_SNDTIMEO: a recv with nothing to read gives up")
def _():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200000))
    s.connect((PEER, 7005))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 1, 0))
    back = struct.unpack("ll", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    t = time.time()
    try:
        s.recv(10)
        out = "data"
    except OSError as e:
        out = err(e)
    waited = time.time() - t
    sent = s.send(b"ping")
    s.close()
    return f"{out} after the timeout: {0.15 <= waited < 2}, option reads back {back}, send {sent}"


@case("MSG_WAITALL waits for the whole buffer across two arrivals")
def _():
    import threading
    s = socket.create_connection((PEER, 7005), timeout=5)
    s.settimeout(None)
    s.sendall(b"ab")
    t = threading.Timer(0.2, lambda: s.sendall(b"cd"))
    t.start()
    got = s.recv(4, socket.MSG_WAITALL)
    t.join()
    s.close()
    return f"{got!r}"


@case("epoll_pwait2 with a ready socket, then with a timeout")
def _():
    import ctypes

    class Timespec(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]

    class Event(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]

    libc = ctypes.CDLL(None, use_errno=True)
    s = hello()
    ep = select.epoll()
    ep.register(s, select.EPOLLIN)
    evs = (Event * 4)()
    first = libc.epoll_pwait2(ep.fileno(), evs, 4, ctypes.byref(Timespec(1, 0)), None)
    what = (evs[0].events & select.EPOLLIN != 0, evs[0].data & 0xFFFFFFFF == s.fileno())
    s.recv(100)
    t = time.time()
    second = libc.epoll_pwait2(ep.fileno(), evs, 4, ctypes.byref(Timespec(0, 200_000_000)), None)
    waited = time.time() - t
    bad = libc.epoll_pwait2(ep.fileno(), evs, 4, ctypes.byref(Timespec(0, 2_000_000_000)), None)
    e = ctypes.get_errno()
    ep.close()
    s.close()
    return f"{first} {what}, then {second} after the timeout: {0.15 <= waited < 2}; bad timeout: {bad} {errno.errorcode.get(e)}"


@case("select and pselect with a timeout of LONG_MAX seconds, epoll_wait past EP_MAX_EVENTS")
def _():
    import ctypes

    class Timeval(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]

    class Timespec(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]

    class Event(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]

    libc = ctypes.CDLL(None, use_errno=True)
    s = hello()
    fd = s.fileno()
    forever = 2**63 - 1

    def readable():
        fds = (ctypes.c_ulong * 16)()
        fds[fd // 64] |= 1 << (fd % 64)
        return fds

    fds = readable()
    sel = libc.select(fd + 1, fds, None, None, ctypes.byref(Timeval(forever, 0)))
    fds = readable()
    psel = libc.pselect(fd + 1, fds, None, None, ctypes.byref(Timespec(forever, 0)), None)
    ep = select.epoll()
    ep.register(s, select.EPOLLIN)
    evs = (Event * 4)()
    ctypes.set_errno(0)
    big = libc.epoll_wait(ep.fileno(), evs, 2**31 - 1, 0)
    e = ctypes.get_errno()
    ok = libc.epoll_wait(ep.fileno(), evs, 4, 0)
    ep.close()
    s.close()
    return f"select {sel}, pselect {psel}, epoll_wait(INT_MAX) {big} {errno.errorcode.get(e)}, then {ok}"


@case("close_range closes an engine socket: its number is a fresh socket again")
def _():
    import os
    s = socket.create_connection((PEER, 7005), timeout=5)
    old_port = s.getsockname()[1]
    fd = s.detach()
    os.closerange(fd, fd + 1)
    try:
        os.fstat(fd)
        gone = False
    except OSError:
        gone = True
    s2 = socket.socket()
    same = s2.fileno() == fd
    s2.settimeout(5)
    s2.connect((PEER, 7005))
    s2.sendall(b"again")
    got = s2.recv(5)
    new_conn = s2.getsockname()[1] != old_port
    s2.close()
    return f"closed {gone}, number reused {same}, a new connection {new_conn}, echo {got!r}"


@case("a subprocess (vfork, close_fds) leaves the parent's socket working")
def _():
    import subprocess
    s = socket.create_connection((PEER, 7005), timeout=5)
    r = subprocess.run(["true"], close_fds=True).returncode
    s.sendall(b"after")
    got = b""
    while len(got) < 5:
        b = s.recv(5 - len(got))
        if not b:
            break
        got += b
    s.close()
    return f"child exit {r}, echo {got!r}"


@case("calls of no bytes: recv waits for data or the end and reports errors, read does not, send reports errors")
def _():
    import ctypes
    import os
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(16)

    def call(f, *args):
        ctypes.set_errno(0)
        n = f(*args)
        return str(n) if n >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")

    def r0(s, flags=0):
        return call(libc.recv, s.fileno(), buf, 0, flags)

    def s0(s):
        return call(libc.send, s.fileno(), buf, 0, socket.MSG_NOSIGNAL)

    def reads(s):
        try:
            v = os.readv(s.fileno(), [bytearray(0)])
        except OSError as e:
            v = err(e)
        return f"read {call(libc.read, s.fileno(), buf, 0)} readv {v} write {call(libc.write, s.fileno(), buf, 0)}"

    out = []
    f = open(__file__, "rb")

    def one_byte(s):
        return (f"send 1 {call(libc.send, s.fileno(), buf, 1, socket.MSG_NOSIGNAL)}"
                f" recv 1 {call(libc.recv, s.fileno(), buf, 1, socket.MSG_DONTWAIT)}"
                f" sendfile {call(libc.sendfile, s.fileno(), f.fileno(), None, 1)}")

    s = socket.socket()
    s.bind((OWN, 0))
    out.append(f"bound, not connected: recv {r0(s)} send {s0(s)} {reads(s)} {one_byte(s)}")
    s.listen(1)
    out.append(f"listening: recv {r0(s)} send {s0(s)} {reads(s)} {one_byte(s)}")
    s.close()
    f.close()
    s = socket.create_connection((PEER, 7005), timeout=5)
    s.setblocking(True)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 300_000))
    out.append(f"nothing to read: recv {r0(s, socket.MSG_DONTWAIT)}")
    t = time.monotonic()
    out.append(f"blocking recv {r0(s)} waited {time.monotonic() - t >= 0.25}")
    out.append(f"send {s0(s)} {reads(s)}")
    s.sendall(b"x")
    p = select.poll()
    p.register(s, select.POLLIN)
    p.poll(5000)
    out.append(f"data: recv {r0(s)} then {s.recv(10)!r}")
    s.shutdown(socket.SHUT_WR)
    out.append(f"after shutdown(SHUT_WR): send {s0(s)}")
    s.close()
    s = socket.create_connection((PEER, 7001), timeout=5)
    s.setblocking(True)
    time.sleep(0.3)
    out.append(f"after the peer's FIN: recv {r0(s)}")
    s.close()
    for first in ("recv", "send"):
        s = socket.create_connection((PEER, 7012), timeout=5)
        s.setblocking(True)
        time.sleep(0.5)
        one, other = (r0, s0) if first == "recv" else (s0, r0)
        out.append(f"after a reset: {first} {one(s)} then {first} {one(s)} and {other(s)} {reads(s)}")
        s.close()
    return ", ".join(out)
