"""Fixtures shared by every test tier.

Server fixtures live in tests/functional/conftest.py; this file holds only what
every tier needs: an isolated environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

#: Prefix of every variable the router reads (HYBRID_ROUTER_CONFIG, HYBRID_ROUTER__...).
ENV_PREFIX = "HYBRID_ROUTER_"


@pytest.fixture(autouse=True)
def clean_environ() -> Iterator[None]:
    """Snapshot os.environ, drop HYBRID_ROUTER_* for the test, restore everything after.

    A developer's exported overrides never leak into a test, and a test that sets a
    variable never leaks it into the next one.
    """
    saved = dict(os.environ)
    for var in [v for v in os.environ if v.startswith(ENV_PREFIX)]:
        del os.environ[var]
    try:
        yield
    finally:
        for var in [v for v in os.environ if v not in saved]:
            del os.environ[var]
        for var, value in saved.items():
            if os.environ.get(var) != value:
                os.environ[var] = value
