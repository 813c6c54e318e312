"""Shared pytest configuration: hypothesis profiles and the real mainnet fixture."""

import os

import pytest
from fixtures import MainnetSlice, load_mainnet
from hypothesis import HealthCheck, settings

# "dev" (default) keeps the whole suite fast on 2 cores; "ci" is the same;
# "thorough" is for a long local run: HYPOTHESIS_PROFILE=thorough pytest.
settings.register_profile(
    "dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def mainnet() -> MainnetSlice:
    """The real mainnet slice from ``tests/data`` (snapshot + 51 by-block lines per stream)."""
    return load_mainnet()
