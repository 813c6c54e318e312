"""Sources of blocks: what the :class:`~hlbook.supervisor.Supervisor` drives (sans-I/O).

A source turns some input into an ordered sequence of :data:`Output` items:

* :class:`Part` — one stream of a block is complete: its events on
  ``part.block`` (``statuses``, ``diffs`` or ``fills``) are final. Parts of
  one stream come in height order; a source that cannot tell streams apart
  never sends them;
* :class:`~hlbook.model.Block` — the whole block is complete. Streams not
  announced by a :class:`Part` before are complete now (a source of whole
  blocks sends only these). Whole blocks come in height order;
* :class:`Gap` — blocks were lost or are incomplete: the books can no
  longer follow without a snapshot.

Bootstrapping is the same for every source: it starts *holding* (keeping
what it completes), :meth:`BlockSource.release` hands out what it held above
a snapshot's height, and :meth:`BlockSource.hold` starts holding again when
the books must be rebuilt, taking back whole blocks the caller had not
finished. Two sources exist or are planned:

* the node's files: :class:`~hlbook.node.join.BlockJoiner` (with
  ``parts=True``) joins the three streams' lines and announces each stream
  of a block as soon as it is complete;
* a stream of whole blocks in height order, such as a NATS JetStream
  subject written by another hlbook: :class:`OrderedBlocks`; a missing
  height is a :class:`Gap`. Such a stream may also carry each block's diffs
  *early*, ahead of the whole block (a primary sends them as soon as they are
  applied): they become a :class:`Part` at once, and the whole block completes
  that same :class:`~hlbook.model.Block` when it arrives.
"""

from collections import deque
from collections.abc import Sequence
from typing import Protocol

import attrs

from hlbook.model import Block
from hlbook.node.formats import Stream

__all__ = ["BlockSource", "Gap", "OrderedBlocks", "Output", "Part"]


@attrs.frozen
class Gap:
    """Blocks after ``after`` and before ``before`` are missing or incomplete."""

    after: int
    before: int
    reason: str

    def __str__(self) -> str:
        return f"gap after block {self.after} (before {self.before}): {self.reason}"


@attrs.frozen(eq=False)
class Part:
    """``stream`` of ``block`` is complete: that stream's event list on ``block`` is final."""

    stream: Stream
    block: Block

    @property
    def height(self) -> int:
        """The block's height."""
        return self.block.height


Output = Part | Block | Gap


class BlockSource(Protocol):
    """What the supervisor needs from a source of blocks (see the module docstring)."""

    @property
    def holding(self) -> bool:
        """True while completed output is kept back for a bootstrap."""

    @property
    def release_time(self) -> int | None:
        """After :meth:`release`: the block time of the released height if the source
        saw that block, else of the nearest block it saw (the first after, or the
        last before), else ``None``."""

    def hold(self, unapplied: Sequence[Output] = ()) -> None:
        """Start holding (to re-bootstrap). ``unapplied`` is output this source handed
        out that the caller did not finish; whole blocks and gaps in it are kept."""

    def release(self, height: int) -> list[Output]:
        """Books were loaded at ``height``: stop holding and return what was held above
        it — first a :class:`Gap` if the source no longer has every block after it."""

    def poll(self, now: float) -> list[Output]:
        """Output that became complete by the passing of time."""

    def next_deadline(self) -> float | None:
        """When :meth:`poll` may next return something, or ``None``."""


class OrderedBlocks:
    """A source of whole blocks that arrive in height order (e.g. from a relay stream).

    :meth:`block` takes the next block; a height that does not follow the last
    one is a :class:`Gap`. :meth:`diffs` takes a block's diffs sent ahead of
    it: they are handed out as a diffs :class:`Part` once every earlier
    block's diffs have been (early or with their block), else kept for a while
    (``max_early``) or ignored: the whole block still brings them, so an early
    copy that is lost, late or out of turn costs latency, never data. Nothing
    depends on time.
    """

    def __init__(self, max_held: int = 200, max_early: int = 64) -> None:
        self.max_held = max_held
        self.max_early = max_early
        self._parts: dict[int, Block] = {}  # height -> a Block handed out as a diffs Part
        self._early: dict[int, Block] = {}  # prev -> early diffs waiting for their turn
        self._diffs_to: int | None = None  # the last height whose diffs were handed out
        self._holding = True
        self._held: deque[Output] = deque()
        self._last: int | None = None  # the last height received
        self._retained_from: int | None = None
        self._release_time: int | None = None
        self._seen: tuple[int, int] | None = None  # (height, time) of the last block received

    @property
    def holding(self) -> bool:
        """See :class:`BlockSource`."""
        return self._holding

    @property
    def release_time(self) -> int | None:
        """See :class:`BlockSource`."""
        return self._release_time

    @property
    def paused(self) -> bool:
        """True while the held buffer is full: stop receiving for now."""
        return self._holding and len(self._held) >= self.max_held

    def block(self, block: Block, *, prev: int | None = None) -> list[Output]:
        """The next block of the stream.

        ``prev``, when the stream says it, is the height of the block before this
        one: in the node's streaming layout heights skip empty blocks, so a block
        whose ``prev`` is the last height follows it even if its height does not.
        """
        out: list[Output] = []
        last = self._last
        if last is not None and block.height <= last:
            return []  # a redelivery
        if last is not None and block.height != last + 1 and prev != last:
            out.append(Gap(last, block.height, "the stream skipped these heights"))
        self._last = block.height
        self._seen = (block.height, block.time)
        if self._holding:
            self._held.extend(out)
            self._held.append(block)
            return []
        shared = self._parts.pop(block.height, None)
        if shared is not None:  # its diffs went out early: complete that same Block
            shared.set_events(Stream.STATUSES, block.statuses)
            shared.set_events(Stream.FILLS, block.fills)
            block = shared
        out.append(block)
        if self._diffs_to is None or block.height > self._diffs_to:
            self._diffs_to = block.height
        out += self._early_turn()
        return out

    def diffs(self, block: Block, *, prev: int | None = None) -> list[Output]:
        """A block's diffs sent ahead of it (``block`` has no other events yet).

        ``prev`` is the height of the block whose diffs came before these.
        """
        height = block.height
        done = self._diffs_to
        if self._holding or done is None or height <= done:
            return []  # bootstrapping (the whole blocks are held), or already handed out
        if prev != done and not (prev is None and height == done + 1):
            if len(self._early) >= self.max_early:
                del self._early[min(self._early)]
            self._early[prev if prev is not None else height - 1] = block
            return []
        return self._hand_out(block)

    def _hand_out(self, block: Block) -> list[Output]:
        self._parts[block.height] = block
        self._diffs_to = block.height
        return [Part(Stream.DIFFS, block), *self._early_turn()]

    def _early_turn(self) -> list[Output]:
        """Early diffs kept for later whose turn has come (those passed are forgotten)."""
        early, done = self._early, self._diffs_to
        if not early or done is None:
            return []
        waiting = early.pop(done, None)
        for key in [key for key in early if key < done]:
            del early[key]
        if waiting is None or waiting.height <= done:
            return []
        return self._hand_out(waiting)

    def gap(self, after: int, before: int, reason: str) -> list[Output]:
        """The stream says blocks between ``after`` and ``before`` are lost."""
        gap = Gap(after, before, reason)
        self._last = max(self._last or before - 1, before - 1)
        if self._holding:
            self._held.append(gap)
            return []
        return [gap]

    def hold(self, unapplied: Sequence[Output] = ()) -> None:
        """See :class:`BlockSource`."""
        self._holding = True
        self._parts.clear()
        self._early.clear()
        kept = [item for item in unapplied if not isinstance(item, Part)]
        blocks = [item.height for item in kept if isinstance(item, Block)]
        self._retained_from = blocks[0] if blocks else (self._last or 0) + 1
        self._held.extendleft(reversed(kept))

    def release(self, height: int) -> list[Output]:
        """See :class:`BlockSource`."""
        self._holding = False
        out: list[Output] = []
        retained = self._retained_from
        first = next((item.height for item in self._held if isinstance(item, Block)), None)
        start = retained if retained is not None else first
        if start is not None and height + 1 < start:
            out.append(Gap(height, start, "the snapshot is older than the blocks still held"))
        self._release_time = None
        after: int | None = None
        for item in self._held:
            if isinstance(item, Gap):
                if item.before > height + 1:
                    out.append(item)
            elif item.height > height:
                out.append(item)
                if after is None and isinstance(item, Block):
                    after = item.time
            elif item.height == height and isinstance(item, Block):
                self._release_time = item.time
        self._held.clear()
        self._retained_from = None
        if self._release_time is None:
            seen = self._seen
            self._release_time = after if after is not None else (seen[1] if seen else None)
        if self._last is None or self._last < height:
            self._last = height
        self._diffs_to = max([height, *(item.height for item in out if isinstance(item, Block))])
        return out

    def poll(self, now: float) -> list[Output]:
        """See :class:`BlockSource` (nothing here depends on time)."""
        return []

    def next_deadline(self) -> float | None:
        """See :class:`BlockSource`."""
        return None
