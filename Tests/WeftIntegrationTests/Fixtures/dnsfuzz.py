#!/usr/bin/env python3
"""Throws malformed DNS at a resolver address (stdlib only): random bytes,
valid queries cut at every length, compression loops, absurd counts, and
responses posing as queries. Prints {"sent": N}. The packets go to
HOST:53 over UDP, so from a meshed workload the kernel delivers them to
weftd's DNS server."""
import argparse, json, os, random, socket, struct, time


def query(name, qtype=1, qid=0x1234):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", qtype, 1)


def cases(count, rng):
    good = query("catalog.shop.svc.cluster.local")
    for n in range(len(good)):
        yield good[:n]                                   # cut at every length
    yield struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"   # pointer to itself
    yield struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x20" + b"\x00\x01\x00\x01"   # pointer forwards
    yield struct.pack("!HHHHHH", 1, 0x0100, 65535, 65535, 65535, 65535) + good[12:]             # absurd counts
    yield struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + good[12:]                             # a response
    yield struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 1) + good[12:] + b"\x00\x00\x29"           # OPT cut short
    yield struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01"  # name > 255
    while True:
        yield os.urandom(rng.randint(0, 600))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--count", type=int, default=1000)
    a = p.parse_args()
    rng = random.Random(7)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    for packet in cases(a.count, rng):
        if sent >= a.count:
            break
        try:
            s.sendto(packet, (a.host, 53))
        except OSError:
            pass
        sent += 1
        if sent % 50 == 0:
            time.sleep(0.002)   # a burst larger than the socket buffer would only test the kernel
    print(json.dumps({"sent": sent}), flush=True)


if __name__ == "__main__":
    main()
