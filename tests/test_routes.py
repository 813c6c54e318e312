"""``POST /info`` when a handler fails in a way it should not: a 500, never a dropped connection."""

from typing import Any

import h11
import orjson
import pytest

from hlbook.info import InfoHandler, InfoRegistry
from hlbook.info.proxy import NodeInfo
from hlbook.server.routes import Routes


class _Broken(InfoHandler):
    """Stands for a handler with a bug (an OverflowError deep in a query, say)."""

    types = ("broken",)

    async def answer(self, request: dict[str, Any], body: bytes) -> bytes:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")


async def test_a_bug_in_a_handler_is_a_500_with_a_json_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, int]] = []
    bugs: list[None] = []
    routes = Routes(
        InfoRegistry([_Broken()], NodeInfo(None, None)),
        health=dict,
        observe=lambda kind, status: seen.append((kind, status)),
        on_bug=lambda: bugs.append(None),
    )
    request = h11.Request(method="POST", target="/info", headers=[("host", "x")])
    response = await routes.handle(request, b'{"type":"broken"}')
    assert response.status == 500
    assert orjson.loads(response.body) == {
        "code": "internalError",
        "msg": "broken: internal error (logged)",
    }
    assert seen == [("broken", 500)]
    assert len(bugs) == 1  # hlbook_client_errors_total
    assert any("OverflowError" in (r.exc_text or "") for r in caplog.records)
