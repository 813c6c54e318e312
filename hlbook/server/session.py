"""One WebSocket connection's protocol, sans I/O: client messages in, replies and actions out.

Like h11's and wsproto's connections, a :class:`Session` does no I/O and has
no clock: the caller feeds it complete client messages and the time, and
carries out what it returns. Replies go straight into the client's
:class:`~hlbook.server.fanout.ClientQueue`; what needs I/O (an info request
the node must answer) comes back as a :class:`RunInfo` action, whose result
the caller hands back with :meth:`Session.answered`.

Client messages (extra top-level keys such as ``"id"`` are ignored)::

    {"method": "subscribe" | "unsubscribe", "subscription": {...}}
    {"method": "ping"}                       -> {"channel": "pong"}
    {"method": "post", "id": N, "request": {"type": "info", "payload": {...}}}
    {"method": "health"}                     (hlbook extension)

Subscriptions that arrive before the books are loaded are answered, in
order, once they are (:meth:`Session.books_ready`); meanwhile pings are
answered and the client, waiting for us, is not timed out. Error texts are
the official API's; JSON echoed in them is always valid JSON, shortened when
the client sent something large.
"""

import math
from collections.abc import Callable, Hashable
from typing import Any, TypeAlias

import attrs
import orjson

from hlbook.book.books import Books
from hlbook.channels import Channel, InvalidSubscription, Registry
from hlbook.server.fanout import ClientQueue, Hub, error_message
from hlbook.server.frames import Message

__all__ = [
    "PARSE_ERROR",
    "Action",
    "PrepareFirst",
    "RunInfo",
    "Session",
    "SessionLimits",
    "bounded_echo",
    "pong_message",
    "post_error",
    "post_response",
]

PARSE_ERROR = "Error parsing JSON into valid websocket request: "
_MAX_ECHO = 512
_PONG = Message(b'{"channel":"pong"}')


def pong_message() -> Message:
    """Exactly ``{"channel":"pong"}``."""
    return _PONG


def _shorten(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= 64 else value[:64] + "…"
    if depth >= 4:
        return "…"
    if isinstance(value, list):
        items = [_shorten(item, depth + 1) for item in value[:8]]
        return items + ([f"…{len(value) - 8} more"] if len(value) > 8 else [])
    if isinstance(value, dict):
        out = {}
        for index, (key, item) in enumerate(value.items()):
            if index == 16:
                out["…"] = f"{len(value) - 16} more keys"
                break
            out[_shorten(str(key), depth + 1)] = _shorten(item, depth + 1)
        return out
    return value


def bounded_echo(value: Any) -> str:
    """``value`` as JSON for an error text: whole if small, else shortened — always valid JSON."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # nested deeper than orjson writes (~254 levels): shortened below
        text = None
    if text is not None and len(text) <= _MAX_ECHO:
        return text
    text = orjson.dumps(_shorten(value)).decode()
    if len(text) <= _MAX_ECHO:
        return text
    return orjson.dumps({"…": f"{len(text)} bytes"}).decode()


def _text_echo(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "…"


def post_response(request_id: int, payload_json: bytes) -> Message:
    """``{"channel":"post","data":{"id":N,"response":{"type":"info","payload":…}}}``."""
    return Message(
        b'{"channel":"post","data":{"id":%d,"response":{"type":"info","payload":%s}}}'
        % (request_id, payload_json)
    )


def post_error(request_id: int, text: str) -> Message:
    """A post request's error answer (``"type":"error"``)."""
    data = {"id": request_id, "response": {"type": "error", "payload": text}}
    return Message(orjson.dumps({"channel": "post", "data": data}))


@attrs.frozen
class SessionLimits:
    """Per-connection limits (from :class:`~hlbook.config.Config`)."""

    idle_timeout: float = 60.0
    max_subscriptions: int = 1000
    max_pending_posts: int = 16


@attrs.frozen
class RunInfo:
    """Answer the info request ``payload`` (post ``id``), then call :meth:`Session.answered`."""

    id: int
    payload: dict[str, Any]


@attrs.frozen(eq=False)
class PrepareFirst:
    """Run ``job`` in a worker thread, then hand its message to :meth:`Session.first_ready`:
    the first message of subscription ``key`` (held back until then)."""

    key: Hashable
    channel: str
    job: Callable[[], Message | None]


Action: TypeAlias = RunInfo | PrepareFirst
"""What the caller carries out for a session."""


@attrs.define
class _Request:
    method: str
    raw: dict[str, Any]
    channel: Channel
    key: Hashable
    echo: dict[str, Any]


@attrs.define
class SessionStats:
    """Counters of one session."""

    requests: int = 0
    protocol_errors: int = 0
    posts: int = 0


class Session:
    """The protocol state of one WebSocket client. See the module docstring."""

    def __init__(
        self,
        client: ClientQueue,
        hub: Hub,
        *,
        books: Callable[[], Books | None],
        health: Callable[[], dict[str, Any]],
        limits: SessionLimits,
        now: float,
    ) -> None:
        self.client = client
        self.hub = hub
        self.registry: Registry = hub.registry
        self.limits = limits
        self.stats = SessionStats()
        self._books = books
        self._health = health
        self._last_activity = now
        self._deferred: list[_Request] = []
        self._pending_posts: set[int] = set()

    # -- time ---------------------------------------------------------------------------

    def activity(self, now: float) -> None:
        """The client sent something (a message, a ping frame): it is not idle."""
        self._last_activity = max(self._last_activity, now)

    def deadline(self) -> float:
        """When the client is idle for too long (infinite while it waits for us)."""
        if self._deferred:
            return math.inf
        return self._last_activity + self.limits.idle_timeout

    @property
    def waiting_for_books(self) -> bool:
        """True while subscriptions wait for the books to load."""
        return bool(self._deferred)

    # -- input --------------------------------------------------------------------------

    def receive(self, data: bytes | str, now: float) -> list[Action]:
        """One complete client message. Replies are queued; returns what to run."""
        self.activity(now)
        self.stats.requests += 1
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._error(PARSE_ERROR + _text_echo(data))
            return []
        method = message.get("method") if isinstance(message, dict) else None
        if method == "ping":
            self._reply(pong_message())
            return []
        if method == "health":
            self._reply(Message(orjson.dumps({"channel": "health", "data": self._health()})))
            return []
        if method == "post":
            return self._post(message)
        if method not in ("subscribe", "unsubscribe"):
            self._error(PARSE_ERROR + bounded_echo(message))
            return []
        raw = message.get("subscription")
        if not isinstance(raw, dict):
            self._error(PARSE_ERROR + bounded_echo(message))
            return []
        try:
            channel, key, echo = self.registry.parse(raw)
        except InvalidSubscription:
            self._error(f"Invalid subscription: {bounded_echo(raw)}")
            return []
        request = _Request(method, raw, channel, key, echo)
        if self._deferred or self._books() is None:
            if len(self._deferred) >= self.limits.max_subscriptions:
                self._error(_too_many(self.limits.max_subscriptions))
            else:
                self._deferred.append(request)
            return []
        return self._answer(request, self._books_now())

    def books_ready(self, now: float) -> list[Action]:
        """The books are loaded: answer the subscriptions that waited, in order."""
        books = self._books()
        if books is None or not self._deferred:
            return []
        deferred, self._deferred = self._deferred, []
        actions: list[Action] = []
        for request in deferred:
            if self.client.close_reason is not None:
                break
            actions += self._answer(request, books)
        # Idleness counts from now at the earliest: the client was waiting for us.
        self.activity(now)
        return actions

    def first_ready(self, action: PrepareFirst, message: Message | None) -> None:
        """The first message :class:`PrepareFirst` prepared (``None``: none, or it failed)."""
        if action.key not in self.client.subscriptions:
            return  # unsubscribed meanwhile: forget() dropped what was held
        if not self.client.release(action.key, message):
            self.hub.disconnect_slow(
                self.client, f"{action.channel} first message does not fit", action.channel
            )

    def answered(self, call: RunInfo, payload_json: bytes | None, error: str | None) -> None:
        """The result of a :class:`RunInfo`: the answer's JSON, or an error text."""
        self._pending_posts.discard(call.id)
        if error is not None or payload_json is None:
            self._reply(post_error(call.id, error or "no answer"))
        else:
            self._reply(post_response(call.id, payload_json))

    # -- requests -------------------------------------------------------------------------

    def _books_now(self) -> Books:
        books = self._books()
        assert books is not None
        return books

    def _post(self, message: dict[str, Any]) -> list[Action]:
        self.stats.posts += 1
        request_id = message.get("id")
        request = message.get("request")
        if type(request_id) is not int or not isinstance(request, dict):
            self._error(PARSE_ERROR + bounded_echo(message))
            return []
        kind = request.get("type")
        if kind == "action":
            self._reply(
                post_error(
                    request_id,
                    "hlbook is a read-only market data server: actions (orders, cancels, "
                    "transfers) are not accepted here; send them to the exchange",
                )
            )
            return []
        payload = request.get("payload")
        if kind != "info" or not isinstance(payload, dict):
            self._reply(post_error(request_id, f"Invalid post request: {bounded_echo(request)}"))
            return []
        if request_id in self._pending_posts:
            self._reply(post_error(request_id, f"duplicate pending post request id={request_id}"))
            return []
        if len(self._pending_posts) >= self.limits.max_pending_posts:
            self._reply(post_error(request_id, f"too many pending post requests id={request_id}"))
            return []
        self._pending_posts.add(request_id)
        return [RunInfo(request_id, payload)]

    def _answer(self, request: _Request, books: Books) -> list[Action]:
        client, key, echo, channel = self.client, request.key, request.echo, request.channel
        if request.method == "unsubscribe":
            if key not in client.subscriptions:
                self._error(f"Already unsubscribed: {bounded_echo(echo)}")
                return []
            self.hub.unsubscribe(client, key)
            self._subscription_response("unsubscribe", echo)
            return []
        if not channel.available(key, books):
            self._error(f"Invalid subscription: {bounded_echo(echo)}")
            return []
        if key in client.subscriptions:
            self._error(f"Already subscribed: {bounded_echo(echo)}")
            return []
        if len(client.subscriptions) >= self.limits.max_subscriptions:
            self._error(_too_many(self.limits.max_subscriptions))
            return []
        first = self.hub.subscribe(client, channel, key, books, echo)
        # In the same step as subscribing: what the job captures and what is pushed from
        # now on meet exactly.
        job = channel.first_later(key, books) if first is None else None
        if job is not None:
            client.hold(key)
        if not self._subscription_response("subscribe", echo):
            return []
        if first is not None and not client.put(first, key):
            self.hub.disconnect_slow(
                client, f"{channel.name} first message does not fit", channel.name
            )
        return [PrepareFirst(key, channel.name, job)] if job is not None else []

    def _subscription_response(self, method: str, echo: dict[str, Any]) -> bool:
        data = {"method": method, "subscription": echo}
        return self._reply(Message(orjson.dumps({"channel": "subscriptionResponse", "data": data})))

    def _error(self, text: str) -> None:
        self.stats.protocol_errors += 1
        self._reply(error_message(text))

    def _reply(self, message: Message) -> bool:
        """Queue a reply; False if the client was disconnected for not reading its replies."""
        if self.client.reply(message):
            return True
        self.hub.disconnect_slow(self.client, "replies not read")
        return False


def _too_many(limit: int) -> str:
    return f"Cannot subscribe to more than {limit} channels."
