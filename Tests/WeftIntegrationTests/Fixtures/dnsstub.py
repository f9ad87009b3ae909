#!/usr/bin/env python3
"""A stand-in for a node's upstream resolver (stdlib only), for the DNS tests.

  dnsstub.py --host H [--port 53]

Serves UDP and TCP. Every A question gets 203.0.113.7 with TTL 4242 (a value
no mesh answer uses, so a test can tell a forwarded answer came back
unchanged); "big.example." gets 60 A records (over 512 bytes: truncated over
UDP unless EDNS allows more). Other types get an empty NOERROR. Each query is
logged as one JSON line: {"event": "query", "name": ..., "proto": ..., "peer": [ip, port]}.
"""
import argparse, json, socket, socketserver, struct, sys, threading


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def parse_question(msg):
    labels, i = [], 12
    while msg[i] != 0:
        n = msg[i]
        labels.append(msg[i + 1:i + 1 + n].decode(errors="replace"))
        i += 1 + n
    qtype = struct.unpack("!H", msg[i + 1:i + 3])[0]
    return ".".join(labels).lower() + ".", qtype, msg[12:i + 5]


def answer(msg, limit):
    qid, flags = struct.unpack("!HH", msg[:4])
    name, qtype, question = parse_question(msg)
    records = []
    if qtype == 1:
        count = 60 if name == "big.example." else 1
        for k in range(count):
            records.append(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 4242, 4) + bytes([203, 0, 113, 7 if count == 1 else k % 250 + 1]))
    tc = 0
    body = b"".join(records)
    if limit and 12 + len(question) + len(body) > limit:
        records, body, tc = [], b"", 0x0200
    header = struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100) | tc, 1, len(records), 0, 0)
    return name, header + question + body


class UDP(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        name, out = answer(data, 512)
        emit({"event": "query", "name": name, "proto": "udp", "peer": list(self.client_address[:2])})
        sock.sendto(out, self.client_address)


class TCP(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            head = self.request.recv(2)
            if len(head) < 2:
                return
            (n,) = struct.unpack("!H", head)
            data = b""
            while len(data) < n:
                chunk = self.request.recv(n - len(data))
                if not chunk:
                    return
                data += chunk
            name, out = answer(data, None)
            emit({"event": "query", "name": name, "proto": "tcp", "peer": list(self.client_address[:2])})
            self.request.sendall(struct.pack("!H", len(out)) + out)


class ThreadedUDP(socketserver.ThreadingMixIn, socketserver.UDPServer):
    allow_reuse_address = True
    daemon_threads = True


class ThreadedTCP(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=53)
    a = p.parse_args()
    udp, tcp = ThreadedUDP((a.host, a.port), UDP), ThreadedTCP((a.host, a.port), TCP)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    emit({"event": "listening", "address": [a.host, a.port]})
    udp.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
