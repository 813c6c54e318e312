"""What every data path shows the server: the supervisor's books, status and counters, and
waiting for a height. :class:`~hlbook.shell.ingest.DataPath` (a node's files) and
:class:`~hlbook.shell.follow.RelayPath` (a NATS stream) both build on it."""

import time

import trio

from hlbook.book.books import Books
from hlbook.supervisor import Action, Status, Supervisor, SupervisorStats

__all__ = ["SupervisedPath", "Waiters"]

_STEP = 8
"""Source outputs the supervisor works through between checkpoints (a mainnet block
is ~7 ms of work: a backlog of held blocks must not stall the event loop)."""


class Waiters:
    """Tasks waiting for a height to be reached."""

    def __init__(self) -> None:
        self._waiting: list[tuple[int, trio.Event]] = []
        self._closed = False

    async def wait(self, height: int) -> None:
        """Return once :meth:`reached` is called with ``height`` or more (or at once
        after :meth:`close`: the caller looks at why)."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        event = trio.Event()
        self._waiting.append((height, event))
        await event.wait()

    def close(self) -> None:
        """Wake every waiting task, now and from now on."""
        self._closed = True
        for _wanted, event in self._waiting:
            event.set()
        self._waiting = []

    def reached(self, height: int) -> None:
        """Wake the tasks waiting for ``height`` or less."""
        if not self._waiting:
            return
        keep = []
        for wanted, event in self._waiting:
            if height >= wanted:
                event.set()
            else:
                keep.append((wanted, event))
        self._waiting = keep


class SupervisedPath:
    """Owns a :class:`Supervisor` (and so the books); the shell around it moves the bytes."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        supervisor.step_limit = _STEP
        # l2Book/bbo go out (written in that step) and the event loop gets a turn before
        # the statuses' work of a block.
        supervisor.pause_after_diffs = True
        self.ready = trio.Event()
        """Set once the first snapshot is loaded."""
        self.started_at = time.monotonic()
        self.last_block_wall: float | None = None
        """Wall time when the books last moved (for health)."""
        self._heights = Waiters()
        self._details = Waiters()
        self._seen_height = -1
        self.stopped = False
        """True once the server stopped: the books move no more."""

    async def work_step(self) -> list[Action]:
        """After a checkpoint, one bounded step through the supervisor's backlog (timed)."""
        await trio.lowlevel.checkpoint()
        supervisor = self.supervisor
        started = time.perf_counter()
        actions = supervisor.work(trio.current_time())
        supervisor.stats.book_seconds += time.perf_counter() - started
        return actions

    @property
    def books(self) -> Books | None:
        """The live books (``None`` until the first snapshot is loaded)."""
        return self.supervisor.books

    @property
    def status(self) -> Status:
        """The supervisor's status."""
        return self.supervisor.status

    @property
    def detail(self) -> str:
        """What the status means right now."""
        return self.supervisor.detail

    @property
    def stats(self) -> SupervisorStats:
        """The supervisor's counters."""
        return self.supervisor.stats

    async def wait_ready(self) -> None:
        """Return once the first snapshot is loaded; raises
        :class:`trio.ClosedResourceError` if the server stopped before."""
        await self.ready.wait()
        self._check_running(self.books is None)

    async def wait_for_height(self, height: int) -> None:
        """Return once the books have applied the diffs of ``height`` (or a later block);
        raises :class:`trio.ClosedResourceError` if the server stopped before."""
        books = self.books
        if books is None or books.height < height:
            await self._heights.wait(height)
            books = self.books
            self._check_running(books is None or books.height < height)

    async def wait_for_details(self, height: int) -> None:
        """Return once the books have the statuses of ``height`` attached (or later);
        raises :class:`trio.ClosedResourceError` if the server stopped before."""
        books = self.books
        if books is None or books.details_height < height:
            await self._details.wait(height)
            books = self.books
            self._check_running(books is None or books.details_height < height)

    def stop(self) -> None:
        """The server stopped: wake every waiting task (their waits raise)."""
        self.stopped = True
        self.ready.set()
        self._heights.close()
        self._details.close()

    def _check_running(self, waiting: bool) -> None:
        if waiting and self.stopped:
            raise trio.ClosedResourceError("hlbook has stopped: the books move no more")

    def _books_moved(self) -> None:
        """After a step of the supervisor: readiness, the last move's time, and waiters."""
        books = self.books
        if books is None:
            return
        if not self.ready.is_set():
            self.ready.set()
        if books.height != self._seen_height:
            self._seen_height = books.height
            self.last_block_wall = time.time()
        self._heights.reached(books.height)
        self._details.reached(books.details_height)
