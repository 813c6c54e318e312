"""``hlbook serve --workers N`` under Trio: the supervisor and each worker's extras.

The supervisor (:func:`supervise`) reserves the port, starts N copies of the
same ``hlbook serve`` command with ``--worker SLOT`` added, restarts one that
exits (:class:`~hlbook.workers.RestartPolicy`), pings each on its control
socket and kills one that stops answering (:class:`~hlbook.workers.Liveness`),
and, when cancelled (Ctrl-C, SIGTERM), sends each SIGTERM and waits for it. A
worker (:func:`run_worker`) is :func:`hlbook.serve` on sockets that share the
port, plus:

- sockets bound at start but listening only when the supervisor says
  ``listen`` (no worker is ready) or once its books are ready
  (:class:`~hlbook.workers.Admission`): a restarted worker takes no connection
  it could only answer with 503 while another worker serves;
- a control socket (``worker-<i>.sock`` in a private directory) on which it
  answers the supervisor's ``ping`` and its peers' ``health`` or ``metrics``
  with its own figures, so that ``/health`` and ``/metrics`` on any worker
  describe the whole set;
- lines on stdout for the supervisor (``up``, ``ready``);
- stdin from the supervisor: ``listen`` lines, and end of file, which means the
  supervisor is gone (even killed with SIGKILL): the worker stops rather than
  live on as an orphan.

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
from hlbook.listen import HeldListener
from hlbook.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hlbook.runner import freeze_gc_when_ready
from hlbook.server.routes import Response, json_response
from hlbook.workers import (
    HEARTBEAT_TIMEOUT,
    Admission,
    Liveness,
    RestartPolicy,
    Slot,
    WorkerReport,
    aggregate_health,
    merge_metrics,
    worker_paths,
)

__all__ = ["bind_shared", "reserve_port", "run_worker", "supervise"]

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


def bind_shared(host: str, port: int) -> list[HeldListener]:
    """``SO_REUSEPORT`` sockets bound on ``host:port``, not listening yet
    (:meth:`~hlbook.listen.HeldListener.open`): once they listen, the kernel spreads
    new connections over every process listening this way (by a hash of the
    client's address and port). Binding first checks the address at start (a
    worker that cannot bind stops the set) whenever the worker then listens."""
    listeners = []
    try:
        for family, _type, _proto, _name, address in _addresses(host, port):
            try:
                sock = _shared_socket(family, address)
            except OSError as exc:
                why = exc.strerror or str(exc)
                raise StartupError(f"hlbook cannot listen on {host}:{port}: {why}") from exc
            listeners.append(HeldListener(trio.socket.from_stdlib_socket(sock)))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
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
    liveness: Liveness
    admission: Admission
    processes: dict[int, trio.Process] = attrs.Factory(dict)
    """The running worker of each slot."""
    listen_now: dict[int, trio.Event] = attrs.Factory(dict)
    """Set to tell the running worker of a slot to listen before its books are ready."""

    async def run_slot(self, index: int) -> None:
        """Keep worker ``index`` running until cancelled."""
        while True:
            slot = Slot(index, self.count, self.policy.restarts(index), self.port, self.control_dir)
            status, pid = await self._run_once(slot)
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
        # Only workers outliving a killed supervisor remove it; made again for safety.
        self.control_dir.mkdir(mode=0o700, exist_ok=True)
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor only
        )
        now = trio.current_time()
        self.policy.started(slot.index, now)
        self.liveness.started(slot.index, now)
        self.processes[slot.index] = process
        listen_now = self.listen_now[slot.index] = trio.Event()
        if self.admission.started(slot.index):
            listen_now.set()
            held = ""
        else:
            serving = self.admission.ready_count
            held = (
                f"; it takes connections once its books are ready ({serving} other"
                f" worker{'s' if serving > 1 else ''} serving meanwhile)"
            )
        what = "restarted" if slot.generation else "started"
        log.info(
            "worker %d %s (pid %d)%s",
            slot.index,
            what,
            process.pid,
            held,
            extra={"worker": slot.index, "pid": process.pid},
        )
        try:
            async with trio.open_nursery() as nursery:
                assert process.stdout is not None
                read_all = trio.Event()
                nursery.start_soon(self._read_lines, slot, process.stdout, read_all)
                nursery.start_soon(self._tell_listen, process, listen_now)
                nursery.start_soon(self._ping, slot, process)
                status = await process.wait()
                # What it wrote before it exited still counts ("up" decides whether it is
                # restarted); its stdout ends with it.
                with trio.move_on_after(1.0):
                    await read_all.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process)
                if process.stdin is not None:
                    await process.stdin.aclose()
            del self.processes[slot.index]
            self.liveness.exited(slot.index)
            opened = self.admission.exited(slot.index)
        # It exited by itself (not the set stopping): if it was the last ready worker,
        # held workers listen now, so that clients get /health and a 503 they can retry
        # rather than a refused connection.
        for other in opened:
            log.warning(
                "no worker is ready since worker %d exited: worker %d accepts connections"
                " now, before its books are ready (clients get 503 bootstrapping until they are)",
                slot.index,
                other,
                extra={"worker": other},
            )
            self.listen_now[other].set()
        return status, process.pid

    async def _tell_listen(self, process: trio.Process, listen_now: trio.Event) -> None:
        """Tell the worker to listen before its books are ready, once that is decided."""
        await listen_now.wait()
        assert process.stdin is not None
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await process.stdin.send_all(b"listen\n")

    async def _ping(self, slot: Slot, process: trio.Process) -> None:
        """Ask the worker ``ping`` on its control socket every interval; each answer (from
        this process: its pid) is a heartbeat."""
        while True:
            reply = await _ask(slot.control_path(), b"ping")
            if reply is not None:
                try:
                    pid = orjson.loads(reply).get("pid")
                except orjson.JSONDecodeError:
                    pid = None
                if pid == process.pid:
                    self.liveness.beat(slot.index, trio.current_time())
            await trio.sleep(self.liveness.interval)

    async def watch(self) -> None:
        """Kill (SIGKILL) each worker that stopped answering; :meth:`run_slot` restarts it."""
        while True:
            await trio.sleep(self.liveness.interval)
            for silent in self.liveness.overdue(trio.current_time()):
                process = self.processes.get(silent.index)
                if process is None or process.returncode is not None:
                    continue
                log.error(
                    "worker %d (pid %d) has not answered for %.1f s%s (process state: %s):"
                    " killing it with SIGKILL",
                    silent.index,
                    process.pid,
                    silent.silent_for,
                    "" if silent.answered else " since it started",
                    _process_state(process.pid),
                    extra={"worker": silent.index, "pid": process.pid},
                )
                process.kill()

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
        # Written by the worker's Trio loop, like its answers to pings: a sign of life.
        self.liveness.beat(slot.index, trio.current_time())
        if event == "up":
            self.policy.up(slot.index)
        elif event == "ready":
            self.admission.ready(slot.index)
            log.info(
                "worker %d ready (%d/%d workers ready)",
                slot.index,
                self.admission.ready_count,
                self.count,
                extra={"worker": slot.index},
            )


_STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "waiting on the disk",
    "T": "stopped",
    "t": "stopped by a debugger",
    "Z": "exited",
}


def _process_state(pid: int) -> str:
    """What ``/proc`` says the process is doing (``T stopped``: SIGSTOP), for the log."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return "unknown"
    return f"{state} {_STATES.get(state, '')}".strip()


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


async def supervise(
    argv: Sequence[str],
    config: Config,
    count: int,
    *,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
) -> None:
    """Run ``count`` workers of ``hlbook <argv>`` on one port until cancelled.

    ``argv`` is the ``serve`` command line as given (each worker resolves the
    same settings from it, the environment and the config file).
    ``heartbeat_timeout``: seconds a worker may leave the supervisor's pings
    unanswered before it is killed and restarted.
    """
    port, reserved = reserve_port(config.host, config.port)
    control_dir = Path(tempfile.mkdtemp(prefix="hlbook-workers-"))  # mode 0700: ours only
    scheme = "wss" if config.tls_cert else "ws"
    url = f"{scheme}://{config.host}:{port}/ws"
    supervisor = _Supervisor(
        argv,
        count,
        port,
        control_dir,
        RestartPolicy(count),
        Liveness(count, timeout=heartbeat_timeout),
        Admission(count),
    )
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
            nursery.start_soon(supervisor.watch)
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


@attrs.define
class _Gate:
    """A worker's sockets on the shared port: bound at start, listening once opened."""

    listeners: list[HeldListener]

    @property
    def is_open(self) -> bool:
        """Whether it accepts connections."""
        return all(listener.is_open for listener in self.listeners)

    def open(self, why: str) -> None:
        """Listen (once), saying why in the log."""
        if self.is_open:
            return
        for listener in self.listeners:
            listener.open()
        log.info("accepting connections %s", why)


async def run_worker(config: Config, slot: Slot) -> None:
    """One worker of a set: :func:`hlbook.serve` on the shared port, its control socket,
    and the lines the supervisor waits for. Returns when the supervisor goes away.

    Its sockets listen when the supervisor says ``listen`` (no worker of the set is
    ready) or else once its books are ready."""
    label = _WorkerLabel(slot.index)
    for handler in logging.getLogger().handlers:
        handler.addFilter(label)
    config = worker_config(config, slot)
    gate = _Gate(bind_shared(config.host, slot.port))
    peers: _Peers | None = None

    async def answer(request: bytes) -> bytes:
        if peers is not None:
            return await peers.answer(request)
        if request == b"ping":  # the supervisor's heartbeat, answered from the start
            return orjson.dumps({"generation": slot.generation, "pid": os.getpid()})
        return orjson.dumps({"error": "starting"})  # no generation: not up yet for the set

    orphaned = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(_serve_control, slot.control_path(), answer, orphaned)
        nursery.start_soon(_follow_supervisor, nursery.cancel_scope, gate, orphaned)
        handle: ServerHandle = await nursery.start(partial(serve, config, listeners=gate.listeners))
        handle.worker = slot.index
        peers = _Peers(slot, handle, handle.routes.extra["/metrics"], gate)
        handle.routes.extra["/health"] = peers.health_route
        handle.routes.extra["/metrics"] = peers.metrics_route
        _tell("up")
        await freeze_gc_when_ready(handle)
        gate.open("(books ready)")
        _tell("ready")


async def _follow_supervisor(scope: trio.CancelScope, gate: _Gate, orphaned: trio.Event) -> None:
    """Follow the supervisor's lines on stdin (a pipe from it): ``listen`` opens the
    sockets now; end of file means the supervisor is gone, and the worker stops
    (``orphaned`` set)."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stdin:
        while chunk := await stdin.receive_some(4096):
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                if line.strip() == b"listen":
                    gate.open(
                        "before the books are ready, as no worker of the set is ready (clients"
                        " get 503 bootstrapping until they are)"
                    )
    log.warning("the supervisor is gone: stopping")
    orphaned.set()
    scope.cancel()


@attrs.define
class _Peers:
    slot: Slot
    handle: ServerHandle
    own_metrics: Callable[[h11.Request], Awaitable[Response]]
    gate: _Gate

    def _own_health(self) -> dict[str, Any]:
        health = self.handle.health(public=True)
        health["accepting"] = self.gate.is_open
        return health

    async def _own_metrics_text(self) -> str:
        response = await self.own_metrics(
            h11.Request(method="GET", target="/metrics", headers=[("host", "localhost")])
        )
        return response.body.decode()

    async def answer(self, request: bytes) -> bytes:
        """What this worker tells the supervisor's ``ping`` or a peer asking ``health`` or
        ``metrics``."""
        reply: dict[str, Any] = {"generation": self.slot.generation, "pid": os.getpid()}
        if request == b"ping":
            pass
        elif request == b"health":
            reply["health"] = self._own_health()
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
        own = self._own_health()
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
    orphaned: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer the supervisor and peers on the Unix socket ``path``: one request line, one
    JSON reply. ``orphaned``: set when the supervisor is gone (then the last worker
    out removes the directory)."""
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
        with contextlib.suppress(OSError):
            os.unlink(path)
        # A supervisor killed with SIGKILL cannot remove the directory: then the last
        # worker out does. Not otherwise: a worker that stops early (a bad certificate)
        # would remove it under a peer about to bind its socket there.
        if orphaned.is_set():
            with contextlib.suppress(OSError):
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
