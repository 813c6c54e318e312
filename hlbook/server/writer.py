"""Getting queued messages onto client sockets.

Two paths, one order:

* after the fan-out has queued a block's messages, one *flusher* task writes
  each dirty client's queue straight to its socket with a non-blocking
  ``os.write`` — no task switch per client. When the socket takes it all
  (the usual case) that is the end of it;
* when it does not (a slow reader, a full buffer), the rest of the bytes go
  to that client's *writer task*, which finishes them with ``send_all`` and
  keeps draining the queue at the client's pace. The book task never waits.

Frames are pre-built once per message for all subscribers
(:mod:`hlbook.server.frames`). trio-websocket also writes to the socket
(pongs, close frames), so every write — direct or not — holds the
connection's stream lock, which is replaced by a :class:`trio.Semaphore`
so that a direct write cut short can hand the lock over to the writer task
and nothing can ever land between the two halves of a frame.
"""

import os
from collections.abc import Callable

import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

from hlbook.server.fanout import ClientQueue
from hlbook.server.frames import frame_of

__all__ = ["Flusher", "Waker", "Writer"]

_BATCH_CHARS = 1 << 20  # at most ~1 MB per write


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


class Writer:
    """One client's path from its :class:`ClientQueue` to its socket."""

    def __init__(
        self,
        ws: WebSocketConnection,
        stream: trio.SocketStream,
        client: ClientQueue,
        *,
        on_sent: Callable[[int, int], None],
    ) -> None:
        self.ws = ws
        self.stream = stream
        self.client = client
        self.on_sent = on_sent
        self.waker = Waker()
        self.done = trio.Event()
        self._fd = stream.socket.fileno()
        self._backlog = b""  # bytes taken from the queue, not written yet
        self._partial = False  # part of the backlog is on the wire: finish it first
        self._writing = False
        # trio-websocket serialises its own writes with this lock; there is no public
        # way to write pre-built frames, so we share it, as a lock any task may release.
        self._lock = trio.Semaphore(1)
        ws._stream_lock = self._lock  # type: ignore[assignment]

    @property
    def mid_frame(self) -> bool:
        """True if stopping now would leave a frame half written."""
        return self._writing or self._partial

    def _take(self) -> bytes:
        batch = self.client.pop_batch(_BATCH_CHARS)
        if not batch:
            return b""
        self.on_sent(len(batch), sum(map(len, batch)))
        stats = self.client.stats
        stats.messages_sent += len(batch)
        stats.bytes_sent += sum(map(len, batch))
        return b"".join(map(frame_of, batch))

    def write_now(self) -> None:
        """Write what is queued without waiting (from the flusher); else wake the task."""
        if self._backlog or self._lock.value == 0 or self.client.close_reason is not None:
            self.waker.set()
            return
        if self.ws.closed is not None:
            self.waker.set()
            return
        self._lock.acquire_nowait()
        data = self._take()
        try:
            written = os.write(self._fd, data) if data else 0
        except BlockingIOError:
            written = 0
        except OSError:
            written = 0  # the task's send_all will report what went wrong
        if written == len(data):
            self._lock.release()
            self.client.stats.direct_writes += 1
            return
        # The socket is full: the task finishes, still holding the lock.
        self.client.stats.backlogged_writes += 1
        self._backlog = data[written:]
        self._partial = written > 0
        self.waker.set()

    async def run(self) -> None:
        """The client's writer task: backlogs and slow clients."""
        client = self.client
        try:
            while True:
                if self._backlog:
                    await self._finish_backlog()
                    continue
                if client.close_reason is not None:
                    return
                await self._lock.acquire()
                data = self._take()
                if not data:
                    self._lock.release()
                    await self.waker.wait()
                    continue
                self._backlog = data
                self.client.stats.backlogged_writes += 1
                await self._finish_backlog()
        except ConnectionClosed:
            client.close(1000, "")
        finally:
            self.done.set()

    async def _finish_backlog(self) -> None:
        """Write the backlog; the lock is held (by us or by a direct write cut short)."""
        try:
            if self.ws.closed is not None:
                raise ConnectionClosed(self.ws.closed)
            self._writing = True
            try:
                await self.stream.send_all(self._backlog)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ConnectionClosed(CloseReason(1006, "connection lost")) from None
            # Not reached when cancelled mid-write: mid_frame then stays true.
            self._writing = False
            self._partial = False
        finally:
            if not self._writing:
                self._backlog = b""
                self._lock.release()


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

    async def run(self) -> None:
        """Flush dirty clients whenever there are some (until cancelled)."""
        while True:
            await self._waker.wait()
            dirty, self._dirty = self._dirty, {}
            for writer in dirty:
                writer.write_now()
