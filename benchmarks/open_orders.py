"""Benchmark: an ``openOrders`` push of a market maker's whole list, on the book task.

The channel sends a user's whole list of resting orders again after each block that
changed it, so a user with thousands of orders costs the book task that list per
block. One user rests ``--orders`` orders (default 2,000) in one book; each round
resizes one order per block and builds the list's message:

* **cached** (hlbook): :class:`hlbook.channels.openorders.OpenOrders`, which keeps
  each order's JSON and makes it again only for an order that changed;
* **from scratch** (the baseline, same run): the order objects, the official dict of
  each and one ``orjson.dumps`` of the message, as the channel did before the cache.

Both messages are checked to be the same JSON first. Times are this thread's CPU time
per message; the figure is the median over ``--rounds`` alternating rounds of from
scratch over cached, with the absolute times beside it.

Usage: ``python benchmarks/open_orders.py [--quick] [--orders N] [--rounds N]``
"""

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson
from server_common import command_line, summary_header

from hlbook.book.books import Books
from hlbook.channels import Shared
from hlbook.channels.openorders import OpenOrders, OpenOrdersKey
from hlbook.history.wire import order_wire
from hlbook.model import Block
from hlbook.node.formats import Stream, decode_line

USER = "0x" + "ab" * 20
BASE_MS = 1_778_002_753_024


def _block(height: int, statuses: list[Any], diffs: list[Any]) -> Block:
    def events(stream: Stream, items: list[Any]) -> Any:
        raw = {"block_time": "2026-05-05T17:39:13.024", "block_number": height, "events": items}
        return decode_line(stream, orjson.dumps(raw)).events

    return Block(height, BASE_MS + 70 * height, events(Stream.STATUSES, statuses),
                 events(Stream.DIFFS, diffs), [])  # fmt: skip


def _order(oid: int) -> dict[str, Any]:
    return {
        "coin": "BTC", "side": "B" if oid % 2 else "A", "limitPx": _px(oid), "sz": "1.0",
        "oid": oid, "timestamp": BASE_MS + oid, "triggerCondition": "N/A", "isTrigger": False,
        "triggerPx": "0.0", "children": [], "isPositionTpsl": False, "reduceOnly": False,
        "orderType": "Limit", "origSz": "1.0", "tif": "Alo", "cloid": None,
    }  # fmt: skip


def _px(oid: int) -> str:
    return f"{(1000 - oid % 500) if oid % 2 else (1001 + oid % 500)}.0"


def _diff(oid: int, raw: Any) -> dict[str, Any]:
    side = "B" if oid % 2 else "A"
    return {"user": USER, "oid": oid, "coin": "BTC", "side": side, "px": _px(oid),
            "raw_book_diff": raw}  # fmt: skip


def books_with(orders: int) -> Books:
    """Books where ``USER`` rests ``orders`` orders in BTC."""
    books = Books(9)
    oids = range(1, orders + 1)
    statuses = [
        {"time": "2026-05-05T17:39:13.024", "user": USER, "hash": None, "builder": None,
         "status": "open", "order": _order(oid)}
        for oid in oids
    ]  # fmt: skip
    books.apply(_block(10, statuses, [_diff(oid, {"new": {"sz": "1.0"}}) for oid in oids]))
    return books


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke check")
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=50, help="messages per round")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.rounds, args.blocks = 200, 3, 5
    books = books_with(args.orders)
    channel = OpenOrders(Shared())
    key = OpenOrdersKey(USER)
    height = [11]

    def resize_one() -> None:
        h = height[0]
        oid = 1 + h % args.orders
        size = "0.5" if (h // args.orders) % 2 == 0 else "1.0"
        old = "1.0" if size == "0.5" else "0.5"
        books.apply(_block(h, [], [_diff(oid, {"update": {"origSz": old, "newSz": size}})]))
        height[0] = h + 1

    def cached() -> bytes:
        return channel._message(key, books).payload  # what publish() sends

    def scratch() -> bytes:
        orders = [order_wire(order) for order in books.orders_of(USER)]
        data = {"dex": "", "user": USER, "orders": orders}
        return orjson.dumps({"channel": "openOrders", "data": data})

    assert orjson.loads(cached()) == orjson.loads(scratch())

    def per_message(build: Callable[[], bytes]) -> float:
        spent = 0.0
        for _ in range(args.blocks):
            resize_one()
            started = time.thread_time()
            build()
            spent += time.thread_time() - started
        return float(spent / args.blocks * 1000)

    rounds: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        rounds.append((per_message(cached), per_message(scratch)))
    ratios = [s / c for c, s in rounds]
    size = len(cached())
    print(summary_header("open_orders"))
    print(f"command: {command_line('open_orders.py')}")
    print(f"an openOrders message of {args.orders} orders ({size:,} bytes), one order resized")
    print(
        f"from scratch / cached: {statistics.median(ratios):.1f}x (rounds "
        + " / ".join(f"{r:.1f}" for r in ratios)
        + f"); cached {statistics.median(c for c, _ in rounds):.2f} ms, from scratch"
        f" {statistics.median(s for _, s in rounds):.2f} ms of CPU per message (medians)"
    )


if __name__ == "__main__":
    main()
