#!/usr/bin/env python3
"""A gRPC server and client for the L7 tests (grpcio, plaintext HTTP/2; messages are raw bytes,
so no generated code is needed).

  grpcecho.py serve --port P --name NAME
      Service weft.test.Echo:
        Say (unary)          answers NAME + ":" + the request
        Count (server-streaming)
                             the request is a number N: answers N messages "NAME:0" .. "NAME:N-1"
        Chat (bidirectional) answers each message as it comes: NAME + ":" + message
        Fail (unary)         fails with status FAILED_PRECONDITION, details "asked to fail", and
                             trailing metadata weft-detail: NAME
      Prints {"event": "listening"} once ready.

  grpcecho.py call --target HOST:PORT [--count N]
      Calls each method once (Count with N, Chat with N messages) and prints one JSON line:
      {"say": ..., "count": [...], "chat": [...], "fail": {"code", "details", "trailer"},
       "unary_calls_ok": K, "error": ...}; --unary N also makes N Say calls on one channel.
"""
import argparse, json, sys, time
from concurrent import futures

import grpc

SERVICE = "weft.test.Echo"


def serve(a):
    name = a.name.encode()

    def say(request, context):
        return name + b":" + request

    def count(request, context):
        for i in range(int(request or b"0")):
            yield name + b":" + str(i).encode()

    def chat(requests, context):
        for message in requests:
            yield name + b":" + message

    def fail(request, context):
        context.set_trailing_metadata((("weft-detail", a.name),))
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to fail")

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"0.0.0.0:{a.port}")
    server.start()
    print(json.dumps({"event": "listening", "port": a.port}), flush=True)
    server.wait_for_termination()


def call(a):
    result = {"say": None, "count": [], "chat": [], "fail": None, "unary_calls_ok": 0, "error": None}
    try:
        with grpc.insecure_channel(a.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=a.timeout)
            say = channel.unary_unary(f"/{SERVICE}/Say")
            result["say"] = say(b"hello", timeout=a.timeout).decode()
            count = channel.unary_stream(f"/{SERVICE}/Count")
            result["count"] = [m.decode() for m in count(str(a.count).encode(), timeout=a.timeout)]
            chat = channel.stream_stream(f"/{SERVICE}/Chat")
            result["chat"] = [m.decode() for m in chat(iter([f"c{i}".encode() for i in range(a.count)]), timeout=a.timeout)]
            fail = channel.unary_unary(f"/{SERVICE}/Fail")
            try:
                fail(b"x", timeout=a.timeout)
                result["fail"] = {"code": "OK"}
            except grpc.RpcError as e:
                trailer = dict(e.trailing_metadata() or ()).get("weft-detail")
                result["fail"] = {"code": e.code().name, "details": e.details(), "trailer": trailer}
            for i in range(a.unary):
                if say(str(i).encode(), timeout=a.timeout).decode().endswith(":" + str(i)):
                    result["unary_calls_ok"] += 1
    except grpc.RpcError as e:
        result["error"] = f"{e.code().name}: {e.details()}"
    except Exception as e:  # noqa: BLE001 - the test prints whatever went wrong
        result["error"] = repr(e)
    print(json.dumps(result), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    c = sub.add_parser("call")
    c.add_argument("--target", required=True)
    c.add_argument("--count", type=int, default=5)
    c.add_argument("--unary", type=int, default=0)
    c.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()
    serve(a) if a.command == "serve" else call(a)


if __name__ == "__main__":
    main()
