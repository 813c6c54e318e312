"""The live book page in a real browser (headless Chromium) against hlbook and the simulator.

What the page shows is read from the DOM (its data attributes and visible text) and
compared with what a plain WebSocket client receives at the same block ``time``, and with
the books themselves (levels computed independently with Decimal).
"""

import http.server
import json
import os
import shutil
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import attrs
import httpx
import pytest
import trio
from browser_support import Browser, open_browser
from server_support import (
    canonical,
    expected_l2,
    send,
    server_config,
    settle,
    sim_and_server,
    subscribe,
)
from trio_websocket import WebSocketConnection, open_websocket_url

import hlbook
from hlbook.sim import SimConfig, run_simulator
from hlbook.web import load_page

pytestmark = pytest.mark.slow

# What the page shows, read from its DOM. Rows are best first on both sides; each row
# is (px, sz, n) from its data attributes and again from its visible text.
READ_LADDER = """
const ladder = document.getElementById("ladder");
const rows = (side) => [...document.querySelectorAll("#" + side + " .level")].map((r) => ({
  data: [r.dataset.px, r.dataset.sz, Number(r.dataset.n)],
  text: [r.querySelector(".px").textContent, r.querySelector(".sz").textContent,
         Number(r.querySelector(".n").textContent)],
  total: r.querySelector(".cum").textContent,
}));
return {coin: ladder.dataset.coin, time: ladder.dataset.time, nsig: ladder.dataset.nsigfigs,
        bids: rows("bids"), asks: rows("asks").reverse()};
"""

READ_TRADES = """
return [...document.querySelectorAll("#trades .trade")].map((r) => ({
  tid: r.dataset.tid, px: r.dataset.px, sz: r.dataset.sz, side: r.dataset.side,
  text: [...r.querySelectorAll(":scope > span")].map((s) => s.textContent),
}));
"""

READ_HEALTH = """
const h = document.getElementById("health");
const banner = document.getElementById("banner");
return {status: h.dataset.status, height: h.dataset.height,
        pill: document.getElementById("h-status").textContent,
        socket: document.body.dataset.socket,
        banner: banner.hidden ? "" : banner.textContent};
"""

PICK = """
const [id, value] = arguments;
const select = document.getElementById(id);
select.value = value;
select.dispatchEvent(new Event("change"));
return select.value === value;
"""


class Watcher:
    """A trio_websocket client subscribed to BTC ``l2Book`` and ``trades``, keeping both."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.books: dict[int, dict[str, Any]] = {}
        self.last: dict[str, Any] | None = None
        self.trades: list[dict[str, Any]] = []
        self._pong = trio.Event()

    async def run(self) -> None:
        await send(self.ws, subscribe("BTC", "l2Book"))
        await send(self.ws, subscribe("BTC", "trades"))
        while True:
            message = json.loads(await self.ws.get_message())
            if message["channel"] == "l2Book":
                self.books[message["data"]["time"]] = self.last = message["data"]
            elif message["channel"] == "trades":
                self.trades.extend(message["data"])
            elif message["channel"] == "pong":
                self._pong.set()

    async def drain(self) -> None:
        """Return once everything queued for this client before now has arrived."""
        self._pong = trio.Event()
        await send(self.ws, {"method": "ping"})
        with trio.fail_after(10):
            await self._pong.wait()


async def first_view(handle: hlbook.ServerHandle, kind: str, coin: str, **extra: Any) -> Any:
    """The first message of a fresh subscription (the node is paused: the current view)."""
    async with open_websocket_url(handle.url) as ws:
        await send(ws, subscribe(coin, kind, **extra))
        with trio.fail_after(10):
            while True:
                message = json.loads(await ws.get_message())
                if message["channel"] == kind:
                    return message["data"]


def levels(view: dict[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    bids, asks = view["levels"]
    return [[x["px"], x["sz"], x["n"]] for x in bids], [[x["px"], x["sz"], x["n"]] for x in asks]


def shown(ladder: dict[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    """The page's rows; what it displays must be what its data attributes say, and each
    side's running total the exact sum of its sizes."""
    for side in ("bids", "asks"):
        total = Decimal(0)
        for row in ladder[side]:
            assert row["text"] == row["data"]
            total += Decimal(row["data"][1])
            assert row["total"] == canonical(total)
    return [row["data"] for row in ladder["bids"]], [row["data"] for row in ladder["asks"]]


def from_books(
    handle: hlbook.ServerHandle, coin: str, n_sig_figs: int | None = None
) -> tuple[list[list[Any]], list[list[Any]]]:
    """20 levels a side computed from the server's orders (independently, with Decimal)."""
    books = handle.books
    assert books is not None
    bids, asks = books.coin_orders(coin)
    return tuple(  # type: ignore[return-value]
        [list(level) for level in expected_l2(orders, side, 20, n_sig_figs)]
        for orders, side in ((bids, "B"), (asks, "A"))
    )


async def showing(
    page: Browser, coin: str, nsig: str = "", time: int | None = None
) -> dict[str, Any]:
    """The page's ladder once it shows ``coin`` at ``nsig`` (and block ``time``)."""
    ladder: dict[str, Any] = await page.until(
        f"const l = (() => {{{READ_LADDER}}})();"
        "return l.coin === arguments[0] && l.nsig === arguments[1] && l.bids.length"
        " && (arguments[2] === null || l.time === String(arguments[2])) ? l : null;",
        coin,
        nsig,
        time,
        what=f"a {coin} ladder (nSigFigs {nsig or 'null'}, time {time})",
    )
    return ladder


async def check_coin(
    page: Browser, handle: hlbook.ServerHandle, coin: str, nsig: int | None
) -> None:
    """Pick ``coin``: the page shows what a fresh subscription gets, and what the books say."""
    assert await page.js(PICK, "coin", coin)
    reference = await first_view(handle, "l2Book", coin, nSigFigs=nsig)
    ladder = await showing(page, coin, "" if nsig is None else str(nsig), reference["time"])
    assert shown(ladder) == levels(reference) == from_books(handle, coin, nsig)


async def test_the_page_shows_the_books_the_api_serves(tmp_path: Path) -> None:
    async with (
        sim_and_server(tmp_path, stale_after=3.0) as (handle, node),
        open_websocket_url(handle.url) as ws,
        trio.open_nursery() as nursery,
        open_browser() as page,
    ):
        watcher = Watcher(ws)
        nursery.start_soon(watcher.run)
        await page.call(page.driver.set_window_size, 1280, 1120)
        await page.call(page.driver.get, handle.http_url + "/")

        # The picker lists every coin hlbook serves, grouped by market.
        async with httpx.AsyncClient(base_url=handle.http_url) as client:
            coins = (await client.post("/info", json={"type": "hlbookCoins"})).json()
        listed = await page.until(
            "const o = [...document.querySelectorAll('#coin option')];"
            "return o.length > 1 && o.map((x) => [x.value, x.dataset.market,"
            " x.parentElement.label]);",
            what="the coin picker filled",
        )
        labels = {"perp": "Perpetuals", "spot": "Spot", "hip3": "HIP-3"}
        assert listed == [[c["coin"], c["market"], labels[c["market"]]] for c in coins]
        assert {"BTC", "@1", "PURR/USDC", "xyz:XYZ100"} <= {c["coin"] for c in coins}

        # Pick ETH, then BTC: the page follows (and unsubscribes ETH, checked below).
        assert await page.js(PICK, "coin", "ETH")
        await showing(page, "ETH")
        assert await page.js(PICK, "coin", "BTC")
        await showing(page, "BTC")

        # The tape shows trades the watcher saw, with the taker's side.
        with trio.fail_after(60):
            while True:
                tape = await page.js(READ_TRADES)
                seen = {str(t["tid"]): t for t in watcher.trades}
                common = [row for row in tape if row["tid"] in seen]
                if common:
                    break
                await trio.sleep(0.1)
        for row in common:
            trade = seen[row["tid"]]
            assert trade["coin"] == "BTC"
            assert (row["px"], row["sz"], row["side"]) == (trade["px"], trade["sz"], trade["side"])
            side = "buy" if trade["side"] == "B" else "sell"
            assert row["text"][1:] == [trade["px"], trade["sz"], side]

        # The node pauses: the page shows the very l2Book the watcher got last.
        await settle(handle, node)
        await watcher.drain()
        assert watcher.last is not None
        ladder = await showing(page, "BTC", "", watcher.last["time"])
        assert shown(ladder) == levels(watcher.books[watcher.last["time"]])
        assert shown(ladder) == from_books(handle, "BTC")
        health = await page.until(
            f"const h = (() => {{{READ_HEALTH}}})(); return h.height ? h : null;"
        )
        assert health["socket"] == "open"

        # Aggregated: nSigFigs 3, then a spot coin (still at 3), a spot @N and HIP-3 exact.
        assert await page.js(PICK, "nsig", "3")
        reference = await first_view(handle, "l2Book", "BTC", nSigFigs=3)
        ladder = await showing(page, "BTC", "3", reference["time"])
        bids, asks = shown(ladder)
        assert (bids, asks) == levels(reference) == from_books(handle, "BTC", 3)
        assert any(n > 1 for _px, _sz, n in bids + asks)  # levels really were merged
        await check_coin(page, handle, "PURR/USDC", 3)
        assert await page.js(PICK, "nsig", "")
        await check_coin(page, handle, "@1", None)
        await check_coin(page, handle, "xyz:XYZ100", None)

        # bbo and spread: what the bbo channel says.
        bbo = await first_view(handle, "bbo", "xyz:XYZ100")
        bid, ask = bbo["bbo"]
        assert await page.until(
            "return document.getElementById('bbo-bid').textContent === arguments[0]"
            " && document.getElementById('bbo-ask').textContent === arguments[1];",
            bid["px"],
            ask["px"],
            what="the bbo shown",
        )
        spread = canonical(Decimal(ask["px"]) - Decimal(bid["px"]))
        assert await page.js("return document.getElementById('bbo-spread').textContent") == spread

        # Exactly the current coin's three subscriptions are held by the page.
        with trio.fail_after(10):
            while len(handle.client_stats()) != 2:  # the watcher and the page
                await trio.sleep(0.05)
        assert sorted(c["subscriptions"] for c in handle.client_stats()) == [2, 3]
        assert handle.health()["connections"]["compressed_websockets"] >= 1  # the browser

        # Nothing arrives from the node: the page says the feed is stale, clearly.
        stale = await page.until(
            f"const h = (() => {{{READ_HEALTH}}})(); return h.status === 'stale' ? h : null;",
            what="the page showing a stale feed",
        )
        assert stale["pill"] == "stale"
        assert "stale" in stale["banner"]
        assert await page.js("return document.getElementById('ladder').classList.contains('dim')")

        # The node writes again: live, and BTC for the screenshot.
        node.resume()
        assert await page.js(PICK, "coin", "BTC")
        await page.until(
            f"const h = (() => {{{READ_HEALTH}}})();"
            "return h.status === 'live' && !h.banner"
            " && document.querySelectorAll('#trades .trade').length >= 8;",
            limit=60,
            what="live again with trades on the tape",
        )
        await save_screenshots(page, tmp_path)
        nursery.cancel_scope.cancel()


async def save_screenshots(page: Browser, tmp_path: Path) -> None:
    """The page at a desktop and a phone width, in the test's directory (and in
    ``$HLBOOK_SCREENSHOT_DIR`` if set, to look at)."""
    await trio.sleep(1.0)  # the newest trades' highlight fades
    paths = [tmp_path / "page.png", tmp_path / "page-small.png"]
    assert await page.call(page.driver.save_screenshot, str(paths[0]))
    await page.call(page.driver.set_window_size, 390, 1600)
    await trio.sleep(0.5)
    assert await page.call(page.driver.save_screenshot, str(paths[1]))
    await page.call(page.driver.set_window_size, 1280, 1120)
    for path in paths:
        assert path.read_bytes().startswith(b"\x89PNG")
    directory = os.environ.get("HLBOOK_SCREENSHOT_DIR")
    if directory:
        for path in paths:
            shutil.copy(path, Path(directory) / path.name)


async def test_the_page_loads_nothing_external_and_breaks_no_policy(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path) as (handle, _node), open_browser() as page:
        await page.call(page.driver.get, handle.http_url + "/")
        await showing(page, "BTC")
        origin = handle.http_url
        resources = await page.js(
            "return performance.getEntriesByType('resource').map((e) => e.name);"
        )
        assert resources  # at least POST /info
        assert all(name.startswith(origin + "/") for name in resources), resources
        log = await page.call(page.driver.get_log, "browser")
        assert not [entry for entry in log if "Content Security Policy" in entry["message"]]
        # The style was applied (a CSP that blocked it would leave the default white page).
        assert await page.js("return getComputedStyle(document.body).backgroundColor") == (
            "rgb(13, 17, 23)"
        )
        # And the policy is enforced: anything else the page tried would be blocked, and seen.
        await page.js(
            "const i = document.createElement('img'); i.src = 'http://192.0.2.1/x.png';"
            "document.body.append(i);"
            "const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
            "document.body.append(s);"
        )
        assert await page.js("return window.ran") is None
        with trio.fail_after(10):
            while True:
                log = await page.call(page.driver.get_log, "browser")
                blocked = [e["message"] for e in log if "Content Security Policy" in e["message"]]
                if len(blocked) >= 2:
                    break
                await trio.sleep(0.1)
        assert any("192.0.2.1" in message for message in blocked)


async def test_the_page_reconnects_when_hlbook_comes_back(tmp_path: Path) -> None:
    """hlbook goes away and comes back on the same port: the page says so, reconnects and
    subscribes again; the fragment (coin, token) survives."""
    sim = SimConfig(node_data=tmp_path / "data", info_port=0, scale=0.05, seed=7)
    async with trio.open_nursery() as outer, open_browser() as page:
        node = await outer.start(run_simulator, sim)
        config = server_config(tmp_path, node.info_url)
        async with trio.open_nursery() as first:
            handle = await first.start(hlbook.serve, config)
            await handle.wait_ready()
            port = handle.port
            await page.call(page.driver.get, handle.http_url + "/#coin=ETH&token=s3cret")
            before = await showing(page, "ETH")
            first.cancel_scope.cancel()
        closed = await page.until(
            f"const h = (() => {{{READ_HEALTH}}})();"
            "return h.socket === 'closed' && h.pill === 'offline' ? h : null;",
            what="the page noticing the server is gone",
        )
        assert "Disconnected" in closed["banner"]
        assert "reconnecting" in closed["banner"]

        async with trio.open_nursery() as second:
            handle = await second.start(hlbook.serve, attrs.evolve(config, port=port))
            await handle.wait_ready()
            after = await page.until(
                f"const l = (() => {{{READ_LADDER}}})();"
                "return l.coin === 'ETH' && Number(l.time) > arguments[0] ? l : null;",
                int(before["time"]),
                what="a newer ETH book after reconnecting",
            )
            assert after["bids"]
            with trio.fail_after(10):
                while [c["subscriptions"] for c in handle.client_stats()] != [3]:
                    await trio.sleep(0.05)
            assert await page.js("return location.hash") == "#coin=ETH&token=s3cret"
            second.cancel_scope.cancel()
        outer.cancel_scope.cancel()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Serves the page and records what it asks for: ``POST /info`` gets one coin, every
    WebSocket handshake 403 (the page then retries)."""

    requests: ClassVar[list[tuple[str, str, dict[str, str]]]] = []

    def _record(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.requests.append((self.command, self.path, headers))

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._record()
        if self.headers.get("upgrade", "").lower() == "websocket":
            self._answer(403, b"", {})
            return
        page = load_page()
        self._answer(
            200,
            page.body,
            {"content-type": "text/html; charset=utf-8", "content-security-policy": page.csp},
        )

    def do_POST(self) -> None:
        self._record()
        self.rfile.read(int(self.headers.get("content-length", "0")))
        body = json.dumps([{"coin": "BTC", "market": "perp"}]).encode()
        self._answer(200, body, {"content-type": "application/json"})

    def log_message(self, *args: object) -> None:
        pass


async def test_the_page_sends_the_token_from_its_fragment() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    requests = _Recorder.requests

    async def asked() -> tuple[dict[str, str], str]:
        """The headers of the page's POST /info and the target of its WebSocket handshake."""
        with trio.fail_after(30):
            while True:
                posts = [r for r in requests if r[0] == "POST"]
                sockets = [r for r in requests if r[2].get("upgrade", "").lower() == "websocket"]
                if posts and sockets:
                    return posts[0][2], sockets[0][1]
                await trio.sleep(0.05)

    try:
        async with open_browser() as page:
            # A base64 token: "+", "/" and "=" must arrive as they are.
            await page.call(page.driver.get, base + "/#token=a%2Bb/c%3D")
            headers, target = await asked()
            assert headers["authorization"] == "Bearer a+b/c="
            assert headers["content-type"] == "application/json"
            assert target == "/ws?token=a%2Bb%2Fc%3D"
            assert "token" not in requests[0][1]  # the fragment itself never leaves the browser

            await page.call(page.driver.get, "about:blank")  # no more retries from that page
            requests.clear()
            await page.call(page.driver.get, base + "/?again")
            headers, target = await asked()
            assert "authorization" not in headers
            assert target == "/ws"
    finally:
        server.shutdown()
