"""Info types hlbook passes on: to the node's info server, or to the operator's fallback.

The node answers the types about its own state (``meta``, ``spotMeta``,
``perpDexs``, ``clearinghouseState``, ``exchangeStatus``, …); they are passed
to ``--info-url`` unchanged, with connection reuse and a bounded timeout, and
its answer (status and body) comes back unchanged. The node being down is a
502, slow a 504, each with a reason. ``fileSnapshot`` is never passed on: it
makes the node write files. Types the node does not answer (prices and
funding the node's info server does not serve) go to ``--fallback-info-url``
when the operator set one (e.g. the public API), and are refused naming the
type otherwise: hlbook never invents data it does not have.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from hlbook.info.base import InfoError, InfoHandler

__all__ = ["FALLBACK_TYPES", "InfoUpstream", "NodeInfo", "Refused"]

FALLBACK_TYPES = (
    "metaAndAssetCtxs",
    "spotMetaAndAssetCtxs",
    "fundingHistory",
    "predictedFundings",
    "perpsAtOpenInterestCap",
    "recentTrades",
    "historicalOrders",
    "userFunding",
    "userNonFundingLedgerUpdates",
    "portfolio",
    "userTwapSliceFills",
    "twapHistory",
)
"""Types a node's info server does not answer (hlbook asks the fallback for them)."""

_MAX_ANSWER = 32 * 1024 * 1024

log = logging.getLogger(__name__)


class InfoUpstream:
    """One upstream info server (``POST <url>``), reused across requests."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        what: str,
        *,
        timeout: float,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.client = client
        self.url = url
        self.what = what
        self.timeout = timeout
        self.observe = observe
        """Called with (outcome, seconds) after each request (metrics)."""
        self._failure: str | None = None

    def _failing(self, why: str) -> None:
        """Log (with the URL, which clients are not shown) when the failure changes."""
        if why != self._failure:
            self._failure = why
            log.warning("%s at %s %s", self.what, self.url, why)

    async def post(self, body: bytes) -> tuple[int, bytes, str]:
        """``(status, body, content type)`` of the upstream's answer; :class:`InfoError` if
        it has none."""
        started = time.perf_counter()
        outcome = "error"
        try:
            response = await self.client.post(
                self.url,
                content=body,
                headers={"content-type": "application/json"},
                timeout=self.timeout,
            )
            content = response.content
            outcome = str(response.status_code)
        except httpx.TimeoutException:
            outcome = "timeout"
            self._failing(f"did not answer within {self.timeout:g} s")
            raise InfoError(
                504,
                "upstreamTimeout",
                f"{self.what} did not answer within {self.timeout:g} s",
            ) from None
        except httpx.HTTPError as exc:
            self._failing(f"is unreachable: {_why(exc)}")
            # Not why: httpx's reasons name the address, which clients are not shown.
            raise InfoError(502, "upstreamUnavailable", f"{self.what} is unreachable") from None
        finally:
            if self.observe is not None:
                self.observe(outcome, time.perf_counter() - started)
        if self._failure is not None:
            log.info("%s at %s answers again", self.what, self.url)
            self._failure = None
        if len(content) > _MAX_ANSWER:
            raise InfoError(502, "upstreamTooLarge", f"{self.what} answered more than 32 MB")
        kind = response.headers.get("content-type", "application/json")
        return response.status_code, content, kind


def _why(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


class NodeInfo(InfoHandler):
    """Everything hlbook does not answer itself: the node (or the fallback) answers."""

    types = ()

    def __init__(self, node: InfoUpstream | None, fallback: InfoUpstream | None) -> None:
        self.node = node
        self.fallback = fallback

    async def answer(self, request: dict[str, Any], body: bytes) -> bytes:
        raise AssertionError("use forward()")  # pragma: no cover - forward() keeps the status

    async def forward(self, kind: str, body: bytes) -> tuple[int, bytes, str]:
        """The upstream's status, body and content type for a request of type ``kind``."""
        if kind in FALLBACK_TYPES:
            if self.fallback is None:
                raise InfoError(
                    422,
                    "notAvailable",
                    f"info type {kind!r} needs data neither hlbook nor a node's info server "
                    "has; the operator can set --fallback-info-url (e.g. the public API) "
                    "to pass it on",
                )
            return await self.fallback.post(body)
        if self.node is None:
            raise InfoError(
                422, "notAvailable", f"info type {kind!r}: hlbook has no node info server"
            )
        return await self.node.post(body)


class Refused(InfoHandler):
    """Types hlbook never answers nor passes on."""

    types = ("fileSnapshot",)

    async def answer(self, request: dict[str, Any], body: bytes) -> bytes:
        raise InfoError(
            403,
            "refused",
            f"info type {request.get('type')!r} is not served: it would make the node write files",
        )
