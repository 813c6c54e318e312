"""``hlbook serve --workers N`` under Trio: the supervisor and each worker's extras.

The supervisor (:func:`supervise`) reserves the port, starts N copies of the
same ``hlbook serve`` command with ``--worker SLOT`` added, restarts one that
exits (:class:`~hlbook.workers.RestartPolicy`) and, when cancelled (Ctrl-C,
SIGTERM), sends each SIGTERM and waits for it. A worker (:func:`run_worker`)
is :func:`hlbook.serve` on sockets that share the port, plus:

- a control socket (``worker-<i>.sock`` in a private directory) on which it
  answers its peers ``health`` or ``metrics`` with its own figures, so that
  ``/health`` and ``/metrics`` on any worker describe the whole set;
- lines on stdout for the supervisor (``listening``, ``ready``);
- stdin from the supervisor: end of file means the supervisor is gone (even
  killed with SIGKILL), and the worker stops rather than live on as an orphan.

Workers run in their own session, so a terminal's Ctrl-C reaches only the
supervisor, which then stops them in order.
"""

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import h11
import orjson
import trio

from hlbook.app import ServerHandle, serve
from hlbook.config import Config
from hlbook.errors import StartupError
from hlbook.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hlbook.runner import freeze_gc_when_ready
from hlbook.server.routes import Response, json_response
from hlbook.workers import (
    RestartPolicy,
    Slot,
    WorkerReport,
    aggregate_health,
    merge_metrics,
    worker_paths,
)

__all__ = ["open_shared_listeners", "reserve_port", "run_worker", "supervise"]

log = logging.getLogger("hlbook")

_TAG = "hlbook-worker "
"""Prefix of the lines a worker writes on stdout for the supervisor."""
_STOP_TIMEOUT = 15.0
"""Seconds a worker has to exit after SIGTERM before it is killed."""
_PEER_TIMEOUT = 2.0
"""Seconds a peer has to answer a health or metrics request."""


# -- sockets ------------------------------------------------------------------------------


def _addresses(host: str, port: int) -> list[Any]:
    try:
        return socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except OSError as exc:
        raise StartupError(f"hlbook cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _shared_socket(family: int, address: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _check_free(host: str, port: int) -> None:
    """Refuse a port that another process holds, even one that allows sharing it.

    ``SO_REUSEPORT`` lets every socket of the same user that sets it bind the
    port: a second ``--workers`` set would start beside the first and the kernel
    would split clients between two unrelated servers. A plain bind first (then
    released for the set's own sockets) fails on any holder.
    """
    for family, _type, _proto, _name, address in _addresses(host, port):
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise StartupError(
                f"hlbook cannot listen on {host}:{port}: {why} (another hlbook --workers set?)"
            ) from exc
        finally:
            probe.close()


def reserve_port(host: str, port: int) -> tuple[int, list[socket.socket]]:
    """Bind (without listening) a ``SO_REUSEPORT`` socket on every address of ``host``
    and return the port (chosen here when ``port`` is 0) with the sockets.

    A bound socket that does not listen receives no connection, but holds the
    port for the set while its workers come and go: only sockets of the same
    user with ``SO_REUSEPORT`` can bind it too. Raises
    :class:`~hlbook.errors.StartupError` when the port is taken.
    """
    if port:
        _check_free(host, port)
    sockets: list[socket.socket] = []
    try:
        for family, _type, _proto, _name, address in _addresses(host, port):
            if port:
                address = (address[0], port, *address[2:])
            try:
                sockets.append(_shared_socket(family, address))
            except OSError as exc:
                why = exc.strerror or str(exc)
                raise StartupError(f"hlbook cannot listen on {host}:{port}: {why}") from exc
            port = sockets[-1].getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return port, sockets


async def open_shared_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Listening ``SO_REUSEPORT`` sockets on ``host:port``: the kernel spreads new
    connections over every process listening this way (by a hash of the client's
    address and port)."""
    listeners = []
    try:
        for family, _type, _proto, _name, address in _addresses(host, port):
            try:
                sock = _shared_socket(family, address)
            except OSError as exc:
                why = exc.strerror or str(exc)
                raise StartupError(f"hlbook cannot listen on {host}:{port}: {why}") from exc
            sock.listen(socket.SOMAXCONN)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    except BaseException:
        for listener in listeners:
            await listener.aclose()
        raise
    return listeners


# -- the supervisor ---------------------------------------------------------------------------


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


@attrs.define
class _Supervisor:
    argv: Sequence[str]
    count: int
    port: int
    control_dir: Path
    policy: RestartPolicy
    ready: set[int] = attrs.Factory(set)

    async def run_slot(self, index: int) -> None:
        """Keep worker ``index`` running until cancelled."""
        while True:
            slot = Slot(index, self.count, self.policy.restarts(index), self.port, self.control_dir)
            status, pid = await self._run_once(slot)
            self.ready.discard(index)
            decision = self.policy.exited(index, trio.current_time())
            if not decision.restart:
                raise StartupError(
                    f"worker {index} could not start ({_describe(status)}; see above): stopping"
                )
            log.warning(
                "worker %d (pid %d) %s %s; restarting it in %.1f s",
                index,
                pid,
                _describe(status),
                decision.reason,
                decision.delay,
                extra={"worker": index, "pid": pid, "status": status},
            )
            await trio.sleep(decision.delay)

    async def _run_once(self, slot: Slot) -> tuple[int, int]:
        argv = [sys.executable, "-m", "hlbook", *self.argv, "--worker", slot.encode()]
        self.control_dir.mkdir(mode=0o700, exist_ok=True)  # the last worker out removes it
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor only
        )
        self.policy.started(slot.index, trio.current_time())
        what = "restarted" if slot.generation else "started"
        log.info(
            "worker %d %s (pid %d)",
            slot.index,
            what,
            process.pid,
            extra={"worker": slot.index, "pid": process.pid},
        )
        try:
            async with trio.open_nursery() as nursery:
                assert process.stdout is not None
                read_all = trio.Event()
                nursery.start_soon(self._read_lines, slot, process.stdout, read_all)
                status = await process.wait()
                # What it wrote before it exited still counts ("listening" decides whether
                # it is restarted); its stdout ends with it.
                with trio.move_on_after(1.0):
                    await read_all.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process)
                if process.stdin is not None:
                    await process.stdin.aclose()
        return status, process.pid

    async def _read_lines(
        self, slot: Slot, stdout: trio.abc.ReceiveStream, done: trio.Event
    ) -> None:
        buffer = b""
        async for chunk in stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                if not text.startswith(_TAG):
                    sys.stdout.write(text + "\n")  # not ours: pass it on
                    continue
                self._event(slot, text.removeprefix(_TAG).strip())
        done.set()

    def _event(self, slot: Slot, event: str) -> None:
        if event == "listening":
            self.policy.listening(slot.index)
        elif event == "ready":
            self.ready.add(slot.index)
            log.info(
                "worker %d ready (%d/%d workers ready)",
                slot.index,
                len(self.ready),
                self.count,
                extra={"worker": slot.index},
            )


async def _stop(process: trio.Process) -> None:
    """SIGTERM, then SIGKILL if it has not exited in time."""
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(_STOP_TIMEOUT):
            await process.wait()
    if process.returncode is None:
        log.warning("worker pid %d did not stop in %.0f s: killing it", process.pid, _STOP_TIMEOUT)
        process.kill()
        await process.wait()


async def supervise(argv: Sequence[str], config: Config, count: int) -> None:
    """Run ``count`` workers of ``hlbook <argv>`` on one port until cancelled.

    ``argv`` is the ``serve`` command line as given (each worker resolves the
    same settings from it, the environment and the config file).
    """
    port, reserved = reserve_port(config.host, config.port)
    control_dir = Path(tempfile.mkdtemp(prefix="hlbook-workers-"))  # mode 0700: ours only
    scheme = "wss" if config.tls_cert else "ws"
    url = f"{scheme}://{config.host}:{port}/ws"
    supervisor = _Supervisor(argv, count, port, control_dir, RestartPolicy(count))
    try:
        log.info(
            "serving %s with %d workers (node data %s)",
            url,
            count,
            config.node_data,
            extra={"url": url, "workers": count},
        )
        log.info(
            "workers answer each other's /health and /metrics in control directory %s", control_dir
        )
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(supervisor.run_slot, index)
    finally:
        for sock in reserved:
            sock.close()
        shutil.rmtree(control_dir, ignore_errors=True)


# -- a worker -------------------------------------------------------------------------------


def _tell(event: str) -> None:
    sys.stdout.write(f"{_TAG}{event}\n")
    sys.stdout.flush()


class _WorkerLabel(logging.Filter):
    """Adds the worker's index to every record: ``hlbook[w1]`` in text, ``worker`` in JSON."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = self.index
            record.name = f"{record.name}[w{self.index}]"
        return True


def worker_config(config: Config, slot: Slot) -> Config:
    """``config`` for worker ``slot``: its port, and snapshot and history files of its own;
    only worker 0 publishes to NATS (``--publish``: one copy of each block and snapshot)."""
    snapshot, history = worker_paths(config.snapshot_out, config.history_path, slot.index)
    return attrs.evolve(
        config,
        port=slot.port,
        snapshot_path=snapshot,
        history=str(history) if history is not None else "none",
        publish=config.publish if slot.index == 0 else (),
    )


async def run_worker(config: Config, slot: Slot) -> None:
    """One worker of a set: :func:`hlbook.serve` on the shared port, its control socket,
    and the lines the supervisor waits for. Returns when the supervisor goes away."""
    label = _WorkerLabel(slot.index)
    for handler in logging.getLogger().handlers:
        handler.addFilter(label)
    config = worker_config(config, slot)
    listeners = await open_shared_listeners(config.host, slot.port)
    async with trio.open_nursery() as nursery:
        handle: ServerHandle = await nursery.start(partial(serve, config, listeners=listeners))
        handle.worker = slot.index
        peers = _Peers(slot, handle, handle.routes.extra["/metrics"])
        handle.routes.extra["/health"] = peers.health_route
        handle.routes.extra["/metrics"] = peers.metrics_route
        await nursery.start(_serve_control, slot.control_path(), peers.answer)
        nursery.start_soon(_watch_supervisor, nursery.cancel_scope)
        _tell("listening")
        await freeze_gc_when_ready(handle)
        _tell("ready")


async def _watch_supervisor(scope: trio.CancelScope) -> None:
    """Stop when stdin (a pipe from the supervisor) ends: the supervisor is gone."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        while await stdin.receive_some(4096):
            pass
    log.warning("the supervisor is gone: stopping")
    scope.cancel()


@attrs.define
class _Peers:
    slot: Slot
    handle: ServerHandle
    own_metrics: Callable[[h11.Request], Awaitable[Response]]

    async def _own_metrics_text(self) -> str:
        response = await self.own_metrics(
            h11.Request(method="GET", target="/metrics", headers=[("host", "localhost")])
        )
        return response.body.decode()

    async def answer(self, request: bytes) -> bytes:
        """What this worker tells a peer asking ``health`` or ``metrics``."""
        reply: dict[str, Any] = {"generation": self.slot.generation, "pid": os.getpid()}
        if request == b"health":
            reply["health"] = self.handle.health(public=True)
        elif request == b"metrics":
            reply["metrics"] = await self._own_metrics_text()
        else:
            reply["error"] = "unknown request"
        return orjson.dumps(reply)

    async def _gather(self, request: bytes) -> list[WorkerReport]:
        reports: list[WorkerReport] = []

        async def one(index: int) -> None:
            if index == self.slot.index:
                raw: bytes | None = await self.answer(request)
            else:
                raw = await _ask(self.slot.control_path(index), request)
            if raw is None:
                reports.append(WorkerReport(index))
                return
            value = orjson.loads(raw)
            reports.append(
                WorkerReport(
                    index,
                    generation=value.get("generation"),
                    pid=value.get("pid"),
                    health=value.get("health"),
                    metrics=value.get("metrics"),
                )
            )

        async with trio.open_nursery() as nursery:
            for index in range(self.slot.count):
                nursery.start_soon(one, index)
        return reports

    async def health_route(self, _request: h11.Request) -> Response:
        """``GET /health``: this worker's health and the set's (``workers``)."""
        own = self.handle.health(public=True)
        reports = await self._gather(b"health")
        return json_response(200 if own.get("live") else 503, aggregate_health(own, reports))

    async def metrics_route(self, _request: h11.Request) -> Response:
        """``GET /metrics``: every worker's series, labelled ``worker``."""
        reports = await self._gather(b"metrics")
        body = await trio.to_thread.run_sync(merge_metrics, reports)
        return Response(200, body, content_type=METRICS_CONTENT_TYPE)


async def _serve_control(
    path: Path,
    answer: Callable[[bytes], Awaitable[bytes]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer peers on the Unix socket ``path``: one request line, one JSON reply."""
    await trio.Path(path).unlink(missing_ok=True)  # left by this slot's previous worker
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(64)
    listener = trio.SocketListener(sock)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.move_on_after(_PEER_TIMEOUT):
                try:
                    while b"\n" not in request and len(request) < 64:
                        chunk = await stream.receive_some(64)
                        if not chunk:
                            break
                        request += chunk
                    await stream.send_all(await answer(request.strip()))
                except trio.BrokenResourceError:
                    pass  # the peer gave up (its own timeout)
                except Exception:
                    # A bug: this peer's /health or /metrics lacks this worker; serving goes on.
                    log.exception("answering a peer's %r failed", request[:64])

    task_status.started()
    try:
        await trio.serve_listeners(handle, [listener])
    finally:
        # The last worker out removes the directory (a supervisor killed with SIGKILL
        # cannot); the supervisor makes it again before it starts a worker.
        with contextlib.suppress(OSError):
            os.unlink(path)
            os.rmdir(path.parent)


async def _ask(path: Path, request: bytes) -> bytes | None:
    """A peer's reply to ``request``, or ``None`` if it is down or too slow."""
    with trio.move_on_after(_PEER_TIMEOUT):
        try:
            stream = await trio.open_unix_socket(str(path))
            async with stream:
                await stream.send_all(request + b"\n")
                chunks = []
                while chunk := await stream.receive_some(1 << 16):
                    chunks.append(chunk)
                return b"".join(chunks)
        except (OSError, trio.BrokenResourceError):
            return None
    return None
