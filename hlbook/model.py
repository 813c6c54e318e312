"""Value types shared across hlbook's layers and exposed to library users."""

import re
from functools import cached_property
from typing import Any, Final

import attrs

from hlbook.node.formats import DiffEvent, FillEvent, StatusEvent, Stream

__all__ = ["ADDRESS", "Block", "CoinFilter"]


ADDRESS: Final = re.compile(r"0[xX][0-9a-fA-F]{40}")
"""A user address as requests carry it (any case; hlbook keeps it in lower case)."""


@attrs.define(slots=False, eq=False)
class Block:
    """One complete block: every status, diff and fill the node wrote for ``height``.

    ``time`` is the block time in integer milliseconds since the epoch. The
    event lists are the node's own decoded events, in the node's order.
    """

    height: int
    time: int
    statuses: list[StatusEvent] = attrs.field(factory=list)
    diffs: list[DiffEvent] = attrs.field(factory=list)
    fills: list[FillEvent] = attrs.field(factory=list)

    @cached_property
    def statuses_by_coin(self) -> dict[str, list[StatusEvent]]:
        """The block's statuses grouped by coin (computed on first use)."""
        grouped: dict[str, list[StatusEvent]] = {}
        for event in self.statuses:
            coin = event.coin()
            bucket = grouped.get(coin)
            if bucket is None:
                grouped[coin] = [event]
            else:
                bucket.append(event)
        return grouped

    @cached_property
    def diffs_by_coin(self) -> dict[str, list[DiffEvent]]:
        """The block's diffs grouped by coin (computed on first use)."""
        grouped: dict[str, list[DiffEvent]] = {}
        for event in self.diffs:
            bucket = grouped.get(event.coin)
            if bucket is None:
                grouped[event.coin] = [event]
            else:
                bucket.append(event)
        return grouped

    @cached_property
    def diffs_by_user(self) -> dict[str, list[DiffEvent]]:
        """The block's diffs grouped by (lower-case) user (computed on first use)."""
        grouped: dict[str, list[DiffEvent]] = {}
        for event in self.diffs:
            grouped.setdefault(event.user.lower(), []).append(event)
        return grouped

    @cached_property
    def fills_by_user(self) -> dict[str, list[FillEvent]]:
        """The block's fills grouped by (lower-case) user (computed on first use)."""
        grouped: dict[str, list[FillEvent]] = {}
        for event in self.fills:
            grouped.setdefault(event[0].lower(), []).append(event)
        return grouped

    @cached_property
    def statuses_by_user(self) -> dict[str, list[StatusEvent]]:
        """The block's statuses grouped by (lower-case) user (computed on first use)."""
        grouped: dict[str, list[StatusEvent]] = {}
        for event in self.statuses:
            grouped.setdefault(event.user.lower(), []).append(event)
        return grouped

    def set_events(self, stream: Stream, events: list[Any]) -> None:
        """Make ``events`` this block's final event list of ``stream`` (a block handed out
        a stream at a time), dropping what was derived from the list before."""
        cached = self.__dict__
        if stream is Stream.STATUSES:
            self.statuses = events
            cached.pop("statuses_by_coin", None)
            cached.pop("statuses_by_user", None)
        elif stream is Stream.DIFFS:
            self.diffs = events
            cached.pop("diffs_by_coin", None)
            cached.pop("diffs_by_user", None)
        else:
            self.fills = events
            cached.pop("fills_by_user", None)

    def is_empty(self) -> bool:
        """True when the node wrote no event for this block on any stream."""
        return not (self.statuses or self.diffs or self.fills)


MARKETS = ("perp", "spot", "hip3")


def market_of(coin: str) -> str:
    """``"spot"`` for ``@N`` and ``BASE/QUOTE``, ``"hip3"`` for ``dex:COIN``, else ``"perp"``."""
    if coin.startswith("@") or "/" in coin:
        return "spot"
    if ":" in coin:
        return "hip3"
    return "perp"


@attrs.frozen
class CoinFilter:
    """Which coins to keep books for (``--coins`` / ``--markets``).

    A coin is kept when it is in ``coins`` (or ``coins`` is empty) and its
    market is one of ``markets``.
    """

    coins: frozenset[str] = frozenset()
    markets: frozenset[str] = frozenset(MARKETS)

    def __attrs_post_init__(self) -> None:
        unknown = self.markets - set(MARKETS)
        if unknown:
            raise ValueError(f"unknown market(s) {sorted(unknown)}; choose from {list(MARKETS)}")

    def accepts(self, coin: str) -> bool:
        """True if ``coin`` should have a book."""
        if self.coins and coin not in self.coins:
            return False
        return market_of(coin) in self.markets

    @property
    def everything(self) -> bool:
        """True if the filter accepts every coin."""
        return not self.coins and self.markets == frozenset(MARKETS)
