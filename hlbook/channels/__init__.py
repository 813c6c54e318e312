"""The channel registry: subscription ``type`` → the channel that serves it.

Each channel is one module (parsing, key, delivery policy, first message,
what it publishes per block; see :mod:`hlbook.channels.base`). Adding one is
a module, a line in :data:`CHANNELS` and its tests.
"""

from collections.abc import Hashable, Mapping
from typing import Any

from hlbook.channels.allmids import AllMids
from hlbook.channels.base import Channel, InvalidSubscription, Policy, Shared
from hlbook.channels.bbo import Bbo
from hlbook.channels.candle import CandleChannel
from hlbook.channels.l2book import L2Book
from hlbook.channels.l4book import L4Book
from hlbook.channels.openorders import OpenOrders
from hlbook.channels.orderupdates import OrderUpdates
from hlbook.channels.trades import Trades
from hlbook.channels.userevents import UserEvents
from hlbook.channels.userfills import UserFills
from hlbook.stages import Stage

__all__ = ["CHANNELS", "Channel", "InvalidSubscription", "Policy", "Registry", "Shared"]

CHANNELS: tuple[type[Channel], ...] = (
    L2Book,
    Bbo,
    Trades,
    L4Book,
    AllMids,
    CandleChannel,
    OrderUpdates,
    OpenOrders,
    UserFills,
    UserEvents,
)


class Registry:
    """The channels of one server, built once and shared by every connection."""

    def __init__(self, shared: Shared | None = None) -> None:
        self.shared = shared if shared is not None else Shared()
        self.channels: dict[str, Channel] = {cls.name: cls(self.shared) for cls in CHANNELS}
        self.by_stage: dict[Stage, list[Channel]] = {stage: [] for stage in Stage}
        for channel in self.channels.values():
            if channel.stage is not None:
                self.by_stage[channel.stage].append(channel)

    def __getitem__(self, name: str) -> Channel:
        return self.channels[name]

    def parse(self, raw: Mapping[str, Any]) -> tuple[Channel, Hashable, dict[str, Any]]:
        """``(channel, key, echo)`` of a subscription object.

        Raises :class:`InvalidSubscription`.
        """
        kind = raw.get("type")
        channel = self.channels.get(kind) if isinstance(kind, str) else None
        if channel is None:
            raise InvalidSubscription(f"unknown subscription type {kind!r}")
        key = channel.parse(raw)
        return channel, key, channel.echo(raw, key)
