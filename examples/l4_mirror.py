"""Keep a local per-order book from l4Book (Snapshot + Updates) and check it against l2Book.

    python examples/l4_mirror.py [ws://127.0.0.1:8000/ws] [BTC] [--levels 20]

The mirror is written from the wire format alone (no hlbook import), with
exact decimals. After each l4Book update it derives the top levels; every
l2Book message is compared with the mirror at the same block time. Any
disagreement is printed and counted; the script exits with status 1 if one
was found (Ctrl-C to stop).
"""

import argparse
import sys
from collections import OrderedDict, deque
from decimal import Decimal
from typing import Any

import trio
from _client import DEFAULT_URL, messages, subscribe
from trio_websocket import open_websocket_url

Level = tuple[str, str, int]


def canonical(value: Decimal) -> str:
    """The node's spelling: shortest exact decimal, ``.0`` for whole numbers."""
    text = format(value.normalize(), "f")
    return text if "." in text else text + ".0"


class L4Mirror:
    """One coin's book rebuilt from ``l4Book`` messages."""

    def __init__(self) -> None:
        self.height = -1
        self.time = 0
        # side -> price -> oids in queue order; oid -> (side, price, size)
        self.levels: dict[str, dict[Decimal, list[int]]] = {"B": {}, "A": {}}
        self.orders: dict[int, tuple[str, Decimal, Decimal]] = {}

    def load(self, snapshot: dict[str, Any]) -> None:
        """Replace the book by a ``Snapshot``."""
        self.__init__()  # type: ignore[misc]
        self.height, self.time = snapshot["height"], snapshot["time"]
        for side, orders in zip(("B", "A"), snapshot["levels"], strict=True):
            for order in orders:
                px, sz = Decimal(order["limitPx"]), Decimal(order["sz"])
                self.levels[side].setdefault(px, []).append(order["oid"])
                self.orders[order["oid"]] = (side, px, sz)

    def apply(self, updates: dict[str, Any]) -> None:
        """Apply one block's ``Updates``; raise ``ValueError`` if they do not fit."""
        if updates["height"] <= self.height:
            return  # already contained in the snapshot
        sides = {s["order"]["oid"]: s["order"]["side"] for s in updates["order_statuses"]}
        for diff in updates["book_diffs"]:
            oid, px, raw = diff["oid"], Decimal(diff["px"]), diff["raw_book_diff"]
            if raw == "remove":
                side, _, _ = self.orders.pop(oid)
                queue = self.levels[side][px]
                queue.remove(oid)
                if not queue:
                    del self.levels[side][px]
            elif "new" in raw:
                side = diff.get("side") or sides[oid]
                side = {"Bid": "B", "Ask": "A"}.get(side, side)
                if oid in self.orders:
                    raise ValueError(f"new of resting oid {oid}")
                queue = self.levels[side].setdefault(px, [])
                before = raw["new"].get("insertBefore")
                queue.insert(queue.index(before) if before in queue else len(queue), oid)
                self.orders[oid] = (side, px, Decimal(raw["new"]["sz"]))
            else:
                side, _, size = self.orders[oid]
                if Decimal(raw["update"]["origSz"]) != size:
                    raise ValueError(f"update of {oid}: origSz {raw['update']['origSz']} != {size}")
                self.orders[oid] = (side, px, Decimal(raw["update"]["newSz"]))
        self.height, self.time = updates["height"], updates["time"]

    def top(self, side: str, n: int) -> list[Level]:
        """The best ``n`` levels of ``side`` as ``(px, sz, count)``."""
        prices = sorted(self.levels[side], reverse=side == "B")[:n]
        out = []
        for px in prices:
            oids = self.levels[side][px]
            total = sum((self.orders[oid][2] for oid in oids), Decimal(0))
            out.append((canonical(px), canonical(total), len(oids)))
        return out


class Checker:
    """Compares l2Book messages with the mirror at the same block time."""

    def __init__(self, n_levels: int) -> None:
        self.n_levels = n_levels
        self.mirror = L4Mirror()
        self.history: OrderedDict[int, tuple[list[Level], list[Level]]] = OrderedDict()
        self.waiting: deque[tuple[int, tuple[list[Level], list[Level]]]] = deque()
        self.checked = 0
        self.mismatches = 0

    def on_l4(self, data: dict[str, Any]) -> None:
        if "Snapshot" in data:
            self.mirror.load(data["Snapshot"])
        else:
            self.mirror.apply(data["Updates"])
        self.history[self.mirror.time] = (
            self.mirror.top("B", self.n_levels),
            self.mirror.top("A", self.n_levels),
        )
        while len(self.history) > 1000:
            self.history.popitem(last=False)
        self._check_waiting()

    def on_l2(self, data: dict[str, Any]) -> None:
        bids, asks = data["levels"]
        seen = (
            [(x["px"], x["sz"], x["n"]) for x in bids],
            [(x["px"], x["sz"], x["n"]) for x in asks],
        )
        self.waiting.append((data["time"], seen))
        self._check_waiting()

    def _check_waiting(self) -> None:
        while self.waiting and self.waiting[0][0] <= self.mirror.time:
            time, seen = self.waiting.popleft()
            mine = self.history.get(time)
            if mine is None:
                continue  # from before the mirror's snapshot
            self.checked += 1
            if mine != seen:
                self.mismatches += 1
                print(f"MISMATCH at time {time}:\n  l2Book {seen}\n  mirror {mine}")


async def main(url: str, coin: str, checker: "Checker") -> None:
    """Mirror ``coin`` until interrupted (or the server closes); report every comparison."""
    n_levels = checker.n_levels
    async with open_websocket_url(url, max_message_size=1 << 30) as ws:
        await subscribe(ws, {"type": "l4Book", "coin": coin})
        await subscribe(ws, {"type": "l2Book", "coin": coin, "nLevels": n_levels})
        async for message in messages(ws):
            channel = message.get("channel")
            if channel == "l4Book":
                checker.on_l4(message["data"])
            elif channel == "l2Book":
                checker.on_l2(message["data"])
                print(
                    f"height {checker.mirror.height}: {len(checker.mirror.orders)} orders, "
                    f"{checker.checked} l2Book checks, {checker.mismatches} mismatches",
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=DEFAULT_URL)
    parser.add_argument("coin", nargs="?", default="BTC")
    parser.add_argument("--levels", type=int, default=20)
    args = parser.parse_args()
    found = Checker(args.levels)
    try:
        trio.run(main, args.url, args.coin, found)
    except* KeyboardInterrupt:
        pass  # Ctrl-C stops it (Trio may deliver it inside an exception group)
    sys.exit(1 if found.mismatches else 0)
