"""What an info handler is: one info ``type`` (or a family), shared by ``POST /info`` and
WebSocket ``post``.

A handler gets the request object and answers with the JSON bytes of the
official answer's data, or raises :class:`InfoError` with the HTTP status and
a reason (for WebSocket ``post`` the reason becomes the error payload).
"""

import abc
from typing import Any, ClassVar

import attrs

__all__ = ["InfoError", "InfoHandler"]


@attrs.define(eq=False)
class InfoError(Exception):
    """An info request hlbook answers with an error: HTTP ``status``, a short ``code``, a reason.

    The JSON body is ``{"code": code, "msg": msg}`` (the official Python SDK reads
    both fields of a 4xx answer).
    """

    status: int
    code: str
    msg: str

    def __str__(self) -> str:
        return self.msg


class InfoHandler(abc.ABC):
    """Answers the info types in :attr:`types`."""

    types: ClassVar[tuple[str, ...]]

    @abc.abstractmethod
    async def answer(self, request: dict[str, Any], body: bytes) -> bytes:
        """The answer's JSON for ``request`` (``body`` is the request as received)."""
