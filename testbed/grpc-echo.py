#!/usr/bin/env python3
"""A gRPC echo service for the testbed, without generated code (raw bytes messages):

  server PORT NAME [CERT KEY]
                            serves (over TLS with CERT and KEY when given) /vxgate.Echo/Unary (answers NAME:request) and
                            /vxgate.Echo/Stream (answers every message as NAME:message,
                            and sets trailing metadata "x-served-by: NAME")
  client TARGET AUTHORITY CA   calls both through TLS (TARGET = ip:port, AUTHORITY = the
                            host name the ingress routes by) and prints what came back
"""
import sys
import time
from concurrent import futures

import grpc

ident = lambda b: b  # noqa: E731 (messages are raw bytes)


def serve(port, name, cert=None, key=None):
    def unary(request, context):
        context.set_trailing_metadata((("x-served-by", name),))
        return name.encode() + b":" + request

    def stream(requests, context):
        context.set_trailing_metadata((("x-served-by", name),))
        for r in requests:
            yield name.encode() + b":" + r

    handler = grpc.method_handlers_generic_handler("vxgate.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "Stream": grpc.stream_stream_rpc_method_handler(stream, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(
            lambda r, c: c.abort(grpc.StatusCode.PERMISSION_DENIED, "no entry"), ident, ident),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    if cert:
        creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
        server.add_secure_port(f"0.0.0.0:{port}", creds)
    else:
        server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    server.wait_for_termination()


def client(target, authority, ca):
    creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
    opts = (("grpc.ssl_target_name_override", authority), ("grpc.default_authority", authority))
    with grpc.secure_channel(target, creds, options=opts) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        unary = ch.unary_unary("/vxgate.Echo/Unary", ident, ident)
        reply, call = unary.with_call(b"ping", timeout=10)
        trailers = dict(call.trailing_metadata())
        print("unary", reply.decode(), call.code().name, trailers.get("x-served-by"))
        stream = ch.stream_stream("/vxgate.Echo/Stream", ident, ident)
        msgs = [f"m{i}".encode() for i in range(5)]
        # both ways at once: each message goes out before the previous answer is read
        call = stream(iter(msgs), timeout=10)
        got = [m.decode() for m in call]
        print("stream", ",".join(got), call.code().name, dict(call.trailing_metadata()).get("x-served-by"))
        fail = ch.unary_unary("/vxgate.Echo/Fail", ident, ident)
        try:
            fail(b"x", timeout=10)
            print("fail none")
        except grpc.RpcError as e:
            print("fail", e.code().name, e.details())


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]), sys.argv[3], *sys.argv[4:6])
    else:
        client(sys.argv[2], sys.argv[3], sys.argv[4])
