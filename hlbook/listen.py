"""What the server needs before it listens — sockets, TLS, tokens — with errors a user can act on.

Each problem is one :class:`~hlbook.errors.StartupError` naming what and why
(the CLI prints it as one line and exits 1). A certificate whose dates clients refuse
is a warning instead: it is served all the same (the operator may be replacing it).
"""

import logging
import socket
import ssl
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import trio

from hlbook.errors import StartupError
from hlbook.server.tls import CertificateWatch, certificate_validities

__all__ = [
    "HeldListener",
    "certificate_watch",
    "check_certificate_now",
    "load_tokens",
    "open_listeners",
    "tls_context",
    "watch_certificate",
]

log = logging.getLogger("hlbook.server")

_RECHECK_SECONDS = 3600.0


async def open_listeners(host: str, port: int, what: str) -> list[trio.SocketListener]:
    """``trio.open_tcp_listeners``, raising :class:`StartupError` naming ``what`` and the
    address when the port cannot be bound (in use, not allowed, unknown host)."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise StartupError(f"{what} cannot listen on {host}:{port}: {why}") from exc


class HeldListener(trio.abc.Listener[trio.SocketStream]):
    """A bound TCP socket that listens only once :meth:`open` is called.

    Until then the kernel queues no connection for it: among sockets sharing a
    port with ``SO_REUSEPORT`` it spreads new connections over the listening ones
    only, so a worker of ``--workers N`` can hold its place on the port while its
    books load and another worker serves. :meth:`accept` waits for :meth:`open`.
    """

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.socket = sock
        self._listener: trio.SocketListener | None = None
        self._opened = trio.Event()
        self._closed = False

    @property
    def is_open(self) -> bool:
        """Whether it listens."""
        return self._listener is not None

    def open(self) -> None:
        """Listen (at once; again is a no-op): from now on the kernel gives this socket
        its share of the port's new connections."""
        if self._listener is None and not self._closed:
            self.socket.listen(socket.SOMAXCONN)
            self._listener = trio.SocketListener(self.socket)
            self._opened.set()

    async def accept(self) -> trio.SocketStream:
        """The next connection, once open."""
        await self._opened.wait()
        if self._listener is None:
            raise trio.ClosedResourceError("the listener was closed before it opened")
        return await self._listener.accept()

    async def aclose(self) -> None:
        """Close the socket (an open one's queued connections are reset)."""
        self._closed = True
        self._opened.set()
        if self._listener is not None:
            await self._listener.aclose()
        else:
            self.socket.close()
            await trio.lowlevel.checkpoint()


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server TLS context from PEM files (``None`` without TLS)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise StartupError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    for path in (cert, key):
        if not path.expanduser().is_file():
            raise StartupError(f"TLS: cannot read {path}: no such file")
    try:
        context.load_cert_chain(cert.expanduser(), key.expanduser())
    except (OSError, ssl.SSLError) as exc:
        why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise StartupError(f"TLS: cannot load certificate {cert} with key {key}: {why}") from None
    return context


def certificate_watch(cert: Path | None) -> CertificateWatch | None:
    """What to check about the dates of the certificate (chain) in ``cert`` while it is
    served; ``None`` without TLS, or if its dates cannot be read (logged: OpenSSL took
    the file, so it is served all the same). Call after :func:`tls_context`."""
    if cert is None:
        return None
    try:
        validities = certificate_validities(cert.expanduser().read_text("ascii", "replace"))
    except (OSError, ValueError) as exc:
        log.warning("TLS certificate %s: cannot read its dates (%s); not checked", cert, exc)
        return None
    return CertificateWatch(str(cert), validities)


def check_certificate_now(watch: CertificateWatch) -> None:
    """Log what :meth:`CertificateWatch.check` finds at the current time."""
    for line in watch.check(datetime.now(UTC)):
        log.warning("%s", line)


async def watch_certificate(watch: CertificateWatch, every: float = _RECHECK_SECONDS) -> None:
    """Check the served certificate's dates every ``every`` seconds until cancelled:
    hlbook reads it once, so one that expires while it runs is still the one served."""
    while True:
        await trio.sleep(every)
        check_certificate_now(watch)


def load_tokens(values: Iterable[str]) -> tuple[str, ...]:
    """Tokens given as values or ``@FILE``: each non-blank line of the file is a token
    (surrounding whitespace stripped; lines starting with ``#`` are comments), so a
    token is rotated by adding the new line before removing the old one."""
    tokens: list[str] = []
    for given in values:
        if not given.startswith("@"):
            if not given.strip():
                raise StartupError("a --token is empty")
            tokens.append(given)
            continue
        path = Path(given[1:]).expanduser()
        try:
            # utf-8-sig: a byte-order mark (Windows editors write one) would otherwise
            # make the first line, a comment too, a token of its own.
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise StartupError(f"token file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise StartupError(f"token file {path}: not text (UTF-8)") from None
        found = [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        if not found:
            raise StartupError(f"token file {path} has no token (blank lines and # comments only)")
        tokens.extend(found)
    return tuple(tokens)
