"""Shared by the server benchmarks: child processes, /proc figures, a lean WebSocket client.

Not a benchmark itself. ``server_latency.py``, ``server_fanout.py`` and
``server_memory.py`` import it; ``python benchmarks/server_common.py clients ...``
runs :class:`LeanClient` connections in a process of their own.

Every process here is a real one on loopback: the simulator is
``python -m hlbook simulate``, the server ``python -m hlbook serve --port 0``.
CPU time and memory are read from ``/proc/<pid>/stat`` and ``/proc/<pid>/statm``
(Linux). Times that cross processes use ``time.monotonic()``: CLOCK_MONOTONIC
is one clock for the whole machine, and NTP steps cannot move it.
"""

import argparse
import base64
import json
import math
import os
import re
import resource
import secrets
import shlex
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import orjson
import trio
from trio_websocket import open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
child_root = ROOT
"""Where children run: ``python -m hlbook`` imports hlbook from its working directory
first, before ``PYTHONPATH`` (a benchmark's ``--server-root`` must set both)."""
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
CORES = len(os.sched_getaffinity(0))
"""CPUs this process (and so every child) may run on."""

# -- /proc figures -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # The command name may hold spaces and parentheses: fields start after the last ")".
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def run_queue_seconds(pid: int) -> float:
    """Seconds the main thread of ``pid`` was runnable but waiting for a CPU (schedstat)."""
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return math.nan


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) clock ticks of all CPUs so far, from ``/proc/stat``."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    return busy, fields[7], sum(fields[:8])


_Sample = tuple[float, tuple[int, int, int], dict[str, tuple[float, float]]]
"""(monotonic time, machine ticks, {name: (CPU seconds, run-queue seconds)})."""


class CpuMeter:
    """CPU share of a set of processes over a window: ``mark()``, later ``shares()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: _Sample | None = None
        self.waits: dict[str, float] = {}
        """After :meth:`shares`: share of the window each main thread waited for a CPU."""
        self.steal = math.nan
        """After :meth:`shares`: share of all CPU time the hypervisor took (VMs)."""
        self.others = math.nan
        """After :meth:`shares`: CPU used by everything else on the machine (1.0 = a core)."""

    def _sample(self) -> _Sample:
        return (
            time.monotonic(),
            machine_ticks(),
            {name: (cpu_seconds(pid), run_queue_seconds(pid)) for name, pid in self.pids.items()},
        )

    def mark(self) -> None:
        """Start the window now."""
        self._start = self._sample()

    def shares(self) -> dict[str, float]:
        """CPU used since :meth:`mark` divided by wall time (1.0 = one core busy)."""
        assert self._start is not None
        wall0, (busy0, steal0, total0), start = self._start
        wall1, (busy1, steal1, total1), end = self._sample()
        span = wall1 - wall0
        self.steal = (steal1 - steal0) / max(total1 - total0, 1)
        self.waits = {name: (end[name][1] - start[name][1]) / span for name in self.pids}
        shares = {name: (end[name][0] - start[name][0]) / span for name in self.pids}
        # Tick accounting is coarse: a few percent either way is noise.
        self.others = max(0.0, (busy1 - busy0) / TICKS / span - sum(shares.values()))
        return shares


def pin(pid: int, cpus: set[int]) -> None:
    """Restrict every thread of process ``pid`` to ``cpus`` (children inherit it)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with suppress(ProcessLookupError):  # a worker thread that just ended
            os.sched_setaffinity(int(task), cpus)


def split_cpus() -> tuple[set[int], set[int]]:
    """One CPU for the server under test, the rest for everything else (needs 2+ CPUs)."""
    cpus = sorted(os.sched_getaffinity(0))
    return {cpus[0]}, set(cpus[1:])


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit (inherited by children) to ``wanted`` if allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# -- statistics -----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (``p`` in 0..100); NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60


def command_line(script: str) -> str:
    """The command that reproduces this run, as the README should show it."""
    return shlex.join(["python", f"benchmarks/{script}", *sys.argv[1:]])


def summary_header(name: str) -> str:
    """The stable first line of every summary block (the smoke test looks for it)."""
    return f"===== SUMMARY {name} ====="


# -- child processes ------------------------------------------------------------------------


class Child:
    """A child process whose stdout and stderr are collected line by line."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self.stop_seconds: float | None = None
        """How long the child took to exit after SIGINT."""
        self.killed = False
        """True if it had to be killed because SIGINT did not stop it in time."""
        self._changed = trio.Event()
        self.info_url = ""
        """A node's info server URL (set by :func:`start_node`)."""

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        """Collect ``stream``'s lines (always drained: a full pipe would block the child)."""
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            if complete:
                self.lines.extend(line.decode(errors="replace") for line in complete)
                self._changed.set()
                self._changed = trio.Event()

    async def wait_for(self, pattern: str, limit: float = 60.0, start: int = 0) -> re.Match[str]:
        """The first line (from index ``start``) matching ``pattern``; fail after ``limit`` s."""
        regex = re.compile(pattern)
        seen = start
        with trio.fail_after(limit):
            while True:
                for line in self.lines[seen:]:
                    if found := regex.search(line):
                        return found
                seen = max(seen, len(self.lines))
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.process.returncode} before "
                        f"printing {pattern!r}:\n{self.tail()}"
                    )
                with trio.move_on_after(0.2):
                    await self._changed.wait()

    def tail(self, count: int = 30) -> str:
        """The last lines printed, for error messages."""
        return "\n".join(f"  [{self.name}] {line}" for line in self.lines[-count:])

    def errors(self) -> list[str]:
        """Lines that look like tracebacks or errors."""
        return [line for line in self.lines if "Traceback" in line or " ERROR " in line]


@asynccontextmanager
async def start_child(name: str, argv: Sequence[str]) -> AsyncIterator[Child]:
    """Run ``argv`` (from :data:`child_root`) until the block ends, then stop it.

    Stopping sends SIGINT (hlbook's commands exit cleanly on it) and kills the
    child only if it has not exited after 15 s.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=child_root,
        env=env,
    )
    child = Child(name, process)
    async with trio.open_nursery() as nursery:
        assert process.stdout is not None
        assert process.stderr is not None
        nursery.start_soon(child.pump, process.stdout)
        nursery.start_soon(child.pump, process.stderr)
        try:
            yield child
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    started = time.monotonic()
                    process.send_signal(signal.SIGINT)
                    with trio.move_on_after(15):
                        await process.wait()
                    child.stop_seconds = time.monotonic() - started
                if process.returncode is None:
                    child.killed = True
                    process.kill()
                    await process.wait()


def hlbook_argv(*args: str) -> list[str]:
    """``python -m hlbook ARGS``."""
    return [sys.executable, "-m", "hlbook", *args]


async def start_node_and_server(
    stack: Any,
    tmp: Path,
    sim_args: Sequence[str],
    serve_args: Sequence[str] = (),
    node_argv: Sequence[str] | None = None,
) -> tuple[Child, Child, str]:
    """Start a simulated node (``hlbook simulate`` unless ``node_argv``) and ``hlbook serve``.

    ``stack`` is a ``contextlib.AsyncExitStack`` that owns both processes.
    Returns them and the server's ``ws://`` URL once its books are loaded.
    """
    node = await start_node(stack, tmp, sim_args, node_argv)
    server, url = await start_server(stack, tmp, node.info_url, serve_args)
    return node, server, url


async def start_node(
    stack: Any, tmp: Path, sim_args: Sequence[str], node_argv: Sequence[str] | None = None
) -> Child:
    """Start a simulated node writing into ``tmp/data``; its ``info_url`` is set."""
    argv = node_argv or hlbook_argv(
        "simulate", "--node-data", str(tmp / "data"), "--info-port", "0", *sim_args
    )
    node: Child = await stack.enter_async_context(start_child("node", argv))
    node.info_url = (await node.wait_for(r"info server: (\S+)")).group(1)
    return node


async def start_server(
    stack: Any, tmp: Path, info_url: str, serve_args: Sequence[str] = (), name: str = "server"
) -> tuple[Child, str]:
    """Start ``hlbook serve`` on ``tmp/data`` (owned by ``stack``); return it and its
    ``ws://`` (or ``wss://``) URL once its books are loaded."""
    serve = [
        "serve",
        "--node-data", str(tmp / "data"),
        "--info-url", info_url,
        "--snapshot-path", str(tmp / ("snapshot.json" if name == "server" else f"{name}.json")),
        "--port", "0",
        *serve_args,
    ]  # fmt: skip
    server: Child = await stack.enter_async_context(start_child(name, hlbook_argv(*serve)))
    url = (await server.wait_for(r"serving (wss?://\S+)")).group(1)
    await server.wait_for(r"books loaded at height")
    return server, url


def http_base(ws_url: str) -> str:
    """``http://host:port`` (``https://``) of a server's ``ws://host:port/ws`` URL."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a ``127.0.0.1`` certificate (``trustme``): (cert, key, CA) PEMs."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths[0]))
    cert.private_key_pem.write_to_path(str(paths[1]))
    ca.cert_pem.write_to_path(str(paths[2]))
    return paths


def client_ssl_context(ca_file: str | Path | None) -> ssl.SSLContext | None:
    """A client context trusting ``ca_file`` (``None``: plain connections)."""
    if ca_file is None:
        return None
    return ssl.create_default_context(cafile=str(ca_file))


async def health(url: str, ca_file: str | Path | None = None) -> dict[str, Any]:
    """The server's ``{"method":"health"}`` answer (its ``data``), over a fresh connection
    (``ca_file``: the CA that signed a ``wss://`` server's certificate)."""
    async with open_websocket_url(url, ssl_context=client_ssl_context(ca_file)) as ws:
        await ws.send_message('{"method":"health"}')
        with trio.fail_after(10):
            while True:
                message = orjson.loads(await ws.get_message())
                if message.get("channel") == "health":
                    data: dict[str, Any] = message["data"]
                    return data


# -- a lean WebSocket client ------------------------------------------------------------------

_CONTROL_CLOSE, _CONTROL_PING = 0x8, 0x9


async def open_stream(
    host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> trio.abc.Stream:
    """A TCP connection, wrapped in TLS (handshake done) if ``ssl_context`` is given."""
    tcp = await trio.open_tcp_stream(host, port)
    if ssl_context is None:
        return tcp
    stream = trio.SSLStream(tcp, ssl_context, server_hostname=host)
    await stream.do_handshake()
    return stream


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask): FIN + opcode, length, mask, masked payload."""
    mask = secrets.token_bytes(4)
    length = len(payload)
    if length < 126:
        head = bytes([0x80 | opcode, 0x80 | length])
    elif length < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    # XOR the whole payload at once through big integers: fast enough for small requests.
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )
    return head + mask + masked


class LeanClient:
    """A WebSocket client that sends a few requests, then only counts the frames it receives.

    It parses frame headers and skips payloads, so one process can receive
    much faster than a server can send: the measured rate is the server's.
    """

    def __init__(
        self,
        url: str,
        read_pause: float = 0.0,
        on_message: Callable[[bytes, float], None] | None = None,
        deflate: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.ssl_context = ssl_context
        """For ``wss://`` URLs: the context that verifies the server."""
        self.read_pause = read_pause
        self.deflate = deflate
        """Offer permessage-deflate (frames are counted, not inflated: the server's cost
        is what is measured)."""
        self.compressed = 0
        """Messages that arrived compressed."""
        """Sleep this long after each read: fewer, bigger reads make the client cheaper."""
        self.on_message = on_message
        """Called with the first bytes of each message and the ``time.monotonic()`` at
        which the read that completed it returned."""
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "wss"
        self.port = parts.port or (443 if self.tls else 80)
        self.path = parts.path or "/"
        self.messages = 0
        self.bytes = 0
        self.closed: str | None = None
        self._stream: trio.abc.Stream | None = None
        self._buffer = bytearray()

    async def connect(self, requests: Sequence[str]) -> None:
        """Open the connection, complete the handshake and send ``requests``."""
        stream = await open_stream(self.host, self.port, self.ssl_context if self.tls else None)
        self._stream = stream
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        await stream.send_all(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                + ("Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.deflate else "")
                + "\r\n"
            ).encode()
        )
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        self._buffer = bytearray(rest)
        for text in requests:
            await self.send_text(text)

    async def send_text(self, text: str) -> None:
        """Send one text message."""
        assert self._stream is not None
        await self._stream.send_all(_masked_frame(0x1, text.encode()))

    async def run(self) -> None:
        """Count received messages until the server closes the connection."""
        stream = self._stream
        assert stream is not None
        buffer = self._buffer
        try:
            now = time.monotonic()
            while True:
                reply = self._parse(buffer, now)
                if reply is not None:
                    await stream.send_all(reply)
                    if self.closed is not None:
                        return
                data = await stream.receive_some(1 << 18)
                now = time.monotonic()
                if not data:
                    self.closed = "eof"
                    return
                buffer += data
                if self.read_pause:
                    await trio.sleep(self.read_pause)
        except trio.BrokenResourceError as exc:
            self.closed = f"broken: {exc}"
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    def _parse(self, buffer: bytearray, now: float) -> bytes | None:
        """Consume the complete frames at the start of ``buffer``; return a reply to send."""
        reply = b""
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            if second & 0x80:
                head += 4  # a masked server frame is a protocol error, but skip it right
            end = pos + head + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode < 0x8:  # data: text, binary or continuation
                self.bytes += length
                if first & 0x40:
                    self.compressed += 1
                if first & 0x80:
                    self.messages += 1
                    if self.on_message is not None:
                        start = pos + head
                        self.on_message(bytes(buffer[start : start + min(length, 256)]), now)
            elif opcode == _CONTROL_PING:
                reply += _masked_frame(0xA, bytes(buffer[pos + head : end]))
            elif opcode == _CONTROL_CLOSE:
                code = int.from_bytes(buffer[pos + head : pos + head + 2], "big") if length else 0
                self.closed = f"close {code} {bytes(buffer[pos + head + 2 : end]).decode()}"
                reply += _masked_frame(0x8, bytes(buffer[pos + head : pos + head + 2]))
                pos = end
                break
            pos = end
        del buffer[:pos]
        return reply or None


async def _run_clients(args: argparse.Namespace) -> None:
    """Connect ``--clients`` lean clients, count for ``--duration`` s, print JSON lines."""
    requests: list[list[str]] = json.loads(args.requests)
    context = client_ssl_context(args.ca)
    clients = [
        LeanClient(args.url, args.read_pause, deflate=args.deflate, ssl_context=context)
        for _ in range(args.clients)
    ]
    limiter = trio.CapacityLimiter(args.connect_concurrency)
    failed: list[str] = []

    def emit(tag: str, **values: Any) -> None:
        print(f"{tag} {json.dumps(values)}", flush=True)

    async with trio.open_nursery() as nursery:

        async def connect(index: int, client: LeanClient) -> None:
            async with limiter:
                try:
                    await client.connect(requests[index % len(requests)])
                except (OSError, ConnectionError, trio.BrokenResourceError) as exc:
                    failed.append(str(exc))
                    return
            nursery.start_soon(client.run)

        started = time.monotonic()
        async with trio.open_nursery() as connecting:
            for index, client in enumerate(clients):
                connecting.start_soon(connect, index, client)
        emit(
            "READY",
            connected=len(clients) - len(failed),
            failed=len(failed),
            first_error=failed[0] if failed else None,
            seconds=time.monotonic() - started,
        )

        async def keepalive() -> None:
            # Like ccxt: a ping every 20 s keeps the server's idle timeout away.
            while True:
                await trio.sleep(20)
                for client in clients:
                    if client.closed is None and client._stream is not None:
                        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                            await client.send_text('{"method":"ping"}')

        nursery.start_soon(keepalive)
        await trio.sleep(args.warmup)
        cpu0, t0 = time.process_time(), time.monotonic()
        counts0 = [(c.messages, c.bytes) for c in clients]
        compressed0 = sum(c.compressed for c in clients)
        emit("START", t=t0)
        await trio.sleep(args.duration)
        t1, cpu1 = time.monotonic(), time.process_time()
        per_client = [c.messages - m for c, (m, _) in zip(clients, counts0, strict=True)]
        received = sum(c.bytes - b for c, (_, b) in zip(clients, counts0, strict=True))
        emit(
            "RESULT",
            seconds=t1 - t0,
            messages=sum(per_client),
            bytes=received,
            per_client_min=min(per_client),
            per_client_max=max(per_client),
            compressed=sum(c.compressed for c in clients) - compressed0,
            closed=sum(c.closed is not None for c in clients),
            close_reasons=sorted({c.closed for c in clients if c.closed is not None})[:5],
            cpu=(cpu1 - cpu0) / (t1 - t0),
        )
        nursery.cancel_scope.cancel()


def clients_argv(
    url: str,
    clients: int,
    requests: Sequence[Sequence[str]],
    *,
    warmup: float,
    duration: float,
    read_pause: float = 0.01,
    deflate: bool = False,
    ca_file: Path | None = None,
) -> list[str]:
    """The command line of a lean-client process (``server_common.py clients``);
    ``ca_file`` verifies a ``wss://`` server."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "clients",
        "--url", url,
        "--clients", str(clients),
        "--requests", json.dumps([list(r) for r in requests]),
        "--warmup", str(warmup),
        "--duration", str(duration),
        "--read-pause", str(read_pause),
        *(["--deflate"] if deflate else []),
        *(["--ca", str(ca_file)] if ca_file is not None else []),
    ]  # fmt: skip


# -- a lean HTTP client and a load process ---------------------------------------------------


class LeanHttp:
    """One keep-alive HTTP/1.1 connection that sends requests and times their answers.

    It reads the status line, ``content-length`` and that many body bytes (hlbook
    answers with a length, never chunked): cheap enough that one client process
    can keep a one-core server busy.
    """

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.ssl_context = ssl_context if self.tls else None
        self._stream: trio.abc.Stream | None = None
        self._buffer = b""

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """``(status, body)`` of one request (connects, or reconnects after a close)."""
        if self._stream is None:
            self._stream = await open_stream(self.host, self.port, self.ssl_context)
            self._buffer = b""
        stream = self._stream
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
        if body:
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        await stream.send_all(head.encode() + b"\r\n" + body)
        buffer = self._buffer
        while b"\r\n\r\n" not in buffer:
            chunk = await stream.receive_some(1 << 18)
            if not chunk:
                raise ConnectionError("closed before the answer")
            buffer += chunk
        head_bytes, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head_bytes.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        while len(buffer) < length:
            chunk = await stream.receive_some(1 << 18)
            if not chunk:
                raise ConnectionError("closed mid-body")
            buffer += chunk
        answer, self._buffer = buffer[:length], buffer[length:]
        if close:
            await self.aclose()
        return status, answer

    async def aclose(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with trio.CancelScope(shield=True):
                await stream.aclose()


@attrs.define
class Timings:
    """Round-trip times (ms) of requests of one kind, and what they returned."""

    times: list[float] = attrs.field(factory=list)
    sizes: list[int] = attrs.field(factory=list)
    statuses: dict[str, int] = attrs.field(factory=dict)
    errors: list[str] = attrs.field(factory=list)

    def summary(self, seconds: float) -> dict[str, Any]:
        """JSON-ready figures over a window of ``seconds``."""
        return {
            "count": len(self.times),
            "rate": len(self.times) / seconds if seconds else math.nan,
            "p50_ms": percentile(self.times, 50),
            "p99_ms": percentile(self.times, 99),
            "max_ms": max(self.times, default=math.nan),
            "median_bytes": percentile(self.sizes, 50),
            "statuses": self.statuses,
            "errors": len(self.errors),
            "first_error": self.errors[0] if self.errors else None,
        }


async def _request_loop(
    client: LeanHttp,
    method: str,
    path: str,
    body: bytes,
    every: float,
    timings: Timings,
    recording: list[bool],
) -> None:
    """Send requests, one every ``every`` s (0: back to back); record those in the window.

    The clock is the schedule: a late answer delays the next request, never piles
    them up (a closed loop), so the reported rate says what the server kept up with.
    """
    next_at = time.monotonic()
    while True:
        if every:
            next_at += every
        started = time.perf_counter()
        try:
            status, answer = await client.request(method, path, body)
        except (OSError, ConnectionError, trio.BrokenResourceError, ValueError) as exc:
            if recording[0]:
                timings.errors.append(repr(exc))
            await client.aclose()
            await trio.sleep(0.05)
            continue
        if recording[0]:
            timings.times.append((time.perf_counter() - started) * 1000)
            timings.sizes.append(len(answer))
            timings.statuses[str(status)] = timings.statuses.get(str(status), 0) + 1
        if every:
            delay = next_at - time.monotonic()
            if delay > 0:
                await trio.sleep(delay)
            else:
                next_at = time.monotonic()  # behind: do not burst to catch up


PAGE_REQUESTS = [
    orjson.dumps({"method": "subscribe", "subscription": sub}).decode()
    for sub in (
        {"type": "l2Book", "coin": "BTC", "nSigFigs": None},
        {"type": "bbo", "coin": "BTC"},
        {"type": "trades", "coin": "BTC"},
    )
]
"""What the live page (``hlbook/web/app.js``) subscribes to for its default coin."""


async def _run_load(args: argparse.Namespace) -> None:
    """HTTP requests and/or a page stand-in against a server; print JSON lines."""
    context = client_ssl_context(args.ca)
    recording = [False]
    post, scrape = Timings(), Timings()
    page: LeanClient | None = None

    def emit(tag: str, **values: Any) -> None:
        print(f"{tag} {json.dumps(values)}", flush=True)

    async with trio.open_nursery() as nursery:
        if args.post:
            every = args.connections / args.rate if args.rate else 0.0
            for index in range(args.connections):
                client = LeanHttp(args.url, context)
                # Spread the connections' schedules over one interval.
                nursery.start_soon(
                    _delayed,
                    every * index / args.connections,
                    _request_loop(
                        client, "POST", "/info", args.post.encode(), every, post, recording
                    ),
                )
        if args.scrape_every:
            client = LeanHttp(args.url, context)
            nursery.start_soon(
                _request_loop, client, "GET", "/metrics", b"", args.scrape_every, scrape, recording
            )
        if args.page:
            ws_url = args.url.replace("http", "ws", 1) + "/ws"
            page = LeanClient(ws_url, 0.0, deflate=True, ssl_context=context)
            await page.connect(PAGE_REQUESTS)
            nursery.start_soon(page.run)

            async def ask_health() -> None:
                # The page asks for health once a second.
                while page is not None and page.closed is None:
                    await trio.sleep(1.0)
                    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await page.send_text('{"method":"health"}')

            nursery.start_soon(ask_health)
        emit("READY")
        await trio.sleep(args.warmup)
        recording[0] = True
        page0 = page.messages if page is not None else 0
        cpu0, t0 = time.process_time(), time.monotonic()
        emit("START", t=t0)
        await trio.sleep(args.duration)
        recording[0] = False
        t1, cpu1 = time.monotonic(), time.process_time()
        seconds = t1 - t0
        emit(
            "RESULT",
            seconds=seconds,
            post=post.summary(seconds),
            scrape=scrape.summary(seconds),
            page_messages=(page.messages - page0) if page is not None else 0,
            page_closed=page.closed if page is not None else None,
            cpu=(cpu1 - cpu0) / seconds,
        )
        nursery.cancel_scope.cancel()


async def _delayed(delay: float, job: Any) -> None:
    await trio.sleep(delay)
    await job


def load_argv(
    base_url: str,
    *,
    warmup: float,
    duration: float,
    post: str | None = None,
    rate: float = 0.0,
    connections: int = 1,
    scrape_every: float = 0.0,
    page: bool = False,
    ca_file: Path | None = None,
) -> list[str]:
    """The command line of a load process (``server_common.py load``): ``post`` (a JSON
    body) sent to ``POST /info`` over ``connections`` keep-alive connections at ``rate``
    requests/s in all (0: as fast as answered), ``GET /metrics`` every ``scrape_every``
    s, and with ``page`` a WebSocket client subscribed as the live page is."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "load",
        "--url", base_url,
        "--warmup", str(warmup),
        "--duration", str(duration),
        "--rate", str(rate),
        "--connections", str(connections),
        "--scrape-every", str(scrape_every),
        *(["--post", post] if post else []),
        *(["--page"] if page else []),
        *(["--ca", str(ca_file)] if ca_file is not None else []),
    ]  # fmt: skip


def parse_tagged(line: str) -> dict[str, Any]:
    """The JSON after the tag of a ``READY``/``START``/``RESULT`` line."""
    value: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return value


def main() -> None:
    """``server_common.py clients``: lean clients in a process of their own."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("clients", help="connect lean clients and count messages")
    run.add_argument("--url", required=True)
    run.add_argument("--clients", type=int, required=True)
    run.add_argument(
        "--requests", required=True, help="JSON list of request lists; client i sends [i %% len]"
    )
    run.add_argument("--warmup", type=float, default=1.0)
    run.add_argument("--duration", type=float, default=10.0)
    run.add_argument("--connect-concurrency", type=int, default=64)
    run.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    run.add_argument("--ca", help="CA file that verifies a wss:// server")
    run.add_argument(
        "--read-pause",
        type=float,
        default=0.01,
        help="seconds each client sleeps after a read (batches reads; 0: read at once)",
    )
    load = commands.add_parser("load", help="HTTP requests and a page stand-in, timed")
    load.add_argument("--url", required=True, help="the server's http:// (https://) base URL")
    load.add_argument("--post", help="JSON body for POST /info")
    load.add_argument("--rate", type=float, default=0.0, help="POST requests/s (0: flat out)")
    load.add_argument("--connections", type=int, default=1)
    load.add_argument("--scrape-every", type=float, default=0.0, help="GET /metrics period")
    load.add_argument("--page", action="store_true", help="a client subscribed as the page")
    load.add_argument("--warmup", type=float, default=1.0)
    load.add_argument("--duration", type=float, default=10.0)
    load.add_argument("--ca", help="CA file that verifies an https:// server")
    args = parser.parse_args()
    from hlbook.runner import run as run_until_signal

    if args.command == "load":
        sys.exit(run_until_signal(lambda: _run_load(args)))
    raise_nofile(args.clients + 256)
    # SIGINT/SIGTERM end it cleanly: callers may stop it before --duration is over.
    sys.exit(run_until_signal(lambda: _run_clients(args)))


if __name__ == "__main__":
    main()
