"""A gRPC server for the L7 protocol tests (tests/tests/l7_protocols.rs).

grpcio's generic handlers over raw bytes, so no generated code: service
weft.test.Echo, one method of each kind, and one that fails. Every reply is
JSON naming the pod that answered, so the test sees where a route sent a call.

usage: grpc_server.py PORT POD_NAME
"""

import json
import sys
from concurrent import futures

import grpc

SERVICE = "weft.test.Echo"


def handler(pod):
    def reply(method, got):
        return json.dumps({"pod": pod, "method": method, "got": got}).encode()

    def unary(request, context):
        return reply("Unary", [request.decode()])

    def collect(requests, context):
        # Sizes, not contents: one of the messages is large.
        return reply("Collect", [len(r) for r in requests])

    def expand(request, context):
        for i in range(int(request.decode())):
            yield reply("Expand", [i])

    def chat(requests, context):
        for r in requests:
            yield reply("Chat", [r.decode()])

    def missing(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
            "Expand": grpc.unary_stream_rpc_method_handler(expand),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Missing": grpc.unary_unary_rpc_method_handler(missing),
        },
    )


def main():
    port, pod = int(sys.argv[1]), sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler(pod),))
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    print(f"listening on {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
