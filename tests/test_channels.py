"""The channel registry: parsing subscriptions into keys, echo rules, official error texts."""

from typing import Any

import pytest

from hlbook.channels import CHANNELS, InvalidSubscription, Policy, Registry
from hlbook.channels.bbo import BboKey
from hlbook.channels.l2book import L2Key
from hlbook.channels.l4book import L4Key
from hlbook.channels.trades import TradesKey
from hlbook.stages import Stage

REGISTRY = Registry()


def parse(raw: dict[str, Any]) -> Any:
    return REGISTRY.parse(raw)[1]


def test_every_channel_is_registered_once_with_a_stage_and_a_policy() -> None:
    names = [cls.name for cls in CHANNELS]
    assert len(names) == len(set(names))
    assert {"l2Book", "bbo", "trades", "l4Book"} <= set(names)
    assert REGISTRY["l2Book"].stage is Stage.DIFFS
    assert REGISTRY["trades"].stage is Stage.FILLS
    assert REGISTRY["l4Book"].stage is Stage.STATUSES
    assert REGISTRY["l2Book"].policy is Policy.CONFLATE
    assert REGISTRY["trades"].policy is Policy.LOSSLESS
    assert REGISTRY["l4Book"].policy is Policy.RESNAPSHOT


def test_l2book_defaults_and_echo() -> None:
    channel, key, echo = REGISTRY.parse({"type": "l2Book", "coin": "BTC"})
    assert channel.name == "l2Book"
    assert key == L2Key("BTC")
    assert key.n_levels == 20
    assert echo == {"type": "l2Book", "coin": "BTC", "nSigFigs": None, "mantissa": None}


def test_echo_keeps_the_clients_keys_and_order() -> None:
    raw = {"coin": "ETH", "type": "l2Book", "nLevels": 5, "nSigFigs": 5, "mantissa": 2}
    _, key, echo = REGISTRY.parse(raw)
    assert key == L2Key("ETH", 5, 2, 5)
    assert list(echo) == ["coin", "type", "nLevels", "nSigFigs", "mantissa"]
    assert echo == raw


def test_fast_means_five_levels_and_is_echoed() -> None:
    raw = {"type": "l2Book", "coin": "BTC", "fast": True}
    _, key, echo = REGISTRY.parse(raw)
    assert key == L2Key("BTC", n_levels=5, fast=True)
    assert echo["fast"] is True
    assert parse({"type": "l2Book", "coin": "BTC", "fast": False}) == L2Key("BTC")


@pytest.mark.parametrize(
    ("subscription", "expected"),
    [
        ({"type": "bbo", "coin": "@107"}, BboKey("@107")),
        ({"type": "trades", "coin": "xyz:XYZ100"}, TradesKey("xyz:XYZ100")),
        ({"type": "l4Book", "coin": "PURR/USDC"}, L4Key("PURR/USDC")),
        ({"type": "l2Book", "coin": "BTC", "nSigFigs": 2}, L2Key("BTC", 2)),
        ({"type": "l2Book", "coin": "BTC", "nSigFigs": 5, "mantissa": 5}, L2Key("BTC", 5, 5)),
        ({"type": "l2Book", "coin": "BTC", "nSigFigs": None, "mantissa": None}, L2Key("BTC")),
        ({"type": "l2Book", "coin": "BTC", "nLevels": 100}, L2Key("BTC", n_levels=100)),
        ({"type": "trades", "coin": "BTC", "id": 5}, TradesKey("BTC")),  # extra keys ignored
    ],
)
def test_valid_subscriptions(subscription: dict[str, object], expected: object) -> None:
    assert parse(subscription) == expected


def test_keys_of_different_channels_never_collide() -> None:
    keys = {parse({"type": name, "coin": "BTC"}) for name in ("l2Book", "bbo", "trades", "l4Book")}
    assert len(keys) == 4


@pytest.mark.parametrize(
    "subscription",
    [
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 1},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 6},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": "5"},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 5.0},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": True},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 4, "mantissa": 2},
        {"type": "l2Book", "coin": "BTC", "mantissa": 2},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 5, "mantissa": 3},
        {"type": "l2Book", "coin": "BTC", "nLevels": 0},
        {"type": "l2Book", "coin": "BTC", "nLevels": 101},
        {"type": "l2Book", "coin": "BTC", "fast": "yes"},
        {"type": "l2Book"},
        {"type": "l2Book", "coin": 5},
        {"type": "l2Book", "coin": ""},
        {"type": "bbo", "coin": None},
        {"type": "nope", "coin": "BTC"},
        {"type": 7},
        {"coin": "BTC"},
        # Addresses that int(x, 16) would take: a sign, a space, "_", Arabic-Indic digits.
        {"type": "orderUpdates", "user": "0x-" + "0" * 38 + "1"},
        {"type": "userFills", "user": "0x " + "0" * 38 + "1"},
        {"type": "userEvents", "user": "0x" + "0" * 38 + "_1"},
        {"type": "orderUpdates", "user": "0x" + "0" * 39 + "\u0661"},
    ],
)
def test_invalid_subscriptions_are_refused(subscription: dict[str, object]) -> None:
    with pytest.raises(InvalidSubscription):
        REGISTRY.parse(subscription)


def test_per_user_channels_walk_the_smaller_of_the_news_and_the_subscribers() -> None:
    from hlbook.channels.base import Shared
    from hlbook.channels.userfills import UserFills, UserFillsKey

    channel = UserFills(Shared())
    keys = [UserFillsKey(f"0x{i:040x}", aggregate) for i in range(5) for aggregate in (False, True)]
    for key in keys:
        channel.added(key)
    channel.removed(keys[0])  # user 0 keeps its aggregated key only
    channel.removed(keys[9])
    channel.removed(keys[9])  # twice: no harm
    few = {f"0x{0:040x}": "a", f"0x{9:040x}": "nobody's"}  # fewer users than subscribed
    assert list(channel.with_news(few)) == [(keys[1], "a")]
    many = {f"0x{i:040x}": str(i) for i in range(100)}  # more users than subscribed
    assert sorted(channel.with_news(many), key=repr) == sorted(
        [(key, str(i // 2)) for i, key in enumerate(keys) if i not in (0, 9)], key=repr
    )
    assert list(channel.with_news({})) == []
