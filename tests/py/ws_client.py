"""A WebSocket client for the L7 protocol tests (tests/tests/l7_protocols.rs),
with the `websockets` package: reads the server's greeting, sends text
messages and a large binary one, checks each echo, closes cleanly, and prints
what happened as one JSON document.

usage: ws_client.py URL
"""

import asyncio
import hashlib
import json
import os
import sys

from websockets.asyncio.client import connect

TIMEOUT = 20  # seconds per step: a proxy that withholds a frame fails, never hangs


async def main():
    url = sys.argv[1]
    out = {"texts": [], "binary": None}
    async with asyncio.timeout(60):
        async with connect(url, max_size=None, open_timeout=TIMEOUT) as ws:
            out["greeting"] = await asyncio.wait_for(ws.recv(), TIMEOUT)
            for i in range(5):
                text = f"message {i} " + "é" * i
                await ws.send(text)
                echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
                out["texts"].append(echo == text)
            blob = os.urandom(3 << 19)  # 1.5 MiB
            await ws.send(blob)
            echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
            out["binary"] = {
                "sent": len(blob),
                "received": len(echo),
                "same": hashlib.sha256(echo).digest() == hashlib.sha256(blob).digest(),
                "type": type(echo).__name__,
            }
            await ws.close()
            out["close_code"] = ws.close_code
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
