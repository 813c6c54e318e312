"""One asyncio event loop in a dedicated thread, called from Trio.

nats-py, the maintained NATS client, is asyncio-only. hlbook runs it on its own
asyncio loop in a daemon thread and talks to it through :meth:`AsyncioThread.run`:
the Trio task hands a coroutine function to the loop
(``asyncio.run_coroutine_threadsafe``) and sleeps until the coroutine's outcome
comes back through the Trio token (``TrioToken.run_sync_soon``). The rest of
hlbook stays pure Trio and never sees an asyncio object.

Why a thread and not ``trio-asyncio`` (which runs an asyncio loop on top of
Trio's, in the same thread):

* isolation: nats-py's own CPU work (object-store SHA-256 and chunking of
  a 15 MB snapshot, protocol parsing, reconnect loops) runs outside the Trio
  thread, so it can never delay the book task; a nats-py bug that blocks its
  loop stalls only NATS;
* no global patching of asyncio and no extra dependency: trio-asyncio
  re-implements asyncio's loop on Trio's and, once imported, patches asyncio
  for the whole process (``benchmarks/relay_bridge.py`` saw plain asyncio in
  the same process slow down after it was imported);
* the cost is two thread wake-ups per call. ``benchmarks/relay_bridge.py``
  measured, on a loaded shared 2-core machine, publish+ack 0.20 ms natively,
  0.40 ms through this bridge and 0.61 ms through trio-asyncio; a batch fetch
  adds 0.03 ms per message. A mainnet block arrives every ~70 ms.

The GIL decides how soon the asyncio thread runs: while the Trio thread is
busy in pure Python (the book task parsing a block's statuses), a thread that
wants the GIL waits up to the interpreter's switch interval (5 ms). Lowering
it to 0.5 ms (``sys.setswitchinterval``) was tried in interleaved rounds of
``benchmarks/relay_feed.py``: the relay's added latency read 7.6 and 6.0 ms
with it, 7.6 and 6.0 ms without, and the primary's own latency did not move
either; so the bridge leaves the process's setting alone.

Cancellation is structured: when the Trio caller is cancelled, the asyncio task
is cancelled and the caller waits (shielded, bounded by ``cancel_timeout``) until
the coroutine has really finished, so no NATS operation outlives its caller.
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import trio

__all__ = ["AsyncioThread", "BridgeClosedError", "open_asyncio_thread"]

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")


class BridgeClosedError(RuntimeError):
    """The asyncio thread is not running (closed, or its loop died)."""


class AsyncioThread:
    """An asyncio event loop running in a thread of its own. Use :func:`open_asyncio_thread`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, cancel_timeout: float) -> None:
        self._loop = loop
        self._closed = False
        self.cancel_timeout = cancel_timeout
        self.calls = 0
        """Calls made through :meth:`run` (for statistics and benchmarks)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop (only touch it from coroutines run through :meth:`run`)."""
        return self._loop

    async def run(
        self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``await fn(*args, **kwargs)`` on the asyncio loop; return or raise its outcome.

        Raises :class:`BridgeClosedError` if the thread is closed. If the Trio
        caller is cancelled, the coroutine is cancelled too and waited for.
        """
        if self._closed:
            raise BridgeClosedError("the asyncio thread is closed")
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[tuple[bool, Any]] = []

        def _wake() -> None:
            with contextlib.suppress(trio.RunFinishedError):  # the Trio side is gone
                token.run_sync_soon(done.set)

        async def _call() -> None:
            try:
                box.append((True, await fn(*args, **kwargs)))
            except BaseException as exc:  # handed to the Trio side, which re-raises it
                box.append((False, exc))
            finally:
                _wake()

        self.calls += 1
        try:
            future = asyncio.run_coroutine_threadsafe(_call(), self._loop)
        except RuntimeError as exc:  # the loop is closed
            raise BridgeClosedError(str(exc)) from None
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(self.cancel_timeout) as scope:
                await done.wait()
            if scope.cancelled_caught:
                log.warning("an asyncio call ignored cancellation for %.1f s", self.cancel_timeout)
            raise
        if not box:  # the coroutine was cancelled before it started
            raise BridgeClosedError("the asyncio call was cancelled by its loop")
        ok, value = box[0]
        if ok:
            return value  # type: ignore[no-any-return]
        if isinstance(value, asyncio.CancelledError):
            raise BridgeClosedError("the asyncio call was cancelled by its loop")
        raise value

    def spawn(
        self, fn: Callable[P, Coroutine[Any, Any, object]], *args: P.args, **kwargs: P.kwargs
    ) -> bool:
        """Start ``fn(*args, **kwargs)`` on the asyncio loop without waiting for it.

        For best-effort work only: its outcome is discarded (and logged if it
        fails). Returns ``False`` if it could not be started (the thread is closed).
        """
        if self._closed:
            return False

        async def _quietly() -> None:
            try:
                await fn(*args, **kwargs)
            except Exception:
                log.debug("a background asyncio call failed", exc_info=True)

        try:
            asyncio.run_coroutine_threadsafe(_quietly(), self._loop)
        except RuntimeError:  # the loop is closed
            return False
        return True


@asynccontextmanager
async def open_asyncio_thread(
    name: str = "hlbook-asyncio",
    *,
    cancel_timeout: float = 5.0,
) -> AsyncIterator[AsyncioThread]:
    """Start an asyncio loop in a daemon thread; on exit, cancel its tasks and join it.

    Whatever the block leaves running on the loop is cancelled by
    ``asyncio.run``'s own shutdown (tasks, async generators, the default executor).
    """
    started = threading.Event()
    holder: list[asyncio.AbstractEventLoop] = []
    stop: list[asyncio.Event] = []

    async def _main() -> None:
        holder.append(asyncio.get_running_loop())
        stop.append(asyncio.Event())
        started.set()
        await stop[0].wait()

    def _thread() -> None:
        try:
            asyncio.run(_main())
        except BaseException:  # pragma: no cover - logged: the Trio side sees BridgeClosedError
            log.exception("the asyncio thread died")
        finally:
            started.set()

    thread = threading.Thread(target=_thread, name=name, daemon=True)
    thread.start()
    await trio.to_thread.run_sync(started.wait)
    if not holder:
        raise BridgeClosedError("the asyncio thread did not start")
    bridge = AsyncioThread(holder[0], cancel_timeout=cancel_timeout)
    try:
        yield bridge
    finally:
        bridge._closed = True
        with contextlib.suppress(RuntimeError):  # the loop already stopped
            holder[0].call_soon_threadsafe(stop[0].set)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join, abandon_on_cancel=False)
