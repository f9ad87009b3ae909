#!/usr/bin/env python3
"""An HTTP/1.1 backend for the L7 tests (stdlib only).

  httpecho.py --port P --name NAME

Answers every request with 200 and a JSON body: {"name": NAME, "method": ..., "path": ...,
"headers": {lower-cased name: value}}; prints {"event": "listening"} once ready.
"""
import argparse, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    a = p.parse_args()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            out = json.dumps({"name": a.name, "method": self.command, "path": self.path,
                              "headers": {k.lower(): v for k, v in self.headers.items()},
                              "body": body.decode(errors="replace")}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_DELETE = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("0.0.0.0", a.port), Handler)
    print(json.dumps({"event": "listening", "port": a.port}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
