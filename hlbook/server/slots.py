"""Admitting connections: ``--max-connections`` for both kinds, and the half-open limit.

Sans I/O. Every TCP connection takes a slot when accepted and says what it
is as it goes: *half-open* until its first request head has arrived (or its
TLS handshake and request, over TLS), then an *HTTP* connection busy with a
request, *idle* between keep-alive requests, or a *WebSocket*.

* At ``max_connections``, a new connection first evicts the longest-idle
  keep-alive HTTP connection (a client reusing it simply reconnects); with
  none to evict it is refused (HTTP 503).
* At ``max_half_open``, a new connection evicts the oldest half-open one: a
  flood of connections that never send a request cannot hold every slot for
  the handshake timeout, and each newcomer still gets its chance.
* ``max_per_address`` (``--max-connections-per-ip``) bounds the connections of
  one client address (HTTP 429 beyond it).
"""

import enum
import itertools
from collections import Counter, OrderedDict
from collections.abc import Callable

__all__ = ["Kind", "Refusal", "Slot", "Slots"]


class Kind(enum.Enum):
    """What a connection is doing."""

    HALF_OPEN = "half_open"
    HTTP = "http"
    IDLE = "idle"
    WEBSOCKET = "websocket"


class Refusal(enum.Enum):
    """Why a connection was not admitted."""

    FULL = "full"
    PER_ADDRESS = "per_address"


class Slot:
    """One admitted connection. ``evict`` is how the server drops it."""

    __slots__ = ("address", "evict", "id", "kind")

    def __init__(self, slot_id: int, evict: Callable[[], None], address: str) -> None:
        self.id = slot_id
        self.kind = Kind.HALF_OPEN
        self.evict = evict
        self.address = address


class Slots:
    """The server's connection slots. See the module docstring."""

    def __init__(
        self, max_connections: int, max_half_open: int, max_per_address: int | None = None
    ) -> None:
        self.max_connections = max_connections
        self.max_half_open = max_half_open
        self.max_per_address = max_per_address
        self._per_address: Counter[str] = Counter()
        self._ids = itertools.count(1)
        # Insertion order = age in the current kind (re-inserted on each change).
        self._by_kind: dict[Kind, OrderedDict[int, Slot]] = {kind: OrderedDict() for kind in Kind}
        self.refused = 0
        self.evicted_idle = 0
        self.evicted_half_open = 0

    def __len__(self) -> int:
        return sum(len(slots) for slots in self._by_kind.values())

    def count(self, kind: Kind) -> int:
        """Connections of one kind."""
        return len(self._by_kind[kind])

    def admit(self, evict: Callable[[], None], address: str = "") -> Slot | Refusal:
        """A new connection from ``address``: its slot, or why it is refused."""
        limit = self.max_per_address
        if limit is not None and self._per_address[address] >= limit:
            self.refused += 1
            return Refusal.PER_ADDRESS
        if len(self) >= self.max_connections:
            idle = self._by_kind[Kind.IDLE]
            if not idle:
                self.refused += 1
                return Refusal.FULL
            _, oldest = idle.popitem(last=False)
            self.evicted_idle += 1
            oldest.evict()
        half_open = self._by_kind[Kind.HALF_OPEN]
        if len(half_open) >= self.max_half_open:
            _, oldest = half_open.popitem(last=False)
            self.evicted_half_open += 1
            oldest.evict()
        slot = Slot(next(self._ids), evict, address)
        half_open[slot.id] = slot
        self._per_address[address] += 1
        return slot

    def set(self, slot: Slot, kind: Kind) -> None:
        """``slot``'s connection is now doing ``kind``."""
        if self._by_kind[slot.kind].pop(slot.id, None) is None:
            return  # evicted or released already
        slot.kind = kind
        self._by_kind[kind][slot.id] = slot

    def release(self, slot: Slot) -> None:
        """The connection is closed (evicted ones too: they count until they are gone)."""
        self._by_kind[slot.kind].pop(slot.id, None)
        left = self._per_address[slot.address] - 1
        if left > 0:
            self._per_address[slot.address] = left
        else:
            self._per_address.pop(slot.address, None)
