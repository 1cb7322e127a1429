"""A gRPC client for the L7 protocol tests (tests/tests/l7_protocols.rs):
calls each method of grpc_server.py at TARGET and prints what came back as
one JSON document. A call that fails is recorded with its status, not raised,
so the test sees every outcome.

usage: grpc_client.py TARGET
"""

import json
import queue
import sys

import grpc

SERVICE = "weft.test.Echo"
TIMEOUT = 20  # seconds per call: a proxy that withholds a message fails, never hangs


def outcome(call):
    try:
        return {"code": "OK", "value": call()}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}


def main():
    target = sys.argv[1]
    with grpc.insecure_channel(target) as channel:
        def method(kind, name):
            return getattr(channel, kind)(f"/{SERVICE}/{name}")

        unary = method("unary_unary", "Unary")
        collect = method("stream_unary", "Collect")
        expand = method("unary_stream", "Expand")
        chat = method("stream_stream", "Chat")
        missing = method("unary_unary", "Missing")

        out = {}
        out["unary"] = [
            outcome(lambda i=i: json.loads(unary(f"hello {i}".encode(), timeout=TIMEOUT)))
            for i in range(4)
        ]
        big = b"x" * (1 << 20)
        out["collect"] = outcome(
            lambda: json.loads(collect(iter([b"a", big, b"bc"]), timeout=TIMEOUT))
        )
        out["expand"] = outcome(
            lambda: [json.loads(m) for m in expand(b"5", timeout=TIMEOUT)]
        )
        out["chat"] = outcome(lambda: ping_pong(chat))
        out["missing"] = outcome(lambda: missing(b"thing-42", timeout=TIMEOUT))
    print(json.dumps(out))


def ping_pong(chat):
    """Bidirectional, in lock step: each message is sent only after the
    answer to the one before came back, which a proxy that buffered either
    direction until the end would never let happen."""
    outgoing = queue.Queue()
    outgoing.put(b"ping 0")

    def requests():
        while (message := outgoing.get()) is not None:
            yield message

    answers = []
    for answer in chat(requests(), timeout=TIMEOUT):
        answers.append(json.loads(answer))
        n = len(answers)
        outgoing.put(f"ping {n}".encode() if n < 3 else None)
    return answers


if __name__ == "__main__":
    main()
