"""Replaying a node directory through hlbook's supervisor (a test reference reader).

:class:`NodeReplay` is a small, synchronous, deliberately naive reader: it
follows each stream's hourly files (newest last, draining the old file before
moving on, keeping a partial last line until it is complete), decodes lines
with :func:`hlbook.node.formats.decode_line`, and hands them to the real data
path's decisions: a :class:`~hlbook.node.join.BlockJoiner` driven by a
:class:`~hlbook.supervisor.Supervisor`, which applies the blocks to
:class:`hlbook.book.books.Books`. By default the joiner hands out whole
blocks only, so that ``after_each`` sees the books exactly as of each block
(with ``parts=True`` each stream is applied as soon as it is complete, and a
diff stream that runs ahead means the books are never exactly those of one
block: ``after_each`` is then called only when they are). It is not hlbook's
production tailer (that one reads in the server's own way); it is the
simplest thing that lets a test check the simulator's files against the
simulator's books, or a server's output against a reference. A malformed
line is recorded and skipped, not reported as lost (the simulator writes its
garbage *besides* the real line, and tests check that nothing else changes).
"""

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.errors import NodeFormatError
from hlbook.model import Block
from hlbook.node.files import hourly_files
from hlbook.node.formats import AnyLine, Layout, Stream, decode_line, decode_snapshot
from hlbook.node.join import BlockJoiner
from hlbook.node.lines import LineSplitter
from hlbook.source import Gap, Output
from hlbook.stages import Stage
from hlbook.supervisor import Action, Settings, Status, Supervisor, WantSnapshot

AfterEach = Callable[[Books], object]
"""Called with the books after each block :class:`NodeReplay` applies whole (every
stream's part of it, with no later block's diffs applied yet)."""

_FEED_ORDER = {Stream.DIFFS: 0, Stream.STATUSES: 1, Stream.FILLS: 2}


class FileFollower:
    """Complete lines appended to one stream's hourly files since the last call."""

    def __init__(self, stream_dir: Path) -> None:
        self.stream_dir = stream_dir
        self.path: Path | None = None
        self.offset = 0
        self._splitter = LineSplitter()

    @property
    def partial(self) -> bool:
        """True while a line has been read only in part (it is kept until complete)."""
        return self._splitter.pending > 0

    def read_lines(self) -> list[bytes]:
        """Every complete line written since the last call, in order."""
        lines: list[bytes] = []
        while True:
            files = hourly_files(self.stream_dir)
            if self.path is None:
                if not files:
                    return lines
                self.path = files[0]
            with self.path.open("rb") as file:
                file.seek(self.offset)
                data = file.read()
            self.offset += len(data)
            lines.extend(self._splitter.feed(data))
            newer = [path for path in files if _key(path) > _key(self.path)]
            if not newer:
                return lines
            # The node has moved on to a newer file; this one is complete. (Reading
            # it once more after seeing the newer file catches its last bytes.)
            if not data:
                self.path, self.offset = newer[0], 0
                self._splitter.reset()


def _key(path: Path) -> tuple[int, int]:
    return int(path.parent.name), int(path.name)


class _Sink:
    """Counts whole blocks and calls the test's check when the books are exactly theirs."""

    def __init__(self, replay: "NodeReplay") -> None:
        self.replay = replay
        self.after_each: AfterEach | None = None

    def publish(
        self, stage: Stage, block: Block, books: Books, touched: Mapping[str, CoinBook]
    ) -> None:
        if stage is not Stage.BLOCK:
            return
        self.replay.applied.append(block.height)
        exact = books.height == block.height == books.details_height
        if exact and self.after_each is not None:
            self.after_each(books)

    def resync(self, books: Books, coins: object = None) -> None:
        pass

    def notify(self, text: str) -> None:
        pass


@attrs.define
class NodeReplay:
    """Follow a node directory and keep :class:`Books` up to date from it.

    Call :meth:`bootstrap` with a snapshot, and :meth:`poll` whenever files may
    have grown. A gap or a divergence stops applying (``stalled``) until the
    next :meth:`bootstrap`.
    """

    node_data: Path = attrs.field(converter=Path)
    layout: Layout
    quiet_after: float = 0.3
    parts: bool = False
    applied: list[int] = attrs.field(factory=list)
    """Heights applied whole, in order."""
    gaps: list[Gap] = attrs.field(factory=list)
    divergences: list[str] = attrs.field(factory=list)
    """Why the supervisor found the books could not follow (other than gaps)."""
    malformed: list[NodeFormatError] = attrs.field(factory=list)
    joiner: BlockJoiner = attrs.field(init=False)
    supervisor: Supervisor = attrs.field(init=False)
    followers: dict[Stream, FileFollower] = attrs.field(init=False)
    _sink: _Sink = attrs.field(init=False)
    _want: WantSnapshot | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.joiner = BlockJoiner(self.layout, quiet_after=self.quiet_after, parts=self.parts)
        self._sink = _Sink(self)
        self.supervisor = Supervisor(
            self._sink, Settings(stale_after=math.inf, validate_every=0, layout_auto=False)
        )
        self._take(
            self.supervisor.attach(
                self.joiner, 0.0, contiguous=self.layout is Layout.BY_BLOCK, layout=self.layout
            )
        )
        self.followers = {
            stream: FileFollower(self.node_data / stream.dirname(self.layout)) for stream in Stream
        }

    @property
    def books(self) -> Books | None:
        """The supervisor's books (``None`` before the first bootstrap)."""
        return self.supervisor.books

    @property
    def height(self) -> int | None:
        """The books' height, or ``None`` before the first bootstrap."""
        return None if self.books is None else self.books.height

    @property
    def stalled(self) -> bool:
        """True while the supervisor waits for a snapshot after a gap or divergence."""
        return self.books is not None and self.supervisor.status is not Status.LIVE

    def bootstrap(self, snapshot: bytes, after_each: AfterEach | None = None) -> list[int]:
        """Load books from a ``fileSnapshot`` output (with height) and apply held blocks.

        Returns the heights applied whole meanwhile."""
        height, coins = decode_snapshot(snapshot)
        books = Books.from_snapshot(height, coins)
        want = self._want
        assert want is not None, "the supervisor did not ask for a snapshot"
        return self._run(
            lambda: self.supervisor.snapshot_loaded(books, "replay", want.generation, 0.0),
            after_each,
        )

    def poll(self, now: float, after_each: AfterEach | None = None) -> list[int]:
        """Read what the files gained, and apply every block that became complete.

        ``after_each(books)`` is called after each block is applied whole. Returns
        the heights applied whole.
        """
        batch: list[tuple[int, int, AnyLine]] = []
        for rank, (stream, follower) in enumerate(self.followers.items()):
            for line in follower.read_lines():
                try:
                    batch.append((rank, len(batch), decode_line(stream, line)))
                except NodeFormatError as exc:
                    self.malformed.append(exc)
        # Feed what was read in height order across streams, as it was written. Fed
        # stream after stream, a stream whose backlog comes last would look quiet
        # (nothing fed for a while) and the joiner could call a block complete before
        # that stream's lines of it, read in this very batch, were fed.
        streams = list(self.followers)
        batch.sort(key=lambda item: (item[2].block_number, _FEED_ORDER[streams[item[0]]], item[1]))

        def work() -> list[Action]:
            actions: list[Action] = []
            for rank, _position, decoded in batch:
                actions += self._receive(self.joiner.feed(streams[rank], decoded, now), now)
            for stream, follower in self.followers.items():
                if not follower.partial:  # read everything the file holds now
                    actions += self._receive(self.joiner.caught_up(stream, now), now)
            return actions + self.supervisor.tick(now)

        return self._run(work, after_each)

    def _receive(self, outputs: list[Output], now: float) -> list[Action]:
        self.gaps += [item for item in outputs if isinstance(item, Gap)]
        return self.supervisor.receive(outputs, now)

    def _run(self, step: Callable[[], list[Action]], after_each: AfterEach | None) -> list[int]:
        done = len(self.applied)
        errors = self.supervisor.stats.divergences
        self._sink.after_each = after_each
        try:
            self._take(step())
        finally:
            self._sink.after_each = None
        if self.supervisor.stats.divergences > errors:
            self.divergences.append(self.supervisor.stats.last_error or "")
        return self.applied[done:]

    def _take(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, WantSnapshot):
                self._want = action
