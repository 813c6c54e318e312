"""The client side of the WebSocket API, sans I/O: requests in, replies out.

Client messages are ``{"method": "subscribe" | "unsubscribe", "subscription":
{...}}``, ``{"method": "ping"}`` and hlbook's ``{"method": "health"}``;
extra top-level keys (such as ``"id"``) are ignored. Subscriptions are
structured by one cattrs converter into frozen attrs types that double as
subscription keys. Error texts are the official API's.
"""

from typing import Any, TypeAlias

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, override
from cattrs.preconf.orjson import make_converter
from cattrs.strategies import configure_tagged_union

from hlbook.book.l2 import DEFAULT_LEVELS, MAX_LEVELS

__all__ = [
    "BboSub",
    "Health",
    "L2BookSub",
    "L4BookSub",
    "Ping",
    "ProtocolError",
    "Request",
    "Subscribe",
    "Subscription",
    "TradesSub",
    "Unsubscribe",
    "error_message",
    "parse_request",
    "pong_message",
    "subscription_response",
]

PARSE_ERROR = "Error parsing JSON into valid websocket request: "
_MAX_ECHO = 512


def _in(allowed: tuple[object, ...]) -> Any:
    def check(_instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
        if value not in allowed:
            raise ValueError(f"{attribute.name} must be one of {allowed}, not {value!r}")

    return check


def _levels(_instance: object, _attribute: object, value: int) -> None:
    if not 1 <= value <= MAX_LEVELS:
        raise ValueError(f"nLevels must be between 1 and {MAX_LEVELS}")


@attrs.frozen
class L2BookSub:
    """``l2Book``: aggregated levels after every block that changes them."""

    coin: str
    n_sig_figs: int | None = attrs.field(default=None, validator=_in((None, 2, 3, 4, 5)))
    mantissa: int | None = attrs.field(default=None, validator=_in((None, 1, 2, 5)))
    n_levels: int = attrs.field(default=DEFAULT_LEVELS, validator=_levels)

    def __attrs_post_init__(self) -> None:
        if self.mantissa is not None and self.n_sig_figs != 5:
            raise ValueError("mantissa is only allowed with nSigFigs 5")


@attrs.frozen
class BboSub:
    """``bbo``: best bid and offer when either changes."""

    coin: str


@attrs.frozen
class TradesSub:
    """``trades``: the coin's trades of each block."""

    coin: str


@attrs.frozen
class L4BookSub:
    """``l4Book``: a per-order snapshot, then the node's events of each block."""

    coin: str


Subscription: TypeAlias = L2BookSub | BboSub | TradesSub | L4BookSub

_TAGS: dict[type, str] = {
    L2BookSub: "l2Book",
    BboSub: "bbo",
    TradesSub: "trades",
    L4BookSub: "l4Book",
}


@attrs.frozen
class Subscribe:
    """A valid subscribe request; ``echo`` is what the response repeats back."""

    subscription: Subscription
    echo: dict[str, Any]


@attrs.frozen
class Unsubscribe:
    """A valid unsubscribe request."""

    subscription: Subscription
    echo: dict[str, Any]


@attrs.frozen
class Ping:
    """``{"method": "ping"}``."""


@attrs.frozen
class Health:
    """``{"method": "health"}`` (hlbook extension)."""


@attrs.frozen
class ProtocolError:
    """A request that gets an error reply; the connection stays open."""

    text: str


Request: TypeAlias = Subscribe | Unsubscribe | Ping | Health | ProtocolError


def _strict(kind: type) -> Any:
    def structure(value: object, _type: object) -> object:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


def _make_converter() -> cattrs.Converter:
    converter = make_converter(forbid_extra_keys=False)
    # cattrs would coerce "5" or 5.7 to an int; the API must not.
    converter.register_structure_hook(int, _strict(int))
    converter.register_structure_hook(str, _strict(str))
    converter.register_structure_hook(
        L2BookSub,
        make_dict_structure_fn(
            L2BookSub,
            converter,
            n_sig_figs=override(rename="nSigFigs"),
            n_levels=override(rename="nLevels"),
        ),
    )
    configure_tagged_union(
        Subscription, converter, tag_name="type", tag_generator=lambda cls: _TAGS[cls]
    )
    return converter


_converter = _make_converter()


def _echo_text(data: bytes | str, *, is_json: bool) -> str:
    """The client's text for a parse error. JSON is echoed whole, so that it stays
    valid JSON (its size is bounded by the message size limit); other text is cut."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if is_json or len(text) <= _MAX_ECHO:
        return text
    return text[:_MAX_ECHO] + "…"


def dumps(value: Any) -> str:
    """Compact JSON text (orjson)."""
    return orjson.dumps(value).decode()


def parse_request(data: bytes | str) -> Request:
    """Parse one client message into a request or a :class:`ProtocolError`."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return ProtocolError(PARSE_ERROR + _echo_text(data, is_json=False))
    method = message.get("method") if isinstance(message, dict) else None
    if method == "ping":
        return Ping()
    if method == "health":
        return Health()
    if method not in ("subscribe", "unsubscribe"):
        return ProtocolError(PARSE_ERROR + _echo_text(data, is_json=True))
    raw = message.get("subscription")
    if not isinstance(raw, dict):
        return ProtocolError(PARSE_ERROR + _echo_text(data, is_json=True))
    try:
        subscription: Subscription = _converter.structure(raw, Subscription)  # type: ignore[arg-type]
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError):
        return ProtocolError(f"Invalid subscription: {dumps(raw)}")
    echo = dict(raw)
    if isinstance(subscription, L2BookSub):
        echo.setdefault("nSigFigs", None)
        echo.setdefault("mantissa", None)
    if method == "subscribe":
        return Subscribe(subscription, echo)
    return Unsubscribe(subscription, echo)


def subscription_response(method: str, echo: dict[str, Any]) -> str:
    """``{"channel":"subscriptionResponse","data":{"method":…,"subscription":…}}``."""
    return dumps(
        {"channel": "subscriptionResponse", "data": {"method": method, "subscription": echo}}
    )


def pong_message() -> str:
    """Exactly ``{"channel":"pong"}``."""
    return '{"channel":"pong"}'


def error_message(text: str) -> str:
    """``{"channel":"error","data":text}``."""
    return dumps({"channel": "error", "data": text})


def invalid_subscription(echo: dict[str, Any]) -> str:
    """The official text for a subscription hlbook cannot serve (e.g. an unknown coin)."""
    return f"Invalid subscription: {dumps(echo)}"


def already(subscribed: bool, echo: dict[str, Any]) -> str:
    """``Already subscribed: …`` / ``Already unsubscribed: …``."""
    word = "subscribed" if subscribed else "unsubscribed"
    return f"Already {word}: {dumps(echo)}"


def too_many(limit: int) -> str:
    """The official text for exceeding the per-connection subscription limit."""
    return f"Cannot subscribe to more than {limit} channels."
