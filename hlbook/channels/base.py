"""What a channel is: one unit that owns everything about one subscription type.

A channel parses and validates its subscription objects (into hashable
keys), says which :class:`~hlbook.stages.Stage` of a block it publishes at
and with which delivery :class:`Policy`, builds the first message a new
subscriber gets, and, after each block, the messages for the keys whose
view changed — each built once, as bytes, for every subscriber of that key.
The fan-out (:mod:`hlbook.server.fanout`) only routes those messages and
applies the policy. Channels hold no Trio and do no I/O.
"""

import abc
import enum
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.book.views import Ladders
from hlbook.model import ADDRESS, Block
from hlbook.server.frames import Message
from hlbook.stages import Stage

if TYPE_CHECKING:
    from hlbook.history.recorder import HistoryRecorder
    from hlbook.history.store import HistoryStore

__all__ = [
    "Channel",
    "InvalidSubscription",
    "Policy",
    "Shared",
    "UserChannel",
    "optional_bool",
    "optional_int",
    "required_str",
    "user_address",
]


class Policy(enum.Enum):
    """What a client that cannot keep up gets (SPEC §4)."""

    CONFLATE = "conflate"
    """The newest message replaces an unsent older one of the same subscription."""
    LOSSLESS = "lossless"
    """Every message, in order; a client too far behind is disconnected (1008)."""
    RESNAPSHOT = "resnapshot"
    """Every message, in order; on overflow the backlog is replaced by a fresh first message."""


class InvalidSubscription(Exception):
    """The subscription object is not valid for its channel (``Invalid subscription: …``)."""


def required_str(raw: Mapping[str, Any], name: str) -> str:
    """A required string field."""
    value = raw.get(name)
    if type(value) is not str or not value:
        raise InvalidSubscription(f"{name} must be a non-empty string")
    return value


def user_address(raw: Mapping[str, Any], name: str = "user") -> str:
    """A required user address (``0x`` and 40 hex digits), in lower case."""
    value = raw.get(name)
    # Not int(value, 16): it admits "0x-1…", spaces, "_" and non-ASCII digits.
    if type(value) is not str or not ADDRESS.fullmatch(value):
        raise InvalidSubscription(f"{name} must be an address (0x and 40 hex digits)")
    return value.lower()


def optional_bool(raw: Mapping[str, Any], name: str) -> bool:
    """An optional boolean field (absent or null: false)."""
    value = raw.get(name)
    if value is None:
        return False
    if type(value) is not bool:
        raise InvalidSubscription(f"{name} must be true or false")
    return value


def optional_int(raw: Mapping[str, Any], name: str, allowed: Collection[int]) -> int | None:
    """An optional integer field (``null`` or absent → ``None``) with allowed values.

    ``True``/``"5"``/``5.0`` are refused: the API must not coerce.
    """
    value = raw.get(name)
    if value is None:
        return None
    if type(value) is not int or value not in allowed:
        raise InvalidSubscription(f"{name} must be one of {sorted(allowed)} or null")
    return value


@attrs.define
class Shared:
    """What channels of one server share (views computed once for all of them)."""

    ladders: Ladders = attrs.Factory(Ladders)
    history: "HistoryStore | None" = None
    """Fills, trades, candles and finished orders (the per-user channels' first messages)."""
    recorder: "HistoryRecorder | None" = None
    """The current candles (the ``candle`` channel)."""


class Channel(abc.ABC):
    """One subscription type. Subclasses set the class attributes and implement :meth:`parse`.

    Every channel is constructed with the server's :class:`Shared` state.
    """

    name: ClassVar[str]
    """The subscription's ``type``."""
    stage: ClassVar[Stage | None]
    """The stage of a block this channel publishes at (``None``: nothing per block)."""
    policy: ClassVar[Policy]

    def __init__(self, shared: Shared) -> None:  # noqa: B027 - channels take what they need
        pass

    @abc.abstractmethod
    def parse(self, raw: Mapping[str, Any]) -> Hashable:
        """The key of a subscription object (raises :class:`InvalidSubscription`).

        Keys must be distinct across channels (each channel has its own key type).
        """

    def echo(self, raw: Mapping[str, Any], key: Hashable) -> dict[str, Any]:
        """What ``subscriptionResponse`` repeats back: the client's object, verbatim."""
        return dict(raw)

    def coin(self, key: Hashable) -> str | None:
        """The coin a key is about, if any (resyncs of that coin refresh it)."""
        coin = getattr(key, "coin", None)
        return coin if isinstance(coin, str) else None

    def repaired(self, key: Hashable, coins: Collection[str]) -> bool:
        """Whether a repair of ``coins`` (their books replaced without a new height) may
        have changed what ``key`` shows: its subscribers then get a fresh first message.
        By default, keys about one of those coins."""
        return self.coin(key) in coins

    def available(self, key: Hashable, books: Books) -> bool:
        """False if hlbook cannot serve ``key`` (e.g. an unknown coin)."""
        coin = self.coin(key)
        return coin is None or coin in books

    def added(self, key: Hashable) -> None:  # noqa: B027 - optional hook
        """``key`` got its first subscriber."""

    def removed(self, key: Hashable) -> None:  # noqa: B027 - optional hook
        """``key`` lost its last subscriber."""

    def first(self, key: Hashable, books: Books) -> Message | None:
        """The message a new subscriber of ``key`` gets at once, if any (called only when
        :meth:`ready`)."""
        return None

    def ready(self, key: Hashable, books: Books) -> bool:
        """False if ``key``'s first message cannot be built yet (``l4Book``: the coin's order
        details lag its diffs). The subscriber then waits, gets nothing, and is served
        after a later publication once this is true."""
        return True

    def waiting(self, books: Books) -> None:  # noqa: B027 - optional hook
        """Someone waits for a first message :meth:`ready` refused (e.g. ask the data path
        to let the details catch up)."""

    def first_later(self, key: Hashable, books: Books) -> Callable[[], Message | None] | None:
        """For a first message that needs blocking work (a read of the history store): a
        function the server runs in a worker thread. Whatever the answer must agree with
        (the store's unwritten blocks) it captures now, when called; meanwhile the
        subscription's messages are held back, to follow it (no gap, no duplicate)."""
        return None

    def publish(
        self,
        block: Block,
        books: Books,
        touched: Mapping[str, CoinBook],
        keys: Collection[Hashable],
    ) -> Iterable[tuple[Hashable, Message]]:
        """After :attr:`stage` of ``block``: the message of each key in ``keys`` that changed."""
        return ()


_News = TypeVar("_News")


class UserChannel(Channel):
    """A channel whose keys are about one user each (a ``user`` attribute).

    It keeps its subscribed keys by user, so that a block's news by user reaches
    them by walking whichever is smaller: the users with news in the block, or
    the subscribed ones. Users nobody subscribed to cost a dictionary lookup at
    most, and subscribers with nothing new cost nothing when the block is small.
    """

    def __init__(self, shared: Shared) -> None:
        self._by_user: dict[str, list[Hashable]] = {}

    def added(self, key: Hashable) -> None:
        self._by_user.setdefault(key.user, []).append(key)  # type: ignore[attr-defined]

    def removed(self, key: Hashable) -> None:
        user: str = key.user  # type: ignore[attr-defined]
        keys = self._by_user.get(user)
        if keys is not None and key in keys:
            keys.remove(key)
            if not keys:
                del self._by_user[user]

    def with_news(self, news: Mapping[str, _News]) -> Iterator[tuple[Hashable, _News]]:
        """Each subscribed key whose user has an entry in ``news``, with that entry."""
        subscribed = self._by_user
        if len(news) < len(subscribed):
            for user, entry in news.items():
                keys = subscribed.get(user)
                if keys and entry:
                    for key in keys:
                        yield key, entry
        else:
            for user, keys in subscribed.items():
                found = news.get(user)
                if found:
                    for key in keys:
                        yield key, found
