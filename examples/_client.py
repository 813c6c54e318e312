"""Small helpers shared by the example clients (plain trio-websocket, no hlbook import)."""

import json
from collections.abc import AsyncIterator
from typing import Any

import trio
from trio_websocket import WebSocketConnection

DEFAULT_URL = "ws://127.0.0.1:8000/ws"


async def subscribe(ws: WebSocketConnection, subscription: dict[str, Any]) -> None:
    """Send one subscribe request."""
    await ws.send_message(json.dumps({"method": "subscribe", "subscription": subscription}))


async def messages(ws: WebSocketConnection, ping_every: float = 30.0) -> AsyncIterator[Any]:
    """Yield decoded messages; ping now and then so the server's idle timeout never fires."""
    async with trio.open_nursery() as nursery:

        async def keepalive() -> None:
            while True:
                await trio.sleep(ping_every)
                await ws.send_message('{"method":"ping"}')

        nursery.start_soon(keepalive)
        try:
            while True:
                message = json.loads(await ws.get_message())
                if message.get("channel") == "error":
                    print(f"server error: {message['data']}")
                yield message
        finally:
            nursery.cancel_scope.cancel()
