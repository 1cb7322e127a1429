"""A WebSocket server for the L7 protocol tests (tests/tests/l7_protocols.rs),
with the `websockets` package: greets each client first (server bytes right
after the 101), then echoes every message back unchanged, text or binary, and
prints how each connection ended.

usage: ws_server.py PORT POD_NAME
"""

import asyncio
import sys

from websockets.asyncio.server import serve


async def main():
    port, pod = int(sys.argv[1]), sys.argv[2]

    async def echo(ws):
        await ws.send(f"hello from {pod}")
        async for message in ws:
            await ws.send(message)
        # The loop ends on the client's close frame; a broken connection raises.
        print(f"closed code={ws.close_code} path={ws.request.path}", flush=True)

    async with serve(echo, "0.0.0.0", port, max_size=None):
        print(f"listening on {port}", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
