"""The post-swap watchdog: the probation decision (fake clock), its configuration, and the
rollback it drives through the real runner, slot and sync over a local model source."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import model_service_pb2 as mpb
from hybrid_router.v1 import types_pb2 as tpb
from test_edge_agent import LocalSource, make_sync
from testkit import FakeClock, wait_until

from greengrass.config import AgentConfig, AgentConfigError, from_args, from_component_config
from greengrass.config import validate as validate_config
from greengrass.probation import Probation, ProbationPolicy
from greengrass.runner import RequestRunner
from greengrass.store import ModelStore

# --- the decision -----------------------------------------------------------------------


def test_a_version_fails_once_enough_requests_mostly_failed():
    clock = FakeClock()
    p = Probation("v2", "v1", ProbationPolicy(seconds=60, min_requests=5), clock=clock)
    assert p.open and p.seconds_left() == 60
    for ok in (False, False, False, False):
        assert p.record(ok) is None  # 4 failures: not enough requests to judge
    verdict = p.record(True)
    assert verdict is not None and (verdict.failed, verdict.total) == (4, 5)
    assert (verdict.version, verdict.previous) == ("v2", "v1")
    assert verdict.reason == "4 of 5 requests failed in probation"
    assert not p.open and p.record(False) is None  # judged once


def test_half_failed_is_not_more_than_half():
    p = Probation("v2", "v1", ProbationPolicy(seconds=60, min_requests=4), clock=FakeClock())
    for ok in (False, True, False, True, True, False):
        assert p.record(ok) is None  # 2/4, 2/5, 3/6: never more than half
    verdict = p.record(False)
    assert verdict is not None and verdict.reason == "4 of 7 requests failed in probation"


def test_the_window_ends_and_the_version_passes_however_few_requests():
    clock = FakeClock()
    p = Probation("v2", "v1", ProbationPolicy(seconds=60, min_requests=2), clock=clock)
    assert p.record(False) is None
    clock.advance(60)
    assert not p.open and p.verdict is None and p.seconds_left() == 0
    assert p.record(False) is None and p.total == 1  # outside the window: not counted


def test_policy_and_configuration_errors_name_the_key(tmp_path: Path):
    assert not ProbationPolicy(seconds=0).enabled and ProbationPolicy().enabled
    base = AgentConfig(router="r:1", device_id="d", work_dir=str(tmp_path))
    cfg = from_component_config(
        {"probation": {"seconds": 30, "minRequests": 3, "maxErrorRate": 0.25}}, base
    )
    assert (cfg.probation_s, cfg.probation_min_requests, cfg.probation_max_error_rate) == (
        30.0,
        3,
        0.25,
    )
    flags = from_args(
        ["--probation-s", "0", "--probation-min-requests", "7", "--probation-max-error-rate", "0"]
    )
    assert (flags.probation_s, flags.probation_min_requests, flags.probation_max_error_rate) == (
        0.0,
        7,
        0.0,
    )
    with pytest.raises(AgentConfigError, match=r"probation.maxErrorRate \(--probation-max-err"):
        validate_config(from_component_config({"probation": {"maxErrorRate": 1.0}}, base))
    with pytest.raises(AgentConfigError, match=r"probation.minRequests \(--probation-min-req"):
        validate_config(from_component_config({"probation": {"minRequests": 0}}, base))
    with pytest.raises(AgentConfigError, match=r"probation.seconds: must be a number"):
        from_component_config({"probation": {"seconds": "long"}}, base)


# --- the rollback, through the runner and the slot -----------------------------------------


def generate(rid: str, text: str = "alpha beta", max_output_tokens: int = 4) -> Any:
    return mpb.ModelGenerateRequest(
        request_id=rid,
        messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content=text)],
        max_output_tokens=max_output_tokens,
    )


async def serve(runner: RequestRunner, *requests: Any) -> list[epb.DeviceMessage]:
    """Run requests as the link does; the messages they sent back."""
    sent: list[epb.DeviceMessage] = []
    for req in requests:
        runner.start(req, sent.append)
    assert await runner.wait_idle(30)
    return sent


def outcomes(sent: list[epb.DeviceMessage]) -> tuple[int, int]:
    done = sum(1 for m in sent if m.HasField("event") and m.event.event.HasField("done"))
    return done, sum(1 for m in sent if m.HasField("error"))


async def test_a_version_failing_real_requests_is_rolled_back_and_refused_until_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    source = LocalSource()
    source.publish("v1", {"reply_tokens": 2})
    source.publish("v2", {"fail_after_requests": 1})  # passes its smoke test, then fails
    clock = FakeClock()
    policy = ProbationPolicy(seconds=60, min_requests=3, max_error_rate=0.5)
    sync, slot = make_sync(tmp_path, source, retry_s=600, clock=clock, probation=policy)
    runner = RequestRunner(slot)
    await sync.load_initial()
    for version in ("v1", "v2"):
        sync.set_router_desired({"m": version})
        await sync.reconcile()
    assert slot.model is not None and slot.model.version == "v2" and sync.status == "ok: m v2"
    assert sync.probation is not None and sync.probation.previous == "v1"

    # A bad request does not count against the engine.
    sent = await serve(runner, generate("bad", max_output_tokens=0))
    assert sent[0].error.error_class == "fatal" and sync.probation.total == 0

    caplog.set_level(logging.WARNING, logger="greengrass.sync")
    assert outcomes(await serve(runner, generate("a"), generate("b"))) == (0, 2)
    assert sync.probation.total == 2 and slot.model.version == "v2"  # not judged yet
    assert outcomes(await serve(runner, generate("c"))) == (0, 1)
    await sync.reconcile()  # the sync loop, woken by the verdict
    assert slot.model.version == "v1"
    expected = "rolled back m from v2 to v1: 3 of 3 requests failed in probation"
    assert sync.status == expected
    assert any(
        r.levelno == logging.WARNING and "v2" in r.getMessage() and "v1" in r.getMessage()
        for r in caplog.records
    )
    state = ModelStore(tmp_path).state("m")
    assert (state.current, state.failed["v2"]) == ("v1", expected)
    assert (tmp_path / "models" / "m" / "v2").is_dir()  # kept: a retry needs no download
    assert outcomes(await serve(runner, generate("d"))) == (1, 0)  # served by v1
    assert sync.probation is None  # a rollback is not on probation

    await sync.reconcile()  # v2 is still desired, but refused until retry_s
    assert slot.model.version == "v1" and sync.status == expected
    clock.advance(600)
    await sync.reconcile()
    assert slot.model.version == "v2" and source.downloads == 2
    assert sync.probation is not None and sync.probation.version == "v2"
    await slot.close()


async def test_a_version_that_passes_its_probation_is_kept_after_the_window(tmp_path: Path):
    source = LocalSource()
    source.publish("v1", {"reply_tokens": 2})
    source.publish("v2", {"tokens_per_s": 20})
    clock = FakeClock()
    policy = ProbationPolicy(seconds=60, min_requests=1, max_error_rate=0.0)
    sync, slot = make_sync(tmp_path, source, clock=clock, probation=policy)
    runner = RequestRunner(slot)
    await sync.load_initial()
    for version in ("v1", "v2"):
        sync.set_router_desired({"m": version})
        await sync.reconcile()
    # A request the caller cancels (or whose deadline passes) is not counted.
    sent: list[epb.DeviceMessage] = []
    runner.start(generate("cancelled", max_output_tokens=1000), sent.append)
    await wait_until(lambda: sent, "the request's first message", timeout_s=30)
    runner.cancel("cancelled")
    assert await runner.wait_idle(30)
    assert sync.probation is not None and sync.probation.total == 0
    assert outcomes(await serve(runner, generate("a", max_output_tokens=2))) == (1, 0)
    assert sync.probation.total == 1
    clock.advance(61)
    await sync.reconcile()
    assert sync.probation is None  # passed
    slot.engine.fail_before_first_token = "unavailable"  # type: ignore[union-attr]
    assert outcomes(await serve(runner, generate("c"))) == (0, 1)
    await sync.reconcile()
    assert slot.model is not None and slot.model.version == "v2" and sync.status == "ok: m v2"
    await slot.close()


async def test_a_failed_rollback_keeps_saying_why(tmp_path: Path):
    source = LocalSource()
    source.publish("v1", {"reply_tokens": 2})
    source.publish("v2", {"fail_after_requests": 1})
    policy = ProbationPolicy(seconds=60, min_requests=2)
    sync, slot = make_sync(tmp_path, source, probation=policy)
    runner = RequestRunner(slot)
    await sync.load_initial()
    for version in ("v1", "v2"):
        sync.set_router_desired({"m": version})
        await sync.reconcile()
    assert slot.model is not None and slot.model.version == "v2"
    shutil.rmtree(tmp_path / "models" / "m" / "v1")  # the previous version is gone
    await serve(runner, generate("a"), generate("b"))
    await sync.reconcile()
    assert slot.model.version == "v2"
    held = sync.status
    assert "but the rollback to v1 failed" in held and held.endswith("serving v2")
    await sync.reconcile()  # a later pass does not turn it back into "ok"
    assert sync.status == held
    await slot.close()


async def test_a_first_version_that_fails_goes_back_to_the_bundled_model(tmp_path: Path):
    source = LocalSource()
    source.publish("v1", {"fail_after_requests": 1})
    policy = ProbationPolicy(seconds=60, min_requests=2)
    sync, slot = make_sync(tmp_path, source, probation=policy)
    runner = RequestRunner(slot)
    await sync.load_initial()
    sync.set_router_desired({"m": "v1"})
    await sync.reconcile()
    assert slot.model is not None and slot.model.version == "v1"
    await serve(runner, generate("a"), generate("b"))
    await sync.reconcile()
    assert slot.model.version == "builtin"
    assert sync.status == "rolled back m from v1 to builtin: 2 of 2 requests failed in probation"
    state = ModelStore(tmp_path).state("m")
    assert state.current == "" and "v1" in state.failed  # a restart does not load v1
    assert outcomes(await serve(runner, generate("c"))) == (1, 0)
    await slot.close()


async def test_probation_off_never_rolls_back(tmp_path: Path):
    source = LocalSource()
    source.publish("v1", {"reply_tokens": 2})
    source.publish("v2", {"fail_after_requests": 1})
    sync, slot = make_sync(tmp_path, source, probation=ProbationPolicy(seconds=0))
    runner = RequestRunner(slot)
    await sync.load_initial()
    for version in ("v1", "v2"):
        sync.set_router_desired({"m": version})
        await sync.reconcile()
    assert sync.probation is None
    assert outcomes(await serve(runner, *(generate(f"r{i}") for i in range(6)))) == (0, 6)
    await sync.reconcile()
    assert slot.model is not None and slot.model.version == "v2"
    await slot.close()
