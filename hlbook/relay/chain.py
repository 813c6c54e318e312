"""The relay's decisions, without I/O: what a consumer does with each block message,
and what a publisher keeps, drops and reports.

:class:`ChainFollower` sees block messages in stream order and says, for each,
*deliver*, *skip* (a duplicate or a message already passed) or *gap*. A block
follows the last delivered one when its height is the next height or its
``prev`` (see :mod:`hlbook.relay.codec`) is the last delivered height. Anything
else is a gap: never a silent hole.

:class:`OutBuffer` is the publisher's bounded queue of encoded blocks, bounded
by count and by bytes; a block that does not fit is dropped and counted, and a
run of dropped blocks is one gap.
"""

import enum
from collections import deque

import attrs

__all__ = ["ChainFollower", "GapInfo", "OutBuffer", "Outgoing", "Verdict"]


class Verdict(enum.Enum):
    """What to do with one block message."""

    DELIVER = "deliver"
    SKIP = "skip"
    GAP = "gap"


@attrs.frozen
class GapInfo:
    """Why the chain broke: after ``after`` came ``height`` (whose ``prev`` is ``prev``).

    ``need`` is the lowest snapshot height from which the stream is known to
    continue: a snapshot at or above it repairs the gap.
    """

    after: int
    height: int
    prev: int | None
    seq: int
    need: int


@attrs.define
class ChainFollower:
    """Position of a consumer: the last delivered height and the last stream sequence seen."""

    height: int
    seq: int

    def check(self, seq: int, height: int, prev: int | None) -> Verdict:
        """Decide about the message at stream sequence ``seq``; advance on DELIVER and SKIP."""
        if seq <= self.seq:
            return Verdict.SKIP  # redelivered after a resume
        if height <= self.height:
            self.seq = seq
            return Verdict.SKIP  # a duplicate height (two primaries, a republish)
        if height == self.height + 1 or prev == self.height:
            self.height = height
            self.seq = seq
            return Verdict.DELIVER
        return Verdict.GAP

    def gap(self, seq: int, height: int, prev: int | None) -> GapInfo:
        """Describe the gap :meth:`check` found at this message.

        The message links to ``prev``: from a snapshot at ``prev`` on, the chain
        continues. Without a usable ``prev``, only a snapshot at ``height`` or
        later is known to.
        """
        need = prev if prev is not None and prev > self.height else height
        return GapInfo(after=self.height, height=height, prev=prev, seq=seq, need=need)

    def resume_from(self, stream_last_seq: int | None = None) -> int:
        """The stream sequence to resume at.

        If the stream's last sequence is below ours, the server lost messages
        it had acknowledged (a SIGKILL before its writes were flushed) and
        reuses their sequence numbers: resume right after its last one, the
        heights decide what is new.
        """
        seq = self.seq
        if stream_last_seq is not None and stream_last_seq < seq:
            seq = stream_last_seq
        return seq + 1


@attrs.frozen
class Outgoing:
    """One encoded block waiting to be published. ``index`` numbers accepted offers."""

    index: int
    height: int
    prev: int | None
    data: bytes


@attrs.define
class OutBuffer:
    """The publisher's bounded FIFO of encoded blocks (see the module docstring)."""

    max_blocks: int
    max_bytes: int
    _items: deque[Outgoing] = attrs.field(factory=deque, init=False)
    bytes: int = attrs.field(default=0, init=False)
    dropped: int = attrs.field(default=0, init=False)
    """Blocks dropped because the buffer was full."""
    gaps: int = attrs.field(default=0, init=False)
    """Runs of consecutive dropped blocks."""
    dropping: bool = attrs.field(default=False, init=False)
    """True while the last block offered was dropped (a gap is open)."""

    def __attrs_post_init__(self) -> None:
        if self.max_blocks < 1 or self.max_bytes < 1:
            raise ValueError("the publish buffer needs room for at least one block")

    def __len__(self) -> int:
        return len(self._items)

    def fits(self, size: int) -> bool:
        """True if a block of ``size`` bytes would be accepted now."""
        if len(self._items) >= self.max_blocks:
            return False
        # One block always fits into an empty buffer, whatever its size.
        return not self._items or self.bytes + size <= self.max_bytes

    def push(self, item: Outgoing) -> bool:
        """Queue ``item``; ``False`` (counted as dropped) if it does not fit."""
        if not self.fits(len(item.data)):
            self.drop()
            return False
        self._items.append(item)
        self.bytes += len(item.data)
        self.dropping = False
        return True

    def drop(self) -> None:
        """Count one block dropped before it reached the buffer (opens a gap if none is open)."""
        self.dropped += 1
        if not self.dropping:
            self.gaps += 1
            self.dropping = True

    def head(self) -> Outgoing | None:
        """The oldest block, still queued until :meth:`pop`."""
        return self._items[0] if self._items else None

    def peek(self, count: int) -> list[Outgoing]:
        """The oldest ``count`` blocks (or fewer), still queued."""
        items = self._items
        if count >= len(items):
            return list(items)
        return [items[index] for index in range(count)]

    def pop(self) -> Outgoing:
        """Remove the oldest block (it was acknowledged)."""
        item = self._items.popleft()
        self.bytes -= len(item.data)
        return item
