"""server.event_loop: which event loop ``hybrid-router serve`` runs on."""

from __future__ import annotations

import asyncio
import sys

import pytest

from router.config import ServerConfig
from router.errors import ConfigError
from router.server.app import loop_factory


def test_asyncio_is_the_standard_loop() -> None:
    assert loop_factory("asyncio") is None


def test_auto_and_uvloop_pick_uvloop_when_installed() -> None:
    import uvloop  # the dev extra installs it (through the fast extra)

    for choice in ("auto", "uvloop"):
        factory = loop_factory(choice)
        assert factory is uvloop.new_event_loop
        loop = factory()
        try:
            assert isinstance(loop, asyncio.AbstractEventLoop)
        finally:
            loop.close()


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError) as info:
        loop_factory("uvloop")
    assert "server.event_loop" in info.value.message
    assert "hybrid-router[fast]" in info.value.message


def test_the_key_accepts_only_the_three_loops() -> None:
    assert ServerConfig().event_loop == "auto"
    with pytest.raises(ValueError, match="event_loop"):
        ServerConfig(event_loop="trio")  # type: ignore[arg-type]
