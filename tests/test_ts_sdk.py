"""The official TypeScript SDK against hlbook: InfoClient over HTTP and WebSocket post, and
SubscriptionClient, on Node 20 with ``ws``, over loopback."""

from pathlib import Path

import pytest
from node_support import run_ts_sdk
from server_support import settle, sim_and_server

pytestmark = pytest.mark.slow


async def test_l2book_over_http_post_and_subscription(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path) as (handle, node):
        plan = {
            "http": handle.http_url,
            "ws": handle.url,
            "subscribe": [
                ["l2Book", {"coin": "BTC"}, 3],
                ["l2Book", {"coin": "ETH", "nSigFigs": 3}, 2],
            ],
        }
        live = await run_ts_sdk(plan)
        assert live["errors"] == []
        events = live["events"]['l2Book:{"coin":"BTC"}']
        assert len(events) == 3
        assert all(event["coin"] == "BTC" for event in events)
        assert [event["time"] for event in events] == sorted(event["time"] for event in events)
        aggregated = live["events"]['l2Book:{"coin":"ETH","nSigFigs":3}'][0]
        assert all(float(level["px"]) % 10 == 0 for level in aggregated["levels"][0])

        await settle(handle, node)  # the books stop moving: HTTP and post must agree
        still = await run_ts_sdk(
            {"http": handle.http_url, "ws": handle.url, "info": [["l2Book", {"coin": "BTC"}]]}
        )
        assert still["errors"] == []
        key = 'l2Book:{"coin":"BTC"}'
        assert still["http"][key] == still["post"][key]
        books = handle.books
        assert books is not None
        book = books.book("BTC")
        assert book is not None
        best = book.best("B")
        assert best is not None
        assert still["http"][key]["levels"][0][0]["px"] == best.px_str
        assert still["http"][key]["time"] == books.time
