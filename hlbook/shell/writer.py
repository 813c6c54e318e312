"""Getting queued messages onto client sockets.

Two paths, one order:

* after the fan-out has queued a block's messages, one *flusher* task writes
  each dirty client's queue straight to its socket with a non-blocking
  ``os.write`` — no task switch per client. When the socket takes it all
  (the usual case) that is the end of it;
* when it does not (a slow reader, a full buffer), or the connection cannot
  be written without Trio (TLS), the rest goes to that client's *writer
  task*, which finishes it with ``send_all`` and keeps draining the queue at
  the client's pace. The book task never waits.

The writer is the only thing that writes to the socket: control frames the
reader needs sent (pongs, the close frame) are queued here and go out
between whole frames. Each write is bounded (:data:`BATCH_BYTES`), and
messages are fragmented (:mod:`hlbook.server.frames`), so closing a slow
client finishes at most the fragment on the wire, then sends the close
frame, within a bounded time.

Compression: a message offered to several clients is compressed once for
all of them. A message only this client receives is compressed at the
client's own cost, out of a budget (:class:`CompressionBudget`); beyond it
the client gets plain frames (RFC 7692 lets the sender choose per message),
so one connection with a thousand distinct views cannot make the server
compress a thousand messages per block. Large messages (an ``l4Book``
snapshot) are compressed in a worker thread, never on the Trio thread.
"""

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import trio

from hlbook.server.fanout import ClientQueue
from hlbook.server.frames import Frames, Message, close_frame
from hlbook.stages import Stage

if TYPE_CHECKING:
    from hlbook.book.books import Books
    from hlbook.book.l4 import CoinBook
    from hlbook.model import Block

__all__ = [
    "BATCH_BYTES",
    "THREAD_COMPRESS",
    "CompressionBudget",
    "FlushSink",
    "Flusher",
    "Waker",
    "Writer",
]

BATCH_BYTES = 256 * 1024
"""At most this much payload is taken from a queue per write."""
_STEP = 16 * 1024  # the writer task's writes: at least this much, ending on a frame boundary
THREAD_COMPRESS = 256 * 1024
"""Messages larger than this are compressed in a worker thread, never on the Trio thread."""


class Waker:
    """Wakes one sleeping task from synchronous code, allocating nothing per wake."""

    __slots__ = ("_pending", "_task")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._pending = False

    def set(self) -> None:
        """Wake the waiting task (or let its next wait return at once)."""
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)
        else:
            self._pending = True

    async def wait(self) -> None:
        """Sleep until :meth:`set` (returns at once if it was called meanwhile)."""
        if self._pending:
            self._pending = False
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED


class CompressionBudget:
    """Payload bytes a client may have compressed for it alone: a token bucket."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, size: int, now: float) -> bool:
        """Spend ``size`` bytes if the budget allows it now."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < size:
            return False
        self._tokens -= size
        return True


class Writer:
    """One client's path from its :class:`ClientQueue` to its socket."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        client: ClientQueue,
        *,
        fd: int | None,
        budget: CompressionBudget,
        on_sent: Callable[[int, int], None],
    ) -> None:
        self.stream = stream
        self.client = client
        self.budget = budget
        self.on_sent = on_sent
        self.waker = Waker()
        self.done = trio.Event()
        self.closed = False
        """True once the close frame is written (nothing may follow it)."""
        self._fd = fd  # plain TCP: the flusher may write directly
        self._control: list[bytes] = []
        # Bytes taken from the queue and not written yet, where they start, and the
        # end offset of each frame in them (a close frame may only follow a whole one).
        self._buffer = b""
        self._offset = 0
        self._bounds: list[int] = []
        self._busy = False  # the task is in send_all
        self._held: list[Message] = []  # taken from the queue, waiting to be compressed
        self._unknown = False

    @property
    def can_close(self) -> bool:
        """True if a close frame may still be written: not yet, and no write was cut off
        at an unknown point (a cancelled ``send_all``)."""
        return not self.closed and not self._unknown

    @property
    def mid_frame(self) -> bool:
        """True if a frame is partly on the wire."""
        return self._offset not in (0, *self._bounds) if self._buffer else False

    def send_pong(self, frame: bytes) -> None:
        """Queue a pong: it goes out before the next queued message.

        Only the newest pong waits: a client that floods pings while not reading
        would otherwise grow this queue without bound (RFC 6455 5.5.3 lets a pong
        answer only the most recent ping).
        """
        self._control = [frame]
        self.waker.set()

    def _frames(self, message: Message, now: float, *, wait: bool) -> Frames | None:
        """The frames to send ``message`` in, or ``None`` if compressing it must not
        happen here (it is large: the writer task compresses it in a thread)."""
        deflater = self.client.deflater
        if deflater is None or len(message.payload) < deflater.threshold:
            return message.plain()
        ready = message.deflated_ready(deflater)
        if not ready and message.shared <= 1 and not self.budget.take(len(message.payload), now):
            return message.plain()
        if not ready and not wait and len(message.payload) > THREAD_COMPRESS:
            return None
        self.client.stats.compressed_messages += 1
        return message.deflated(deflater)

    def _take(self, *, wait: bool = False) -> bool:
        """Move the next batch (control frames first) into the buffer; False if none.

        With ``wait`` false (the flusher), stops before a message that must be
        compressed in a thread, which stays for the writer task.
        """
        parts: list[bytes] = self._control
        self._control = []
        client = self.client
        batch = self._held or client.pop_batch(BATCH_BYTES)
        self._held = []
        sent = 0
        if batch:
            if client.deflater is None:
                # The usual case, once per client per block: no compression to decide.
                for message in batch:
                    parts.extend(message.plain())
                sent = len(batch)
            else:
                now = trio.current_time()
                for index, message in enumerate(batch):
                    frames = self._frames(message, now, wait=wait)
                    if frames is None:
                        self._held = batch[index:]
                        break
                    parts.extend(frames)
                    sent += 1
            client.stats.messages_sent += sent
        if not parts:
            return False
        if len(parts) == 1:
            # One frame (an l2Book update): no copy.
            self._buffer = parts[0]
            end = len(self._buffer)
            self._bounds = [end]
        else:
            bounds = []
            end = 0
            for part in parts:
                end += len(part)
                bounds.append(end)
            self._buffer = b"".join(parts)
            self._bounds = bounds
        self._offset = 0
        self.on_sent(sent, end)
        client.stats.bytes_sent += end
        return True

    def write_now(self) -> None:
        """Write what is queued without waiting (from the flusher); else wake the task."""
        if (
            self._fd is None
            or self._busy
            or self._buffer
            or self._held  # the task is compressing what comes next: it goes on from there
            or self.closed
            or self.client.close_reason is not None
        ):
            self.waker.set()
            return
        if not self._take():
            if self._held:
                self.waker.set()  # a large message to compress: the task does it
            return
        try:
            written = os.write(self._fd, self._buffer)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError:
            written = 0  # the task's send_all will report what went wrong
        if written == len(self._buffer):
            self._buffer = b""
            self.client.stats.direct_writes += 1
            return
        # The socket is full: the task finishes the rest.
        self.client.stats.backlogged_writes += 1
        self._offset = written
        self.waker.set()

    async def run(self) -> None:
        """The client's writer task, until the client is to be closed or the socket fails."""
        client = self.client
        try:
            while client.close_reason is None:
                if self._buffer:
                    # Frame by frame (small ones grouped): a close asked for meanwhile
                    # waits for one frame at most.
                    want = self._offset + _STEP
                    until = next((b for b in self._bounds if b >= want), self._bounds[-1])
                    await self._write(until)
                    continue
                if self._held:
                    # The flusher leaves the buffer alone meanwhile (see write_now).
                    await self._compress(self._held[0])
                if self._take(wait=True):
                    self.client.stats.backlogged_writes += 1
                    continue
                await self.waker.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            client.close(1006, "connection lost")
        finally:
            self.done.set()

    async def _compress(self, message: Message) -> None:
        """Compress a large message in a thread (zlib lets go of the GIL): others go on."""
        deflater = self.client.deflater
        if deflater is not None and not message.deflated_ready(deflater):
            await trio.to_thread.run_sync(message.deflated, deflater)

    async def _write(self, until: int) -> None:
        """Write the buffer up to offset ``until``."""
        self._busy = True
        try:
            await self.stream.send_all(memoryview(self._buffer)[self._offset : until])
            self._offset = until
        except BaseException:
            self._unknown = True  # how much went out is not known: nothing may follow
            raise
        finally:
            self._busy = False
        if self._offset >= len(self._buffer):
            self._buffer = b""
            self._offset = 0

    async def close(self, code: int, reason: str) -> None:
        """Finish the frame on the wire, drop the rest, send the close frame. Unbounded in
        time (the caller bounds it); raises if the socket fails."""
        if not self.can_close:
            return
        if self._buffer and self._offset:
            # Part of the buffer is on the wire: finish the frame it is in.
            end = next(bound for bound in self._bounds if bound >= self._offset)
            if end > self._offset:
                await self._write(end)
        self._buffer = b""
        self._offset = 0
        frames = [*self._control, close_frame(code, reason)]
        self._control = []
        self.closed = True
        await self.stream.send_all(b"".join(frames))


class Flusher:
    """Writes every client with newly queued messages, in one pass, without waiting."""

    def __init__(self) -> None:
        self._dirty: dict[Writer, None] = {}
        self._waker = Waker()

    def mark(self, writer: Writer) -> None:
        """``writer``'s client has something new to send."""
        self._dirty[writer] = None
        self._waker.set()

    def forget(self, writer: Writer) -> None:
        """The client is gone."""
        self._dirty.pop(writer, None)

    def flush(self) -> None:
        """Write every dirty client now, without waiting (see :class:`FlushSink`)."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        for writer in dirty:
            writer.write_now()

    async def run(self) -> None:
        """Flush dirty clients whenever there are some (until cancelled)."""
        while True:
            await self._waker.wait()
            self.flush()


class FlushSink:
    """A :class:`~hlbook.stages.BlockSink` that writes what the fan-out just queued at once.

    Placed right after the :class:`~hlbook.server.fanout.Hub` in the data path's
    sinks: a block's ``l2Book`` and ``bbo`` go onto the sockets in the same step as
    they are built, before the other sinks' work and without waiting for the
    flusher task's turn on the event loop (one scheduling round, 0.3-1 ms behind
    a busy book task). Writes never block (see :meth:`Writer.write_now`).
    """

    def __init__(self, flusher: Flusher) -> None:
        self.flusher = flusher

    def publish(
        self, stage: Stage, block: "Block", books: "Books", touched: Mapping[str, "CoinBook"]
    ) -> None:
        """Write what ``stage`` of ``block`` queued."""
        self.flusher.flush()

    def resync(self, books: "Books", coins: Iterable[str] | None = None) -> None:
        """Write the fresh views queued by the resync."""
        self.flusher.flush()

    def notify(self, text: str) -> None:
        """Write the notice."""
        self.flusher.flush()
