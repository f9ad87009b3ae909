#!/usr/bin/env python3
"""An OTLP/HTTP trace receiver for the tracing tests (PyPI opentelemetry-proto).

  otlpsink.py --listen HOST:PORT --out FILE

POST /v1/traces with Content-Type application/x-protobuf (optionally Content-Encoding gzip): the
ExportTraceServiceRequest is decoded and one JSON line per span is appended to FILE (flushed each):
  {"trace_id": hex, "span_id": hex, "parent_span_id": hex or "", "name": ..., "kind": "SPAN_KIND_CLIENT",
   "start_ns": int, "end_ns": int, "status": "STATUS_CODE_UNSET", "attributes": {key: value},
   "resource": {key: value}}
and answered 200 with an empty ExportTraceServiceResponse (application/x-protobuf). JSON bodies get
415, an undecodable body 400, any other path 404. PORT 0 picks a free port. Prints
`listening HOST:PORT` once bound.
"""
import argparse, gzip, json, socket, threading, zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

MAX_BODY = 64 << 20


def any_value(v):
    """An OTLP AnyValue as str, int, float, bool (arrays as lists, kvlists as dicts, bytes as hex)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def spans(request):
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {"trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                       "parent_span_id": s.parent_span_id.hex(), "name": s.name,
                       "kind": Span.SpanKind.Name(s.kind) if s.kind in Span.SpanKind.values() else str(s.kind),
                       "start_ns": s.start_time_unix_nano, "end_ns": s.end_time_unix_nano,
                       "status": Status.StatusCode.Name(s.status.code)
                       if s.status.code in Status.StatusCode.values() else str(s.status.code),
                       "attributes": attributes(s.attributes), "resource": resource}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    host, _, port = a.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    out = open(a.out, "a", encoding="utf-8")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def read_body(self):
            if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                parts, size = [], 0
                while True:
                    n = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if n == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    size += n
                    if size > MAX_BODY:
                        raise ValueError("body too large")
                    parts.append(self.rfile.read(n))
                    self.rfile.readline()
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                raise ValueError("body too large")
            return self.rfile.read(length) if length else b""

        def answer(self, code, body=b"", ctype="text/plain; charset=utf-8"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            try:
                body = self.read_body()
            except ValueError as e:
                self.close_connection = True
                return self.answer(413, f"{e}\n".encode())
            if self.path.split("?", 1)[0] != "/v1/traces":
                return self.answer(404, b"not found\n")
            ctype = (self.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
            if ctype != "application/x-protobuf":
                return self.answer(415, b"only application/x-protobuf is accepted\n")
            encoding = (self.headers.get("content-encoding") or "identity").strip().lower()
            try:
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding != "identity":
                    return self.answer(415, f"unsupported content-encoding {encoding}\n".encode())
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
            except (OSError, EOFError, zlib.error, DecodeError) as e:
                return self.answer(400, f"cannot decode ExportTraceServiceRequest: {e}\n".encode())
            lines = [json.dumps(s, sort_keys=False) + "\n" for s in spans(request)]
            with lock:
                for line in lines:
                    out.write(line)
                    out.flush()
            self.answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        def do_GET(self):
            self.answer(405 if self.path.split("?", 1)[0] == "/v1/traces" else 404, b"")

        do_PUT = do_DELETE = do_HEAD = do_GET

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    server = Server((host, int(port)), Handler)
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"listening {shown}:{bound_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
