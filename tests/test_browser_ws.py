"""A real browser as a WebSocket client: headless Chromium subscribes to l2Book, negotiating
permessage-deflate as browsers do, and receives the books hlbook holds."""

import http.server
import json
import threading
from pathlib import Path

import pytest
import trio
from browser_support import chromium
from server_support import settle, sim_and_server

pytestmark = pytest.mark.slow

PAGE = b"""<!doctype html><meta charset="utf-8"><title>l2Book test</title>
<script>
  window.received = [];
  const url = new URLSearchParams(location.search).get("ws");
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send(JSON.stringify(
    {method: "subscribe", subscription: {type: "l2Book", coin: "BTC"}}));
  ws.onmessage = (event) => window.received.push(JSON.parse(event.data));
  ws.onclose = (event) => window.closed = event.code;
</script>"""


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: object) -> None:
        pass


async def test_chromium_receives_compressed_l2book_messages(tmp_path: Path) -> None:
    pages = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    page_url = f"http://127.0.0.1:{pages.server_address[1]}/"
    try:
        async with sim_and_server(tmp_path) as (handle, node):

            def browse() -> list[dict[str, object]]:
                with chromium() as driver:
                    driver.get(f"{page_url}?ws={handle.url}")
                    for _ in range(200):
                        books = [
                            m
                            for m in driver.execute_script("return window.received")
                            if m["channel"] == "l2Book"
                        ]
                        if len(books) >= 5:
                            break
                        trio.from_thread.run(trio.sleep, 0.05)
                    trio.from_thread.run(settle, handle, node)
                    trio.from_thread.run(trio.sleep, 0.5)
                    received: list[dict[str, object]] = driver.execute_script(
                        "return window.received"
                    )
                    return received

            received = await trio.to_thread.run_sync(browse)
            assert received[0]["channel"] == "subscriptionResponse"
            books = [m["data"] for m in received if m["channel"] == "l2Book"]
            assert len(books) >= 5
            times = [book["time"] for book in books]  # type: ignore[index]
            assert times == sorted(times)
            # The last view the browser holds is hlbook's book now (the node is paused).
            server_books = handle.books
            assert server_books is not None
            last = books[-1]
            # The last push is of the last block that changed this view (maybe not the last).
            assert last["time"] <= server_books.time  # type: ignore[index]
            btc = server_books.book("BTC")
            assert btc is not None
            assert [level["px"] for level in last["levels"][0]] == [  # type: ignore[index]
                view[0] for view in btc.depth("B", 20)
            ]
            health = handle.health()
            assert health["connections"]["compressed_websockets"] >= 1  # the browser offered it
            assert json.dumps(received)  # every message parsed in the browser
    finally:
        pages.shutdown()
