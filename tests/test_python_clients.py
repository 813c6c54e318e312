"""The official Python SDK's ``Info`` and ccxt against hlbook, and curl: real clients over HTTP."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from server_support import send, settle, sim_and_server, subscribe
from trio_websocket import open_websocket_url

pytestmark = pytest.mark.slow


async def test_sdk_info_constructs_and_its_l2_snapshot_equals_the_channel(tmp_path: Path) -> None:
    from hyperliquid.info import Info

    async with (
        sim_and_server(tmp_path) as (handle, node),
        open_websocket_url(handle.url) as ws,
    ):
        # The constructor asks for spotMeta and meta: the node answers, through hlbook.
        info = await trio.to_thread.run_sync(lambda: Info(base_url=handle.http_url, skip_ws=True))
        assert info.name_to_coin["BTC"] == "BTC"
        assert "PURR/USDC" in info.name_to_coin
        await send(ws, subscribe("BTC", "l2Book"))
        await settle(handle, node)
        last: dict[str, Any] = {}
        with trio.move_on_after(0.5):
            while True:
                message = json.loads(await ws.get_message())
                if message["channel"] == "l2Book":
                    last = message["data"]
        snapshot = await trio.to_thread.run_sync(info.l2_snapshot, "BTC")
        # The same book: the answer carries the books' time, the last push the time of the
        # last block that changed this view.
        assert snapshot["levels"] == last["levels"]
        books = handle.books
        assert books is not None
        assert snapshot["time"] == books.time >= last["time"]


async def test_ccxt_loads_markets_and_reads_the_book(tmp_path: Path) -> None:
    import ccxt

    async with sim_and_server(tmp_path, fallback=True) as (handle, node):
        exchange = ccxt.hyperliquid(
            {"urls": {"api": {"public": handle.http_url, "private": handle.http_url}}}
        )
        markets = await trio.to_thread.run_sync(exchange.load_markets)
        assert "BTC/USDC:USDC" in markets
        assert "PURR/USDC" in markets
        await settle(handle, node)
        book = await trio.to_thread.run_sync(exchange.fetch_order_book, "BTC/USDC:USDC")
        books = handle.books
        assert books is not None
        btc = books.book("BTC")
        assert btc is not None
        best = btc.best("B")
        assert best is not None
        assert book["bids"][0][0] == float(best.px_str)
        assert book["timestamp"] == books.time


async def test_curl_reads_health(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed for this test"
    async with sim_and_server(tmp_path) as (handle, _node):
        result = await trio.run_process(
            [curl, "-s", "-i", f"{handle.http_url}/health"], capture_stdout=True
        )
        head, _, body = result.stdout.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 200 OK")
        assert "content-type: application/json" in head.lower()
        assert json.loads(body)["status"] == "live"
