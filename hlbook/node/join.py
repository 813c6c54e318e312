"""The block joiner: node lines from three streams in, whole blocks out (sans-I/O).

Feed it decoded lines of the status, diff and fill streams in any
interleaving; it returns complete :class:`~hlbook.model.Block` objects in
height order, each exactly once, and :class:`Gap` markers where blocks were
lost. No I/O and no clock of its own: the caller passes ``now``.

When a block is complete
------------------------
*by-block* (one line per block per stream, empty blocks included): when every
stream has delivered its line for the height. A stream that delivers a later
height without this one skipped it: that is a :class:`Gap`.

*streaming* (lines of events; heights skip for empty blocks; no end marker):
when every stream has either moved past the height or is **quiet**: its
reader has reported (:meth:`caught_up`) that it read everything the file
held, at least ``quiet_after`` seconds ago and at least ``quiet_after``
after the block's first line was fed, and no line came since (a stream
silent before a block began may still be about to write its part of it). Quiet is
about the file, not about when lines happened to be fed: a reader that is
behind (a backlog, a rotation in progress, a paused stream) is never quiet,
and a caller that sees a file grow after its reader's report says so
(:meth:`reading`), so that a stalled event loop cannot pass for silence.
So a stream with nothing to say (fills in a block without trades) holds the
others back by at most ``quiet_after``. A diff line that arrives for a block
already emitted means that block was incomplete: a :class:`Gap`. Late status
and fill lines are counted (``late_lines``); they cannot change the book.

Starting and bootstrapping
--------------------------
Reading can start in the middle of the node's output, so the first blocks
seen may be incomplete. A reader that knows where it began says so with
:meth:`start_after` (every block above that height is complete on its
stream, e.g. the height of the last line before the starting offset). For a
stream that said nothing: in by-block layout, blocks below its first line
are missing; in streaming layout, its first height may be partial. Blocks up
to the highest such floor are dropped.

The joiner starts *holding*: complete blocks are kept until :meth:`release`
is called with the height of the snapshot the books were loaded from; blocks
at or below it are dropped. :meth:`hold` starts holding again (to
re-bootstrap), taking back blocks the caller had not applied. While the held
buffer is full, or a stream runs too far ahead of the others, :meth:`paused`
tells the caller to stop reading that stream: the files are the buffer.

A line that could not be read (:meth:`lost`) makes its block, or every block
it may belong to when its height is unknown, a :class:`Gap`: an incomplete
block is never handed out. A height more than :data:`MAX_HEIGHT_JUMP` past
everything known (the books' height, every stream's newest line) is not
believed — a corrupted ``block_number`` would otherwise hold every block up to
it back, or make each of them a gap — and its line counts as unreadable, of
unknown height. A node that really moved that far (back after a day down)
makes the feed stale long before, and the fresh snapshot that follows moves
what is known.

Announcing each stream as soon as it is complete (``parts=True``)
-----------------------------------------------------------------
The diff stream of a block is routinely complete long before its status
stream. With ``parts=True`` the joiner also returns a
:class:`~hlbook.source.Part` for each stream of each block as soon as that
stream is complete — by the same rules as above, applied to that stream
alone (by-block: its line was read; streaming: it has moved past the height,
or is quiet; a stream other than the diffs only once the diff stream is done
with the block) — in height order per stream, ahead of the whole block. The
:class:`~hlbook.model.Block` handed out with a part carries that stream's
final event list (the others stay empty until announced); the whole block
follows when every stream is complete. A height whose block holds a lost
line is never announced on any stream (it becomes a :class:`Gap`). Once a
stream is announced for a height, a later line of that stream at that
height is late: a diff line with events is a :class:`Gap` (the block's diffs
were incomplete), other lines are counted. A height first seen after some
stream had moved past it has nothing on that stream, which is then not
announced separately. :meth:`hold` forgets what was announced of the blocks
not yet whole: they are announced again after :meth:`release`.

As a :class:`~hlbook.source.BlockSource` the joiner is the node's source of
blocks for the :class:`~hlbook.supervisor.Supervisor`.
"""

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

import attrs

from hlbook.model import Block
from hlbook.node.formats import AnyLine, Layout, Stream, time_ms
from hlbook.source import Gap, Output, Part

__all__ = ["MAX_HEIGHT_JUMP", "BlockJoiner", "Gap", "JoinerStats", "LateLine"]

MAX_HEIGHT_JUMP: Final = 1_000_000
"""Heights past everything known by more than this (~20 hours of mainnet blocks) are
not believed (see the module docstring)."""


@attrs.frozen
class LateLine:
    """A status or fill line with events, read after its block was complete on that
    stream: its events were dropped (streaming: the node paused between writing its
    streams for longer than ``quiet_after``)."""

    stream: Stream
    height: int
    events: int


@attrs.frozen
class JoinerStats:
    """Counters for health and logs."""

    emitted: int
    pending: int
    held: int
    late_lines: int
    dropped_lines: int
    gaps: int
    watermarks: dict[str, int]
    implausible_lines: int = 0
    pending_events: int = 0
    late_events: int = 0


class _Partial:
    __slots__ = (
        "announced",
        "delivered",
        "diffs",
        "events",
        "fills",
        "height",
        "seen_at",
        "shared",
        "silent",
        "statuses",
        "time",
    )

    def __init__(self, height: int, block_time: str, seen_at: float = 0.0) -> None:
        self.height = height
        self.time = time_ms(block_time)
        self.seen_at = seen_at  # ``now`` when the first line of this block was fed
        self.statuses: list = []  # type: ignore[type-arg]
        self.diffs: list = []  # type: ignore[type-arg]
        self.fills: list = []  # type: ignore[type-arg]
        self.events = 0  # of every stream: what the joiner's memory bound counts
        self.delivered: set[Stream] = set()
        # parts=True only: streams announced (or complete with nothing to say: silent).
        self.announced: set[Stream] = set()
        self.silent: set[Stream] = set()
        self.shared: Block | None = None  # the Block handed out with this block's parts

    def block(self) -> Block:
        shared = self.shared
        if shared is None:
            return Block(self.height, self.time, self.statuses, self.diffs, self.fills)
        for stream in Stream:
            _expose(shared, self, stream)
        return shared

    def part(self, stream: Stream) -> Part:
        shared = self.shared
        if shared is None:
            shared = self.shared = Block(self.height, self.time)
        _expose(shared, self, stream)
        return Part(stream, shared)


def _add(partial: _Partial, stream: Stream, line: AnyLine) -> int:
    """Add a line's events to the block being joined; how many there were."""
    if stream is Stream.STATUSES:
        partial.statuses.extend(line.events)
    elif stream is Stream.DIFFS:
        partial.diffs.extend(line.events)
    else:
        partial.fills.extend(line.events)
    count = len(line.events)
    partial.events += count
    partial.delivered.add(stream)
    return count


def _expose(block: Block, partial: _Partial, stream: Stream) -> None:
    """Give ``block`` the partial's final event list of ``stream``."""
    if stream is Stream.STATUSES:
        block.set_events(stream, partial.statuses)
    elif stream is Stream.DIFFS:
        block.set_events(stream, partial.diffs)
    else:
        block.set_events(stream, partial.fills)


class BlockJoiner:
    """Joins the node's streams into whole blocks. See the module docstring."""

    def __init__(
        self,
        layout: Layout,
        streams: Iterable[Stream] = tuple(Stream),
        *,
        quiet_after: float = 0.3,
        max_held: int = 200,
        max_pending: int = 2000,
        max_pending_events: int = 200_000,
        parts: bool = False,
    ) -> None:
        self.layout = layout
        self.parts = parts
        """Also announce each stream of a block as soon as it is complete (see above)."""
        self.streams: tuple[Stream, ...] = tuple(streams)
        if Stream.DIFFS not in self.streams:
            raise ValueError("the diff stream is required")
        self.quiet_after = quiet_after
        # Held blocks cost ~0.8 MB each at mainnet size; beyond the cap reading pauses
        # and the files are the buffer (read back at ~80x real time once released).
        self.max_held = max_held
        self.max_pending = max_pending
        # Blocks that cannot complete (a stream gone while the others go on) hold their
        # decoded events: ~0.9 KB a status, ~0.5 KB a diff. This bound keeps them to
        # ~105-175 MB (35 s of a mainnet diff stream ahead, 20 s of statuses) where the
        # block count alone let them reach 1.35 GB.
        self.max_pending_events = max_pending_events
        self._pending: dict[int, _Partial] = {}
        self._pending_events = 0
        self._watermark: dict[Stream, int] = dict.fromkeys(self.streams, -1)
        self._first: dict[Stream, int] = {}
        self._declared: dict[Stream, int] = {}
        self._caught_up_at: dict[Stream, float] = {}
        self._started = False
        self._floor = -1  # lines at or below: dropped silently
        self._emitted = -1  # highest height handed out (or dropped as a gap)
        self._holding = True
        self._held: deque[Output] = deque()
        self._retained_from = 0  # while holding: every block from here on is retained
        self._lost: tuple[int, int] | None = None  # heights that lost a line: a Gap each
        self._lost_after: dict[Stream, int] = {}  # a line of unknown height was lost after
        # parts=True: the highest height announced (or otherwise done) on each stream.
        self._complete: dict[Stream, int] = dict.fromkeys(self.streams, -1)
        self._held_blocks = 0  # whole blocks and gaps in _held (what max_held bounds)
        self._seen_height = -1  # the highest height seen, and its block time (text or ms)
        self._seen_time = ""
        self._seen_ms: int | None = None
        self.nearest_time: int | None = None
        """After :meth:`release` without the snapshot's own block: the time of the
        nearest block read (the first after it, or the last before it)."""
        self.late_lines = 0
        self.late_events = 0
        """Events of late status and fill lines, dropped (see :class:`LateLine`)."""
        self.last_late: LateLine | None = None
        """The latest such line."""
        self.implausible_lines = 0
        """Lines whose height was not believed (see :data:`MAX_HEIGHT_JUMP`)."""
        self.dropped_lines = 0
        self.gaps = 0
        self.snapshot_time: int | None = None
        """Block time of the snapshot's height, when that block was read (see :meth:`release`)."""

    # -- input ------------------------------------------------------------------

    def feed(self, stream: Stream, line: AnyLine, now: float = 0.0) -> list[Output]:
        """Add one decoded line of ``stream``; return what became complete."""
        if stream not in self._watermark:
            raise ValueError(f"stream {stream.value} is not joined")
        height = line.block_number
        # Per line: only a height past the highest seen can be implausible.
        if height > self._seen_height and self._implausible(height):
            self.implausible_lines += 1
            return self.lost(stream, None)
        self._caught_up_at.pop(stream, None)  # a new line: the stream is talking
        if height > self._seen_height:
            self._seen_height = height
            self._seen_time = line.block_time
            self._seen_ms = None
        if height <= self._floor:
            # Still tells where reading began on this stream (see _start).
            self._first.setdefault(stream, height)
            self.dropped_lines += 1
            return []
        if height <= self._emitted or (self.parts and height <= self._complete[stream]):
            return self._late(stream, line)
        if stream not in self._first:
            self._first[stream] = height
        early: list[Output] = []
        if self._lost_after:  # rare: checked before any per-line dict work
            lost_after = self._lost_after.pop(stream, None)
            if lost_after is not None:
                # The unreadable line came between this stream's lines at these heights.
                early = self._lose(lost_after, height)
        advanced = height > self._watermark[stream]
        if advanced:
            self._watermark[stream] = height
        elif (
            self.layout is Layout.BY_BLOCK
            and height in self._pending
            and (stream in self._pending[height].delivered)
        ):
            self.late_lines += 1  # the same block twice on one stream: keep the first
            return []
        partial = self._pending.get(height)
        if partial is not None and not advanced and not early and self.layout is Layout.STREAMING:
            # Streaming: one more line of a height this stream already reached. It
            # completes nothing (the stream is talking, if anything less quiet): only
            # time or another height can, and poll()/the next height look then.
            self._pending_events += _add(partial, stream, line)
            return []
        if partial is None:
            partial = self._pending[height] = _Partial(height, line.block_time, now)
            if self.parts:
                for other, done in self._complete.items():
                    if done >= height:
                        # That stream moved past this height before it was seen: it
                        # has nothing here and is complete (not announced: out of order).
                        partial.silent.add(other)
                        partial.announced.add(other)
        self._pending_events += _add(partial, stream, line)
        return early + self._collect(now) if early else self._collect(now)

    def caught_up(self, stream: Stream, now: float) -> list[Output]:
        """``stream``'s reader has read everything its file holds, as of ``now``.

        From ``quiet_after`` seconds later the stream counts as quiet until its
        next line (see the module docstring).
        """
        if stream not in self._watermark:
            raise ValueError(f"stream {stream.value} is not joined")
        self._caught_up_at.setdefault(stream, now)
        return self._collect(now)

    def reading(self, stream: Stream) -> None:
        """``stream``'s file holds data its reader has not delivered yet.

        Whatever :meth:`caught_up` said before no longer holds: the stream is
        not quiet until its reader reports again. Callers that can look at the
        files should say so before feeding or polling; it closes the window
        in which a reader that has not run yet (a busy event loop) would let
        a block complete without its lines.
        """
        self._caught_up_at.pop(stream, None)

    def lost(self, stream: Stream, height: int | None) -> list[Output]:
        """A line of ``stream`` could not be read (malformed); ``height`` if known.

        Its block becomes a :class:`Gap`. With no height, the line lies between
        the stream's last line and its next one: every block in that range does.
        """
        if stream not in self._watermark:
            raise ValueError(f"stream {stream.value} is not joined")
        if height is not None and self._implausible(height):
            self.implausible_lines += 1
            height = None
        if height is None:
            self._lost_after.setdefault(stream, max(self._watermark[stream], self._floor + 1))
            # Until its next line shows where the lost one was (or it has been quiet for
            # ``quiet_after``, see _settle_lost), the stream is not quiet: a block must
            # not complete without it.
            self._caught_up_at.pop(stream, None)
            return []
        return self._lose(height, height)

    def _implausible(self, height: int) -> bool:
        """``height`` is too far past everything known to be believed (module docstring)."""
        # Every stream's newest line, and what was emitted, is at or below the highest
        # height seen; the books' height (the floor) may be above it.
        known = max(self._floor, self._seen_height)
        return known >= 0 and height > known + MAX_HEIGHT_JUMP

    def _lose(self, low: int, high: int) -> list[Output]:
        if high <= self._floor:
            return []
        out: list[Output] = []
        if low <= self._emitted:
            self.gaps += 1
            last = min(high, self._emitted)
            out.append(Gap(low - 1, last + 1, "a line of these blocks was unreadable"))
        if high > self._emitted:
            current = self._lost
            self._lost = (
                (max(low, self._emitted + 1), high)
                if current is None
                else (min(current[0], low), max(current[1], high))
            )
        return self._out(out)

    def start_after(self, stream: Stream, height: int, block_time: int | None = None) -> None:
        """Reading of ``stream`` began where every block above ``height`` is complete.

        ``-1`` means from the very start of the node's output. Only the first
        call per stream counts, and only before blocks are emitted.
        ``block_time`` (ms) is the time of the line at ``height`` when known: a
        time for a snapshot whose own block is not read (see :meth:`release`).
        """
        if stream not in self._watermark:
            raise ValueError(f"stream {stream.value} is not joined")
        self._declared.setdefault(stream, height)
        if block_time is not None and height > self._seen_height:
            self._seen_height = height
            self._seen_ms = block_time

    def poll(self, now: float) -> list[Output]:
        """Emit blocks that became complete by the passing of time (quiet streams)."""
        return self._collect(now)

    def next_deadline(self) -> float | None:
        """When :meth:`poll` may next emit something, or ``None`` if only new input can help."""
        if self.layout is Layout.BY_BLOCK or not self._pending:
            return None
        whole = self._whole_deadline()
        if not self.parts:
            return whole
        part = self._part_deadline()
        if whole is None or (part is not None and part < whole):
            return part
        return whole

    def _whole_deadline(self) -> float | None:
        height = min(self._pending)
        since = self._pending[height].seen_at
        waiting = []
        for stream in self.streams:
            if self._watermark[stream] > height:
                continue
            at = self._caught_up_at.get(stream)
            if at is None:
                return None  # waits for its reader, not for time
            waiting.append(max(at, since) + self.quiet_after)
        return max(waiting) if waiting else None

    def _part_deadline(self) -> float | None:
        """When a stream of the lowest block it has not announced becomes quiet there."""
        if not self._started:
            return None
        lost = self._lost
        found: float | None = None
        heights = sorted(self._pending)
        for stream in self.streams:
            at = self._caught_up_at.get(stream)
            if at is None or stream in self._lost_after:
                continue
            for height in heights:
                partial = self._pending[height]
                if stream in partial.announced:
                    continue
                if lost is not None and lost[0] <= height <= lost[1]:
                    break  # a gap to be: not announced by time
                waits_for_diffs = stream is not Stream.DIFFS and Stream.DIFFS not in (
                    partial.announced
                )
                if self._watermark[stream] <= height and not waits_for_diffs:
                    due = max(at, partial.seen_at) + self.quiet_after
                    if found is None or due < found:
                        found = due
                break
        return found

    # -- bootstrap ----------------------------------------------------------------

    @property
    def holding(self) -> bool:
        """True while complete blocks are kept back for a bootstrap."""
        return self._holding

    def hold(self, unapplied: Sequence[Output] = ()) -> None:
        """Start keeping complete blocks back (to re-bootstrap).

        ``unapplied`` are blocks this joiner handed out that the caller did not
        apply; they are kept too, in front of anything newer (parts in it are
        ignored: with ``parts=True`` every block not yet whole is announced
        again after :meth:`release`).
        """
        self._holding = True
        kept = [item for item in unapplied if not isinstance(item, Part)]
        blocks = [item for item in kept if isinstance(item, Block)]
        self._retained_from = blocks[0].height if blocks else self._emitted + 1
        self._held.extendleft(reversed(kept))
        self._held_blocks += len(kept)
        if self.parts:
            # Parts of blocks not yet whole are announced again after release().
            for partial in self._pending.values():
                partial.announced = set(partial.silent)

    def release(self, height: int) -> list[Output]:
        """Books were loaded from a snapshot at ``height``: hand out the held blocks above it.

        Returns ``[Gap]`` first if blocks between ``height`` and the held ones
        were already handed out or never read (the snapshot is too old).
        Sets :attr:`snapshot_time` if block ``height`` itself was read.
        """
        self._holding = False
        out: list[Output] = []
        if height + 1 < self._retained_from:
            self.gaps += 1
            out.append(
                Gap(height, self._retained_from, "the snapshot is older than the blocks still held")
            )
        self._floor = max(self._floor, height)
        self._emitted = max(self._emitted, height)
        self.snapshot_time = None
        after: int | None = None  # the first height above the snapshot still known
        after_time: int | None = None
        partial = self._pending.get(height)
        if partial is not None:
            self.snapshot_time = partial.time
        for known in self._pending:
            if known > height and (after is None or known < after):
                after, after_time = known, self._pending[known].time
        self._drop_through(height)
        while self._held:
            item = self._held.popleft()
            if isinstance(item, Gap):
                if item.before > height + 1:
                    out.append(item)
                continue
            block = item.block if isinstance(item, Part) else item
            if block.height > height:
                out.append(item)
                if after is None or block.height < after:
                    after, after_time = block.height, block.time
            elif block.height == height:
                self.snapshot_time = block.time
        self._held_blocks = 0
        self.nearest_time = None
        if self.snapshot_time is None:
            if after_time is not None:
                self.nearest_time = after_time
            elif 0 <= self._seen_height <= height:
                seen = self._seen_ms
                self.nearest_time = seen if seen is not None else time_ms(self._seen_time)
        return out

    @property
    def release_time(self) -> int | None:
        """:attr:`snapshot_time`, else :attr:`nearest_time` (see
        :class:`~hlbook.source.BlockSource`)."""
        return self.snapshot_time if self.snapshot_time is not None else self.nearest_time

    def paused(self, stream: Stream) -> bool:
        """True if the caller should stop reading ``stream`` for now.

        While holding with a full buffer every stream pauses; when blocks cannot
        complete (more than ``max_pending`` of them, or of ``max_pending_events``
        events in them), streams that are ahead of the slowest one pause.
        """
        if self._holding and self._held_blocks >= self.max_held:
            return True
        if (
            len(self._pending) <= self.max_pending
            and self._pending_events <= self.max_pending_events
        ):
            return False
        return self._watermark[stream] > min(self._watermark.values())

    def stats(self) -> JoinerStats:
        """Counters for health and logs."""
        return JoinerStats(
            emitted=self._emitted,
            pending=len(self._pending),
            held=self._held_blocks,
            late_lines=self.late_lines,
            late_events=self.late_events,
            dropped_lines=self.dropped_lines,
            gaps=self.gaps,
            watermarks={s.value: h for s, h in self._watermark.items()},
            implausible_lines=self.implausible_lines,
            pending_events=self._pending_events,
        )

    @property
    def emitted(self) -> int:
        """The highest height handed out (or skipped over by a gap)."""
        return self._emitted

    # -- internals ------------------------------------------------------------------

    def _late(self, stream: Stream, line: AnyLine) -> list[Output]:
        self.late_lines += 1
        if stream is not Stream.DIFFS and line.events:
            # They cannot change the book, but trades, fills and order details lose them.
            self.late_events += len(line.events)
            self.last_late = LateLine(stream, line.block_number, len(line.events))
        if self.layout is Layout.STREAMING and stream is Stream.DIFFS and line.events:
            self.gaps += 1
            if line.block_number > self._emitted:
                # parts=True: its diffs were announced and the block is not whole yet:
                # it must never be announced again without these.
                self._lose(line.block_number, line.block_number)
            gap = Gap(
                line.block_number - 1,
                line.block_number + 1,
                "diffs arrived after the block was considered complete",
            )
            return self._out([gap])
        return []

    def _out(self, items: list[Output]) -> list[Output]:
        if not self._holding:
            return items
        self._held.extend(items)
        self._held_blocks += sum(1 for item in items if not isinstance(item, Part))
        return []

    def _start(self, now: float) -> bool:
        if self._started:
            return True
        first, declared = self._first, self._declared
        floors: list[int] = []
        if self.layout is Layout.BY_BLOCK:
            for stream in self.streams:
                if stream in declared:
                    floors.append(declared[stream])
                elif stream in first:
                    # Lines are whole blocks: the ones below this stream's first
                    # line were written before reading began.
                    floors.append(first[stream] - 1)
                else:
                    return False
        else:
            floors = [declared[s] for s in self.streams if s in declared]
            for stream in (Stream.STATUSES, Stream.DIFFS):
                if stream not in self.streams or stream in declared:
                    continue
                if stream in first:
                    # The first height seen may have begun before reading did.
                    floors.append(first[stream])
                elif not self._quiet(stream, now):
                    return False
            if not floors:
                return False
        floor = max(floors)
        self._started = True
        self._floor = max(self._floor, floor)
        self._emitted = max(self._emitted, floor)
        self._retained_from = max(self._retained_from, floor + 1)
        self._drop_through(floor)
        return True

    def _drop_through(self, height: int) -> None:
        """Forget the pending blocks at or below ``height``."""
        for stale in [h for h in self._pending if h <= height]:
            self._pending_events -= self._pending.pop(stale).events

    def _quiet(self, stream: Stream, now: float, since: float | None = None) -> bool:
        if stream in self._lost_after:
            return False
        at = self._caught_up_at.get(stream)
        if at is None:
            return False
        return now - (at if since is None or since < at else since) >= self.quiet_after

    def _settle_lost(self, now: float) -> list[Output]:
        """A stream that lost a line and then went quiet will not say where the line
        was: it was at most as high as any stream has reached. Lose that range."""
        out: list[Output] = []
        for stream, low in list(self._lost_after.items()):
            at = self._caught_up_at.get(stream)
            if at is not None and now - at >= self.quiet_after:
                del self._lost_after[stream]
                out += self._lose(low, max(self._watermark.values()))
        return out

    def _collect(self, now: float) -> list[Output]:
        if self._lost_after:
            settled = self._settle_lost(now)
            if settled:
                return settled + self._collect(now)  # settled streams are gone: no loop

        if not self._pending:
            return []
        started, emitted = self._started, self._emitted
        if not self._start(now):
            return []
        out: list[Output] = []
        if not started and not self._holding and self._emitted > emitted:
            # Released before reading began, and reading began above the snapshot:
            # the blocks in between were never read.
            self.gaps += 1
            out.append(Gap(emitted, self._emitted + 1, "reading began after the snapshot height"))
        pending = self._pending
        while pending:
            height = min(pending)
            partial = pending[height]
            if self.layout is Layout.BY_BLOCK:
                if height > self._emitted + 1:
                    self.gaps += 1
                    out.append(Gap(self._emitted, height, "blocks missing on every stream"))
                    self._emitted = height - 1
                missing = [s for s in self.streams if s not in partial.delivered]
                if missing:
                    skipped = [s.value for s in missing if self._watermark[s] > height]
                    if not skipped:
                        break
                    self.gaps += 1
                    out.append(Gap(height - 1, height + 1, f"{', '.join(skipped)} skipped it"))
                    del pending[height]
                    self._pending_events -= partial.events
                    self._emitted = height
                    continue
            elif not self._complete_streaming(height, now):
                break
            del pending[height]
            self._pending_events -= partial.events
            self._emitted = height
            lost = self._lost
            if lost is not None and lost[0] <= height <= lost[1]:
                self.gaps += 1
                out.append(Gap(height - 1, height + 1, "a line of this block was unreadable"))
                continue
            out.append(partial.block())
        if self._lost is not None and self._lost[1] <= self._emitted:
            self._lost = None
        if self.parts:
            out += self._announce(now)
        return self._out(out)

    def _announce(self, now: float) -> list[Output]:
        """Parts of blocks not yet whole whose stream became complete (height order)."""
        pending = self._pending
        if not pending:
            return []
        complete = self._complete
        emitted = self._emitted
        for stream in self.streams:
            if complete[stream] < emitted:
                complete[stream] = emitted
        by_block = self.layout is Layout.BY_BLOCK
        lost = self._lost
        blocked: set[Stream] = set()
        out: list[Output] = []
        previous = emitted
        for height in sorted(pending):
            if lost is not None and lost[0] <= height <= lost[1]:
                break  # becomes a Gap: nothing at or after it is announced before that
            if by_block and height != previous + 1:
                break  # a height missing on every stream: a Gap once it is the lowest
            previous = height
            partial = pending[height]
            for stream in self.streams:
                if stream in blocked or stream in partial.announced:
                    continue
                if by_block:
                    ready = stream in partial.delivered
                else:
                    # Quiet counts from when the block was first seen: the node writes a
                    # block's streams at about the same time, so a stream that was silent
                    # before the block began is given quiet_after to say something about it.
                    # The other streams, by quiet, only once the diff stream is done with the
                    # block (as the whole block would need): late lines get that long too.
                    ready = (
                        self._watermark[stream] > height
                        or height <= complete[stream]
                        or (
                            self._quiet(stream, now, partial.seen_at)
                            and (stream is Stream.DIFFS or Stream.DIFFS in partial.announced)
                        )
                    )
                if not ready:
                    blocked.add(stream)
                    continue
                partial.announced.add(stream)
                if height > complete[stream]:
                    complete[stream] = height
                out.append(partial.part(stream))
            if len(blocked) == len(self.streams):
                break
        return out

    def _complete_streaming(self, height: int, now: float) -> bool:
        # Complete once no stream can still add to it: each has moved past it or is quiet
        # (counted from when the block was first seen, see _announce).
        since = self._pending[height].seen_at
        return all(
            self._watermark[stream] > height or self._quiet(stream, now, since)
            for stream in self.streams
        )
