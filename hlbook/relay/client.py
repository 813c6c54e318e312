"""A nats-py connection kept up from Trio: options, connect loop, calls through the bridge.

:class:`NatsOptions` holds what the command line can set (servers, user and
password, token, a credentials file, TLS CA / client certificate) and turns it
into nats-py's ``connect`` arguments. :func:`open_nats` starts an
:class:`~hlbook.relay.bridge.AsyncioThread` and a Trio task that keeps a
connection up: nats-py, with ``max_reconnect_attempts=-1``, retries the first
connection and every reconnection forever by itself (each failure reaches
``error_cb``: counted, kept as ``last_error`` and logged once per error,
then every :data:`ERROR_LOG_EVERY` seconds while it repeats); the task
starts over if nats-py ever closes the connection or gives up, and bounds each
first attempt (``attempt_timeout``), since nats-py was seen to hang after an
untrusted server certificate.

Callers never wait for a connection unless they ask to
(:meth:`NatsConnection.wait_connected`); :meth:`NatsConnection.call` fails fast
with :class:`NatsUnavailableError` while there is none, so a publisher can count
and buffer instead of stalling.
"""

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import attrs
import nats
import nats.errors
import trio
from nats.aio.client import Client
from nats.js import JetStreamContext

from hlbook.errors import HlbookError, StartupError
from hlbook.relay.bridge import AsyncioThread, open_asyncio_thread

__all__ = ["NatsConnection", "NatsOptions", "NatsUnavailableError", "open_nats"]

log = logging.getLogger(__name__)

T = TypeVar("T")

ERROR_LOG_EVERY = 60.0
"""Seconds between log lines of a NATS error that keeps repeating."""


class NatsUnavailableError(HlbookError):
    """No NATS connection right now (not yet connected, or reconnecting)."""


@attrs.frozen
class NatsOptions:
    """How to reach NATS: every connect option the command line exposes.

    ``servers`` are ``nats://host:port`` or ``tls://host:port`` URLs (user and
    password may be in the URL too, as nats-py accepts). ``creds_file`` is a
    NATS ``.creds`` file (JWT + NKey seed; needs the ``nkeys`` package).
    ``tls_ca`` verifies the server; ``tls_cert``/``tls_key`` present a client
    certificate. Any ``tls_*`` option (or a ``tls://`` URL) turns TLS on.
    """

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_hostname: str | None = None
    name: str = "hlbook"
    connect_timeout: float = 2.0
    reconnect_wait: float = 0.5
    attempt_timeout: float = 30.0
    """A first connection not made within this long is started over (see
    :meth:`NatsConnection.run`)."""
    ping_interval: float = 5.0
    request_timeout: float = 5.0
    """Timeout of JetStream API requests and publish acknowledgements."""

    def __attrs_post_init__(self) -> None:
        if not self.servers:
            raise ValueError("at least one NATS server URL is required")
        for url in self.servers:
            if "://" not in url:
                raise ValueError(f"NATS URL {url!r} needs a scheme (nats:// or tls://)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.password is not None and self.user is None:
            raise ValueError("a NATS password needs a user")

    @property
    def uses_tls(self) -> bool:
        """True when the connection is TLS (a ``tls://`` URL or a ``tls_*`` option)."""
        return (
            any(url.startswith("tls://") for url in self.servers)
            or self.tls_ca is not None
            or self.tls_cert is not None
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context, or ``None`` without TLS."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(
            cafile=str(self.tls_ca) if self.tls_ca is not None else None
        )
        if self.tls_cert is not None and self.tls_key is not None:
            context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        return context

    def check_files(self) -> None:
        """Refuse files that cannot be used (missing, or a key that does not load) with
        one :class:`~hlbook.errors.StartupError` line, before anything starts: a
        connection would otherwise retry them forever."""
        for what, path in (
            ("credentials file (--nats-creds)", self.creds_file),
            ("TLS CA (--nats-tls-ca)", self.tls_ca),
            ("TLS certificate (--nats-tls-cert)", self.tls_cert),
            ("TLS key (--nats-tls-key)", self.tls_key),
        ):
            if path is not None and not Path(path).expanduser().is_file():
                raise StartupError(f"NATS: cannot read the {what} {path}: no such file")
        try:
            self.ssl_context()
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            raise StartupError(f"NATS: cannot load the TLS files: {why}") from None

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (without callbacks)."""
        kwargs: dict[str, Any] = {
            "servers": list(self.servers),
            "name": self.name,
            "connect_timeout": self.connect_timeout,
            "reconnect_time_wait": self.reconnect_wait,
            "max_reconnect_attempts": -1,
            "allow_reconnect": True,
            "ping_interval": self.ping_interval,
            "max_outstanding_pings": 2,
        }
        if self.user is not None:
            kwargs["user"] = self.user
            kwargs["password"] = self.password or ""
        if self.token is not None:
            kwargs["token"] = self.token
        if self.creds_file is not None:
            kwargs["user_credentials"] = str(self.creds_file)
        context = self.ssl_context()
        if context is not None:
            kwargs["tls"] = context
            if self.tls_hostname is not None:
                kwargs["tls_hostname"] = self.tls_hostname
        return kwargs

    def describe(self) -> str:
        """The servers, without credentials (for logs)."""
        return ", ".join(_strip_credentials(url) for url in self.servers)


def _strip_credentials(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


@attrs.define
class NatsStatistics:
    """Counters of a :class:`NatsConnection`."""

    connects: int = 0
    disconnects: int = 0
    reconnects: int = 0
    failed_connects: int = 0
    errors: int = 0
    last_error: str | None = None
    errors_by_type: dict[str, int] = attrs.field(factory=dict)
    """How many errors of each exception type (e.g. ``AuthorizationError``)."""


class NatsConnection:
    """A NATS connection driven from Trio. Made by :func:`open_nats`."""

    def __init__(self, options: NatsOptions, bridge: AsyncioThread) -> None:
        self.options = options
        self.bridge = bridge
        self.stats = NatsStatistics()
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._connected = trio.Event()
        self._errors_logged: dict[str, float] = {}  # error -> when it was last logged
        self.epoch = 0
        """Increases on every (re)connection: subscriptions made before are suspect."""

    @property
    def connected(self) -> bool:
        """True while a connection is up."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Wait until a connection is up."""
        await self._connected.wait()

    async def call(self, fn: Callable[[Client, JetStreamContext], Awaitable[T]]) -> T:
        """Run ``await fn(client, jetstream)`` on the asyncio loop and return its result.

        Raises :class:`NatsUnavailableError` at once when there is no connection;
        nats-py's own errors (timeouts, API errors) propagate.
        """
        client, js = self._client, self._js
        if client is None or js is None or not self.connected:
            raise NatsUnavailableError(f"not connected to NATS ({self.options.describe()})")

        async def _run() -> T:
            return await fn(client, js)

        return await self.bridge.run(_run)

    def spawn(self, fn: Callable[[Client, JetStreamContext], Awaitable[object]]) -> bool:
        """Start ``fn(client, jetstream)`` without waiting (best-effort work).

        Returns ``False``, doing nothing, while there is no connection.
        """
        client, js = self._client, self._js
        if client is None or js is None or not self.connected:
            return False

        async def _run() -> None:
            await fn(client, js)

        return self.bridge.spawn(_run)

    # -- the connection task -------------------------------------------------------

    def _set_connected(self, up: bool) -> None:
        if up:
            self.epoch += 1
            if not self._connected.is_set():
                self._connected.set()
        elif self._connected.is_set():
            self._connected = trio.Event()

    def _note_error(self, kind: str, text: str) -> None:
        self.stats.errors += 1
        error = f"{kind}: {text}"
        self.stats.errors_by_type[kind] = self.stats.errors_by_type.get(kind, 0) + 1
        if not self.connected:
            self.stats.failed_connects += 1
        # nats-py retries by itself and tells only error_cb: say it, once per error and
        # then at most every ERROR_LOG_EVERY seconds while it repeats (errors alternate:
        # a refused login is often followed by the server resetting the connection).
        now = trio.current_time()
        logged = self._errors_logged.get(error)
        if logged is None or now - logged >= ERROR_LOG_EVERY:
            if len(self._errors_logged) >= 32:
                self._errors_logged.clear()
            self._errors_logged[error] = now
            log.warning(
                "NATS: %s%s (%d errors so far; retrying every %.1f s)",
                "" if self.connected else f"cannot connect to {self.options.describe()}: ",
                error,
                self.stats.errors,
                self.options.reconnect_wait,
            )
        self.stats.last_error = error

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a connection up until cancelled (started at once, connected later)."""
        task_status.started()
        while True:
            closed = trio.Event()
            client = None
            # nats-py retries a first connection forever by itself, except after some
            # failures (a TLS certificate it cannot verify), where it was seen to hang
            # without trying again: each attempt is bounded, then started over.
            with trio.move_on_after(self.options.attempt_timeout):
                try:
                    client = await self.bridge.run(
                        self._connect, trio.lowlevel.current_trio_token(), closed
                    )
                except Exception as exc:
                    # Whatever fails here (a refused login, a TLS error, a bug in nats-py)
                    # is counted, logged and retried: NATS must never stop the feed.
                    self._note_error(type(exc).__name__, str(exc))
            if client is None:
                await trio.sleep(self.options.reconnect_wait)
                continue
            self._client = client
            self._js = client.jetstream(timeout=self.options.request_timeout)
            self.stats.connects += 1
            self._set_connected(True)
            log.info("NATS: connected to %s", self.options.describe())
            try:
                await closed.wait()
                log.warning("NATS: the connection closed; connecting again")
            finally:
                self._set_connected(False)
                self._client = self._js = None
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self.bridge.run(client.close)

    async def _connect(self, token: trio.lowlevel.TrioToken, closed: trio.Event) -> Client:
        """``nats.connect`` with callbacks that report to the Trio side (asyncio side)."""

        def to_trio(fn: Callable[[], None]) -> None:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(fn)

        def down() -> None:
            self.stats.disconnects += 1
            self._set_connected(False)
            log.warning("NATS: disconnected from %s", self.options.describe())

        def up() -> None:
            self.stats.reconnects += 1
            self._set_connected(True)
            log.info("NATS: reconnected")

        async def disconnected_cb() -> None:
            to_trio(down)

        async def reconnected_cb() -> None:
            to_trio(up)

        async def closed_cb() -> None:
            to_trio(closed.set)

        async def error_cb(exc: Exception) -> None:
            kind, text = type(exc).__name__, str(exc)
            to_trio(lambda: self._note_error(kind, text))

        return await nats.connect(
            **self.options.connect_kwargs(),
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
            closed_cb=closed_cb,
            error_cb=error_cb,
        )


@asynccontextmanager
async def open_nats(
    options: NatsOptions, *, bridge: AsyncioThread | None = None
) -> AsyncIterator[NatsConnection]:
    """A :class:`NatsConnection` kept up in the background for the duration of the block.

    Returns at once, connected or not. Without ``bridge`` a new asyncio thread is
    started (and stopped on exit).
    """
    async with _bridge(bridge) as thread, trio.open_nursery() as nursery:
        connection = NatsConnection(options, thread)
        await nursery.start(connection.run)
        try:
            yield connection
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _bridge(bridge: AsyncioThread | None) -> AsyncIterator[AsyncioThread]:
    if bridge is not None:
        yield bridge
        return
    async with open_asyncio_thread("hlbook-nats") as thread:
        yield thread
