"""The asyncio thread behind nats-py: results, errors and cancellation cross it intact."""

import asyncio
import threading

import pytest
import trio

from hlbook.relay.bridge import BridgeClosedError, open_asyncio_thread


async def test_results_and_errors_come_back_from_the_asyncio_thread() -> None:
    async with open_asyncio_thread() as bridge:

        async def where(x: int) -> tuple[int, str, bool]:
            await asyncio.sleep(0)
            running = asyncio.get_running_loop() is bridge.loop
            return x * 2, threading.current_thread().name, running

        assert await bridge.run(where, 21) == (42, "hlbook-asyncio", True)

        async def fail() -> None:
            raise KeyError("nope")

        with pytest.raises(KeyError, match="nope"):
            await bridge.run(fail)
        assert bridge.calls == 2


async def test_cancelling_the_trio_caller_cancels_and_awaits_the_coroutine() -> None:
    async with open_asyncio_thread() as bridge:
        state: list[str] = []
        started = trio.Event()
        token = trio.lowlevel.current_trio_token()

        async def slow() -> None:
            token.run_sync_soon(started.set)
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # cleanup that takes a while
                state.append("cleaned up")
                raise

        with trio.move_on_after(30) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bridge.run, slow)
                await started.wait()
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
        assert state == ["cleaned up"]  # the caller returned only after the cleanup


async def test_a_closed_bridge_refuses_calls() -> None:
    async with open_asyncio_thread() as bridge:
        pass

    async def anything() -> None:
        pass

    with pytest.raises(BridgeClosedError):
        await bridge.run(anything)
    bridge.spawn(anything)  # best effort: silently nothing


async def test_calls_pending_at_close_fail_with_a_clear_error() -> None:
    failures: list[BaseException] = []
    async with trio.open_nursery() as nursery, open_asyncio_thread() as bridge:

        async def forever() -> None:
            await asyncio.sleep(3600)

        async def call() -> None:
            try:
                await bridge.run(forever)
            except BridgeClosedError as exc:
                failures.append(exc)

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
    assert len(failures) == 1
