#!/usr/bin/env python3
"""Writes the seed corpora under corpus/ (run from fuzz/). The tunnel seeds are
HTTP/2 as a client writes it: preface, SETTINGS, then CONNECT streams (HPACK
literals, no Huffman), DATA and control frames."""
import os, struct

def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0)  # empty SETTINGS
SETTINGS_ACK = frame(4, 1, 0)

def lit(index, value):
    """Literal header field without indexing, name from the static table."""
    v = value.encode()
    return bytes([index]) + bytes([len(v)]) + v

def connect(stream, authority, end_stream=False):
    block = lit(2, "CONNECT") + lit(1, authority)  # :method, :authority
    return frame(1, 0x4 | (0x1 if end_stream else 0), stream, block)

def data(stream, payload, end=False):
    return frame(0, 0x1 if end else 0, stream, payload)

TUNNEL = {
    "connect_accepted": PREFACE + SETTINGS_ACK + connect(1, "10.0.0.1:8080") + data(1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") + data(1, b"", True),
    "connect_refused": PREFACE + connect(1, "10.0.0.1:8081"),
    "connect_ipv6": PREFACE + connect(1, "[fd00::1]:443") + data(1, b"hello", True),
    "bad_authority": PREFACE + connect(1, "not-an-address"),
    "not_connect": PREFACE + frame(1, 0x5, 1, bytes([0x82, 0x86, 0x84]) + lit(1, "x")),  # GET http /
    "many_streams": PREFACE + b"".join(connect(s, f"10.0.0.{s}:80") + data(s, b"x" * s) for s in range(1, 20, 2))
        + frame(3, 0, 3, struct.pack(">I", 8))  # RST_STREAM CANCEL
        + frame(8, 0, 0, struct.pack(">I", 1 << 20))  # WINDOW_UPDATE
        + frame(6, 0, 0, b"pingpong")  # PING
        + frame(7, 0, 0, struct.pack(">II", 19, 0)),  # GOAWAY
    "preface_only": PREFACE,
}

def laughs(levels):
    s = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, levels + 1):
        s += f"l{i}: &l{i} [" + ", ".join([f"*l{i-1}"] * 9) + "]\n"
    return s

AUTHZ = """apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  action: ALLOW
  rules:
    - from: [{source: {principals: ["cluster.local/ns/shop/sa/web"], namespaces: [shop]}}]
      to: [{operation: {ports: [8080], methods: [GET]}}]
    - from: [{source: {}}]
      to: [{operation: {}}]
"""

CONFIG = {
    "example_mesh": open("../examples/mesh.yaml").read(),
    "billion_laughs": laughs(9),
    "deep_nesting": "- " * 100 + "x\n",
    "authz": AUTHZ,
    "anchors_ok": "a: &a {name: x, namespace: shop}\nkind: Namespace\napiVersion: v1\nmetadata: *a\n",
}

for name, body in TUNNEL.items():
    open(os.path.join("corpus/tunnel_connect", name), "wb").write(body)
for name, body in CONFIG.items():
    open(os.path.join("corpus/config_yaml", name + ".yaml"), "w").write(body)
