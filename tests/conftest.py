"""Fixtures shared by every test tier.

Server fixtures live in tests/functional/conftest.py; this file holds only what
every tier needs: an isolated environment and the location of ../shared.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
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


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared/schemas beside the repository (Kubernetes, CRD and Greengrass schemas).

    The schemas are read in place, never copied into the project. Missing means the
    checkout is incomplete: fail loudly rather than skip.
    """
    path = REPO_ROOT.parent / "shared" / "schemas"
    if not path.is_dir():
        pytest.fail(
            f"schema folder not found: {path}. Tests expect the 'shared' folder beside the "
            f"repository ({REPO_ROOT.parent / 'shared'}), as on CI.",
            pytrace=False,
        )
    return path
