"""Who may use the server: tokens, browser origins, open health checks (sans I/O).

* ``--token`` (one or more): every request — HTTP or the WebSocket upgrade —
  must carry one, as ``Authorization: Bearer T``, ``?token=T`` (browsers
  cannot set headers on a WebSocket) or the password of Basic auth; otherwise
  401, before any handler or upgrade runs, saying whether no token came or the
  one that came is not accepted (and where it was found, never what it was).
  Tokens are compared in constant time and never logged.
* ``--allow-origin`` (one or more): a browser request whose ``Origin`` is not
  listed — nor the server's own origin (the page it serves) — gets 403. Without
  the flag any origin may connect (the token, if set, still applies).
* ``--public-health``: ``/health`` and ``/metrics`` answer without a token
  (load balancers, Prometheus).

The live page itself (``GET /`` without an upgrade) is always open: it holds no
data, and a browser cannot send a token when it navigates — the page reads it
from the URL fragment and sends it on its own requests.
"""

import base64
import binascii
import hmac
import urllib.parse
from collections.abc import Iterable, Sequence

import attrs

__all__ = ["AccessPolicy", "Denial", "request_token"]

OPEN_PATHS = ("/health", "/metrics")


@attrs.frozen
class Denial:
    """A request refused: its HTTP status, code and reason (and for a 401, the
    ``WWW-Authenticate`` challenge)."""

    status: int
    code: str
    msg: str
    authenticate: str = "Bearer"


@attrs.frozen
class _Presented:
    """What a request offers as its token: the token and where it came from, or ``None``
    and why there is none (said in the 401, which never repeats a token)."""

    token: str | None
    where: str


_NONE_FOUND = "no token found (the Authorization header: %s)"
_EMPTY = {"bearer": "Bearer with no token", "basic": "Basic with no credentials"}


def _presented(query: str, headers: Iterable[tuple[bytes, bytes]]) -> _Presented:
    unusable = ""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            scheme, token = scheme.lower(), token.strip()
            if scheme == "bearer" and token:
                return _Presented(token, "Authorization: Bearer")
            if scheme == "basic" and token:
                try:
                    user, _, password = (
                        base64.b64decode(token, validate=True).decode().partition(":")
                    )
                except (binascii.Error, UnicodeDecodeError):
                    unusable = "Basic is not base64 of user:password"
                    continue
                if password or user:
                    return _Presented(password or user, "Basic auth")
                # No token in it, like the cases below: a ?token= may still carry one.
                unusable = "Basic has an empty user and password"
                continue
            # Not the scheme's name: a token sent without one would be it.
            unusable = _EMPTY.get(scheme, "not Bearer or Basic")
    for key, found in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key == "token" and found:
            return _Presented(found, "?token=")
    return _Presented(None, _NONE_FOUND % unusable if unusable else "no token was sent")


def request_token(query: str, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token a request carries (header first, then ``?token=``), if any.

    ``Authorization: Basic`` with the token as the password is accepted too, so
    that clients which cannot set headers work with ``http://user:TOKEN@host``
    URLs (the official Python SDK's ``Info``, through ``requests``).
    """
    return _presented(query, headers).token


def _as_bytes(tokens: Iterable[str | bytes]) -> tuple[bytes, ...]:
    return tuple(token.encode() if isinstance(token, str) else token for token in tokens)


def _as_set(origins: Iterable[str]) -> frozenset[str]:
    return frozenset(origin.rstrip("/") for origin in origins)


@attrs.frozen
class AccessPolicy:
    """The server's access rules. The default allows everything."""

    tokens: tuple[bytes, ...] = attrs.field(default=(), converter=_as_bytes)
    allow_origins: frozenset[str] = attrs.field(default=frozenset(), converter=_as_set)
    public_health: bool = False

    def _token_ok(self, token: str | None) -> bool:
        if token is None:
            return False
        given = token.encode()
        # Compare with every token, so the time taken does not tell which one matched.
        matched = False
        for expected in self.tokens:
            matched |= hmac.compare_digest(given, expected)
        return matched

    def decide(
        self,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        *,
        scheme: str,
        page: bool = False,
    ) -> Denial | None:
        """``None`` if the request may go on, else why not (``page``: it asks for the live
        page, ``GET /`` without an upgrade)."""
        text = target.decode("ascii", "replace")
        path, _, query = text.partition("?")
        origin = _header(headers, b"origin")
        if origin is not None and self.allow_origins and origin not in self.allow_origins:
            host = _header(headers, b"host")
            if host is None or origin != f"{scheme}://{host}":
                return Denial(403, "originNotAllowed", "this Origin may not use the server")
        if not self.tokens or page or (self.public_health and path in OPEN_PATHS):
            return None
        presented = _presented(query, headers)
        if presented.token is None:
            # RFC 6750 §3.1: no error code in the challenge when no credentials came.
            return Denial(
                401,
                "unauthorized",
                f"{presented.where}; this server requires one: send Authorization: Bearer"
                " <token>, ?token=<token> or the token as Basic auth's password",
            )
        if not self._token_ok(presented.token):
            return Denial(
                401,
                "unauthorized",
                f"the token sent ({presented.where}) is not accepted by this server",
                authenticate='Bearer error="invalid_token"',
            )
        return None


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None
