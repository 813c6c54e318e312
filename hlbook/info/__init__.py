"""The info registry: ``POST /info`` and WebSocket ``post`` share one handler per type.

Types hlbook answers itself (from its books, and its history store) are
answered locally, at the books' height; ``fileSnapshot`` is refused; every
other type is passed to the node's info server, or to the fallback for the
types a node does not answer (:mod:`hlbook.info.proxy`).
"""

from collections.abc import Iterable
from typing import Any

import attrs
import orjson

from hlbook.info.base import InfoError, InfoHandler
from hlbook.info.proxy import NodeInfo

__all__ = ["InfoAnswer", "InfoError", "InfoHandler", "InfoRegistry"]


@attrs.frozen
class InfoAnswer:
    """An answer: HTTP status, JSON body, and whether hlbook answered it itself."""

    status: int
    body: bytes
    local: bool
    content_type: str = "application/json"


class InfoRegistry:
    """Routes info requests by ``type``."""

    def __init__(self, handlers: Iterable[InfoHandler], upstream: NodeInfo) -> None:
        self.handlers: dict[str, InfoHandler] = {}
        for handler in handlers:
            for kind in handler.types:
                self.handlers[kind] = handler
        self.upstream = upstream

    @staticmethod
    def parse(body: bytes) -> dict[str, Any]:
        """The request object of a body (:class:`InfoError` 400/422 when it is not one)."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InfoError(400, "badJson", f"the body is not valid JSON: {exc}") from None
        if not isinstance(request, dict):
            raise InfoError(422, "invalidRequest", "an info request is a JSON object")
        if not isinstance(request.get("type"), str):
            raise InfoError(422, "invalidRequest", 'an info request needs a "type" string')
        return request

    def kind(self, request: dict[str, Any]) -> str:
        """The request's type, as counted in metrics (unknown types are one label)."""
        kind: str = request["type"]
        return kind if len(kind) <= 40 else "…"

    async def answer(self, request: dict[str, Any], body: bytes | None = None) -> InfoAnswer:
        """Answer one parsed request (``body``: its bytes, when the caller has them)."""
        kind = request["type"]
        handler = self.handlers.get(kind)
        raw = body if body is not None else orjson.dumps(request)
        if handler is not None:
            return InfoAnswer(200, await handler.answer(request, raw), True)
        status, answer, content_type = await self.upstream.forward(kind, raw)
        return InfoAnswer(status, answer, False, content_type)


def error_body(error: InfoError) -> bytes:
    """``{"code":…,"msg":…}``."""
    return orjson.dumps({"code": error.code, "msg": error.msg})
