"""hlbook's HTTP routes, shared by every connection.

=====================  ==========================================================
``POST /info``         the info API (:mod:`hlbook.info`): JSON in, JSON out
``GET /health``        the health object; 200 when live, 503 otherwise
``GET /``              the live book page (:mod:`hlbook.web`; a short text without one)
``OPTIONS *``          CORS preflight: browsers on other origins may call ``/info``
=====================  ==========================================================

Errors are JSON ``{"code": …, "msg": …}`` with the status that says whose
fault it is: 400 bad JSON, 404 unknown route, 405 wrong method, 413 too
large, 422 unknown or invalid info type, 502/504 node info server down or
slow, 503 not ready or over capacity.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import h11
import orjson

from hlbook.info import InfoError, InfoRegistry

__all__ = ["Response", "Routes", "json_response"]

log = logging.getLogger(__name__)


@attrs.frozen
class Response:
    """An HTTP response to send."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


def json_response(status: int, value: Any, *, close: bool = False) -> Response:
    """A JSON response."""
    return Response(status, orjson.dumps(value), close=close)


def _error(status: int, code: str, msg: str, **extra: Any) -> Response:
    return Response(status, orjson.dumps({"code": code, "msg": msg}), **extra)


_ROUTES = {"/info": (b"POST",), "/health": (b"GET", b"HEAD"), "/": (b"GET", b"HEAD")}

_TEXT = b"hlbook: WebSocket at /ws, POST /info, GET /health\n"


class Routes:
    """Routes one HTTP request to its answer."""

    def __init__(
        self,
        info: InfoRegistry,
        health: Callable[[], dict[str, Any]],
        page: Callable[[h11.Request], Response] | None = None,
        observe: Callable[[str, int], None] | None = None,
        on_bug: Callable[[], None] | None = None,
    ) -> None:
        self.info = info
        self.health = health
        self.page = page
        """Answers ``GET /`` (given the request: it may answer 304 to ``If-None-Match``)."""
        self.observe = observe
        """Called with (info type, status) after each ``/info`` request (metrics)."""
        self.on_bug = on_bug
        """Called once per request that failed on a bug (its traceback is logged)."""
        self.extra: dict[str, Callable[[h11.Request], Awaitable[Response]]] = {}
        """More GET routes (``/metrics``), added by the server."""

    async def handle(self, request: h11.Request, body: bytes) -> Response:
        """The response to ``request`` (whose body is ``body``)."""
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        method = request.method
        if method == b"OPTIONS":
            return Response(
                204,
                headers=(
                    ("access-control-allow-methods", "GET, POST, OPTIONS"),
                    ("access-control-allow-headers", "content-type, authorization"),
                    ("access-control-max-age", "86400"),
                ),
            )
        extra = self.extra.get(path)
        if extra is not None and method in (b"GET", b"HEAD"):
            return await extra(request)
        allowed = _ROUTES.get(path)
        if allowed is None:
            if path == "/ws":
                return _error(426, "upgradeRequired", "/ws is a WebSocket: send Upgrade")
            return _error(404, "notFound", f"no route {path[:100]}; try POST /info")
        if method not in allowed:
            return _error(
                405,
                "methodNotAllowed",
                f"{path} answers {', '.join(m.decode() for m in allowed)}",
                headers=(("allow", ", ".join(m.decode() for m in allowed)),),
            )
        if path == "/info":
            return await self._info(body)
        if path == "/health":
            health = self.health()
            return json_response(200 if health.get("live") else 503, health)
        if self.page is not None:
            return self.page(request)
        return Response(200, _TEXT, content_type="text/plain; charset=utf-8")

    async def _info(self, body: bytes) -> Response:
        kind = "?"
        try:
            request = InfoRegistry.parse(body)
            kind = self.info.kind(request)
            answer = await self.info.answer(request, body)
        except InfoError as exc:
            if self.observe is not None:
                self.observe(kind, exc.status)
            return _error(exc.status, exc.code, exc.msg)
        except Exception:  # a bug: this request gets a 500, the connection and others go on
            log.exception("POST /info %s failed", kind)
            if self.on_bug is not None:
                self.on_bug()
            if self.observe is not None:
                self.observe(kind, 500)
            return _error(500, "internalError", f"{kind}: internal error (logged)")
        if self.observe is not None:
            self.observe(kind, answer.status)
        return Response(answer.status, answer.body, content_type=answer.content_type)
