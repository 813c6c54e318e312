"""Helpers for tests that run the real server: start it, talk to it, compare books."""

import json
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from fixtures import MainnetSlice
from recorded_node import RecordedNode
from trio_websocket import WebSocketConnection

import hlbook
from hlbook.book.books import Books
from hlbook.model import Block
from hlbook.node.formats import Layout, Order, Stream, decode_line, time_ms

if TYPE_CHECKING:
    from hlbook.sim import SimHandle

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


def slice_block(mainnet: MainnetSlice, index: int) -> Block:
    """Block ``index`` of the slice, decoded from its three by-block lines."""
    statuses, diffs, fills = (
        decode_line(stream, mainnet.lines[stream][index])
        for stream in (Stream.STATUSES, Stream.DIFFS, Stream.FILLS)
    )
    return Block(
        statuses.block_number,
        time_ms(statuses.block_time),
        statuses.events,  # type: ignore[arg-type]
        diffs.events,  # type: ignore[arg-type]
        fills.events,  # type: ignore[arg-type]
    )


def engine_books(mainnet: MainnetSlice, blocks: int | None = None) -> Books:
    """The engine's books after the first ``blocks`` of the slice (all by default)."""
    height, coins = hlbook.decode_snapshot(mainnet.snapshot)
    books = Books.from_snapshot(height, coins)
    count = len(mainnet.lines[Stream.DIFFS]) if blocks is None else blocks
    for index in range(count):
        books.apply(slice_block(mainnet, index))
    return books


def order_keys(
    books: Books, coin: str
) -> tuple[list[tuple[int, str, str]], list[tuple[int, str, str]]]:
    """Every order of ``coin`` as ``(oid, px, sz)``, bids then asks, best first, queue order."""
    bids, asks = books.coin_orders(coin)
    return [(o.oid, o.limitPx, o.sz) for o in bids], [(o.oid, o.limitPx, o.sz) for o in asks]


def server_config(tmp_path: Path, info_url: str, **overrides: Any) -> hlbook.Config:
    """hlbook for a test node under ``tmp_path/data``: any free port, no validation."""
    settings: dict[str, Any] = {
        "node_data": tmp_path / "data",
        "info_url": info_url,
        "snapshot_path": tmp_path / "snapshot.json",
        "port": 0,
        "validate_every": 0,
    }
    settings.update(overrides)
    return hlbook.Config(**settings)


@asynccontextmanager
async def replay_server(
    tmp_path: Path, mainnet: MainnetSlice, layout: Layout = Layout.BY_BLOCK, **config: Any
) -> AsyncIterator[tuple[hlbook.ServerHandle, RecordedNode]]:
    """The recorded node (files + info server) and hlbook serving it, books loaded."""
    node = RecordedNode(tmp_path / "data", mainnet, layout)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(node.serve_info)
        info_url = f"http://127.0.0.1:{port}/info"
        info_url = config.pop("info_url", info_url)  # a test may point it elsewhere
        handle = await nursery.start(hlbook.serve, server_config(tmp_path, info_url, **config))
        with trio.fail_after(30):
            await handle.wait_ready()
        try:
            yield handle, node
        finally:
            node.close()
        nursery.cancel_scope.cancel()


async def send(ws: WebSocketConnection, message: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(message))


async def request(
    ws: WebSocketConnection, message: dict[str, Any] | str, limit: float = 5.0
) -> Any:
    """Send a message and return the next message received (decoded)."""
    await ws.send_message(message if isinstance(message, str) else json.dumps(message))
    with trio.fail_after(limit):
        return json.loads(await ws.get_message())


async def receive_until(
    ws: WebSocketConnection, done: Callable[[Any], bool], limit: float = 10.0
) -> list[Any]:
    """Collect decoded messages until ``done(message)`` is true for one of them."""
    out = []
    with trio.fail_after(limit):
        while True:
            message = json.loads(await ws.get_message())
            out.append(message)
            if done(message):
                return out


def subscribe(coin: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"method": "subscribe", "subscription": {"type": kind, "coin": coin, **extra}}


# -- the simulator and hlbook together ---------------------------------------------------


@asynccontextmanager
async def sim_and_server(
    tmp_path: Path, sim: dict[str, Any] | None = None, *, fallback: bool = False, **config: Any
) -> AsyncIterator[tuple[hlbook.ServerHandle, "SimHandle"]]:
    """A simulated node writing in real time and hlbook serving it, books loaded.

    With ``fallback``, the simulator also plays the public API and hlbook's
    ``--fallback-info-url`` points at it (ccxt's ``load_markets`` needs it).
    """
    from hlbook.sim import SimConfig, run_simulator

    sim_settings: dict[str, Any] = {
        "node_data": tmp_path / "data",
        "info_port": 0,
        "scale": 0.05,
        "blocks_per_second": 20.0,
        "seed": 7,
    }
    if fallback:
        sim_settings["fallback_port"] = 0
    sim_settings.update(sim or {})
    logger = logging.getLogger("hlbook.supervisor")
    loaded, level = _LoadedHeights(), logger.level
    logger.addHandler(loaded)
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    try:
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run_simulator, SimConfig(**sim_settings))
            if fallback:
                config.setdefault("fallback_info_url", node.fallback_url)
            handle = await nursery.start(
                hlbook.serve, server_config(tmp_path, node.info_url, **config)
            )
            with trio.fail_after(30):
                await handle.wait_ready()
            _loaded_at[id(handle)] = loaded.heights
            try:
                yield handle, node
            finally:
                del _loaded_at[id(handle)]
            nursery.cancel_scope.cancel()
    finally:
        logger.removeHandler(loaded)
        logger.setLevel(level)


def canonical(value: Decimal) -> str:
    """The node's spelling of an exact decimal."""
    text = format(value.normalize(), "f")
    return text if "." in text else text + ".0"


def expected_l2(
    orders: list[Order],
    side: str,
    n_levels: int = 20,
    n_sig_figs: int | None = None,
    mantissa: int | None = None,
) -> list[tuple[str, str, int]]:
    """L2 levels from a list of orders (best first), computed independently with Decimal."""
    buckets: list[list[Any]] = []
    for order in orders:
        px = Decimal(order.limitPx)
        if n_sig_figs is not None:
            width = Decimal(mantissa or 1).scaleb(px.adjusted() + 1 - n_sig_figs)
            ratio = px / width
            steps = ratio.to_integral_value(rounding=ROUND_FLOOR if side == "B" else ROUND_CEILING)
            px = steps * width
        if buckets and buckets[-1][0] == px:
            buckets[-1][1] += Decimal(order.sz)
            buckets[-1][2] += 1
        else:
            buckets.append([px, Decimal(order.sz), 1])
    return [(canonical(px), canonical(sz), n) for px, sz, n in buckets[:n_levels]]


def order_tuples(orders: list[Order]) -> list[tuple[int, str, str]]:
    return [(o.oid, canonical(Decimal(o.limitPx)), canonical(Decimal(o.sz))) for o in orders]


async def settle(handle: hlbook.ServerHandle, node: "SimHandle", limit: float = 20.0) -> int:
    """Pause the node and wait until the server has applied everything it wrote."""
    node.pause()
    height = await node.wait_idle()
    with trio.fail_after(limit):
        while (
            handle.books is None
            or handle.books.height < height
            or handle.health()["status"] != "live"
        ):
            await trio.sleep(0.02)
    return height


def same_books(handle: hlbook.ServerHandle, node: "SimHandle") -> list[str]:
    """Coins whose books differ between the server and the simulator (at the same height)."""
    books = handle.books
    assert books is not None
    differ = []
    for coin in node.coins():
        mine = books.coin_orders(coin) if coin in books else ([], [])
        theirs = node.coin_orders(coin)
        if (order_tuples(mine[0]), order_tuples(mine[1])) != (
            order_tuples(theirs[0]),
            order_tuples(theirs[1]),
        ):
            differ.append(coin)
    return differ


def task_count() -> int:
    """Live Trio tasks in this run (to check nothing leaks)."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return count(root)


# -- what the simulated node wrote, read back from its files (independent of hlbook) -----


def written_lines(node: "SimHandle", stream: Stream) -> list[dict[str, Any]]:
    """Every line ``stream``'s hourly files hold, decoded as plain JSON, in height order."""
    lines = []
    for path in (node.stream_dir(stream) / "hourly").glob("*/*"):
        for raw in path.read_bytes().splitlines():
            if raw.strip():
                lines.append(json.loads(raw))
    return sorted(lines, key=lambda line: int(line["block_number"]))


def written_trades(node: "SimHandle", coin: str, after: int = 0) -> list[dict[str, Any]]:
    """The trades of ``coin`` in the fill files above height ``after``, in file order, as
    ``{"px","sz","time","tid","side","users"}`` (``side`` the taker's; both fills of a trade
    share its ``tid``)."""
    trades: dict[int, dict[str, Any]] = {}
    for line in written_lines(node, Stream.FILLS):
        if int(line["block_number"]) <= after:
            continue
        for user, fill in line["events"]:
            if fill["coin"] != coin:
                continue
            trade = trades.setdefault(
                fill["tid"],
                {
                    "px": fill["px"],
                    "sz": fill["sz"],
                    "time": fill["time"],
                    "tid": fill["tid"],
                    "users": ["", ""],
                },
            )
            trade["users"][0 if fill["side"] == "B" else 1] = user
            if fill["crossed"]:
                trade["side"] = fill["side"]
    return list(trades.values())


def expected_candles(trades: list[dict[str, Any]], length_ms: int) -> list[dict[str, Any]]:
    """Fixed-length candles (``{t,T,o,c,h,l,v,n}``, Decimal prices) from trades in order."""
    candles: dict[int, dict[str, Any]] = {}
    for trade in trades:
        px, sz = Decimal(trade["px"]), Decimal(trade["sz"])
        start = trade["time"] // length_ms * length_ms
        candle = candles.get(start)
        if candle is None:
            candles[start] = {"t": start, "T": start + length_ms - 1, "o": px, "c": px,
                              "h": px, "l": px, "v": sz, "n": 1}  # fmt: skip
        else:
            candle.update(c=px, h=max(candle["h"], px), l=min(candle["l"], px))
            candle["v"] += sz
            candle["n"] += 1
    return [candles[t] for t in sorted(candles)]


def candle_numbers(candle: dict[str, Any]) -> dict[str, Any]:
    """An official candle's ``{t,T,o,c,h,l,v,n}`` with the numbers as Decimals."""
    out = {key: candle[key] for key in ("t", "T", "n")}
    out.update({key: Decimal(candle[key]) for key in ("o", "c", "h", "l", "v")})
    return out


def expected_mids(node: "SimHandle", dex: str = "") -> dict[str, Decimal]:
    """``allMids`` from the simulator's own books: (best bid + best ask) / 2 per coin."""
    out = {}
    for coin in node.coins():
        if (coin.partition(":")[0] if ":" in coin else "") != dex:
            continue
        bids, asks = node.coin_orders(coin)
        if bids and asks:
            out[coin] = (Decimal(bids[0].limitPx) + Decimal(asks[0].limitPx)) / 2
    return out


def bootstrap_height(handle: hlbook.ServerHandle) -> int:
    """The height of the (first) snapshot the :func:`sim_and_server` hlbook loaded: its
    history holds the blocks above it. Read from hlbook's log line, not from its state."""
    return _loaded_at[id(handle)][0]


class _LoadedHeights(logging.Handler):
    """Collects the heights of hlbook's "books loaded at height H" log lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.heights: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("books loaded at height") and isinstance(record.args, tuple):
            self.heights.append(int(record.args[0]))  # type: ignore[call-overload]


_loaded_at: dict[int, list[int]] = {}


def fill_dicts(fills: list[Any]) -> list[dict[str, Any]]:
    """The simulator's fills as the official wire objects (``twapId`` null when unset)."""
    out = []
    for fill in fills:
        wire = msgspec.to_builtins(fill)
        wire.setdefault("twapId", None)
        out.append(wire)
    return out
