"""Continuing an answer on another backend after a failure mid-stream (continue_on_failure,
router/continuation.py), through a real router and wire-format servers over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from anthropic_wire import AnthropicWire
from anthropic_wire import Scenario as AScenario
from hybrid_router.client import make_request
from hybrid_router.v1 import types_pb2 as tpb
from openai_wire import Scenario, WireServer
from rtutil import collect, kinds, text_of

from router.continuation import INSTRUCTION_TEXT

KEY = "sk-ant-continuation"


@pytest.fixture
async def servers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[WireServer, Any]]:
    monkeypatch.setenv("ANTHROPIC_CONT_KEY", KEY)
    openai, anthropic = WireServer(), AnthropicWire()
    await openai.start()
    await anthropic.start()
    try:
        yield openai, anthropic
    finally:
        await openai.stop()
        await anthropic.stop()


def backend(kind: str, name: str, url: str, price: float) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "tier": "hosted",
        "kind": kind,
        "endpoint": url,
        "model": name,
        "context_window": 8192,
        "priors": {"ttft_ms": 50, "decode_tokens_per_s": 100},
        "cost": {"input_per_mtok_usd": price, "output_per_mtok_usd": price},
        "timeout_s": 10,
    }
    if kind == "anthropic":
        entry["api_key_env"] = "ANTHROPIC_CONT_KEY"
    return entry


def stub(router: Any, channel_to: Any) -> Any:
    from rtutil import stub_for

    return stub_for(channel_to(router))


async def test_an_answer_cut_mid_stream_goes_on_on_the_next_backend_with_an_instruction(
    servers: Any, start_router: Any, channel_to: Any
) -> None:
    openai, _ = servers
    openai.scenarios["cheap"] = Scenario(deltas=("The sky ", "is ", "blue ", "and"), cut_after=2)
    openai.scenarios["dear"] = Scenario(deltas=("blue and wide.",), usage=(40, 4))
    router = await start_router(
        [backend("openai", "cheap", openai.base_url, 1.0),
         backend("openai", "dear", openai.base_url, 5.0)]
    )  # fmt: skip
    req = make_request("Describe the sky", max_output_tokens=32, continue_on_failure=True)
    events = await collect(stub(router, channel_to).Generate(req))
    assert [k for k in kinds(events) if k != "delta"] == ["decision", "continuation", "usage"]
    cont = next(e.continuation for e in events if e.HasField("continuation"))
    assert (cont.from_backend, cont.to_backend, cont.method) == ("cheap", "dear", "instruction")
    assert cont.tokens_so_far == 2 and cont.reason.startswith("failed mid-answer: ")
    assert text_of(events) == "The sky is blue and wide."
    usage = events[-1].usage
    assert usage.complete and usage.continued and usage.backend == "dear"
    assert usage.output_tokens == 2 + 4 and usage.attempts == 2
    assert usage.finish_reason == tpb.FINISH_REASON_STOP
    # The second backend got the question, the answer so far and the instruction.
    sent = [r.body for r in openai.requests if r.body.get("model") == "dear"][0]
    assert sent["messages"][-2:] == [
        {"role": "assistant", "content": "The sky is "},
        {"role": "user", "content": INSTRUCTION_TEXT},
    ]
    assert sent["max_tokens"] == 30  # what is left of the request's 32


async def test_anthropic_continues_the_open_assistant_turn_without_its_trailing_space(
    servers: Any, start_router: Any, channel_to: Any
) -> None:
    openai, anthropic = servers
    openai.scenarios["cheap"] = Scenario(deltas=("Roses ", "are ", "red"), cut_after=2)
    anthropic.scenarios["claude"] = AScenario(deltas=(" red.",), output_tokens=2)
    router = await start_router(
        [backend("openai", "cheap", openai.base_url, 1.0),
         backend("anthropic", "claude", anthropic.url, 5.0) | {"capabilities": ["chat", "prefill"]}]
    )  # fmt: skip
    req = make_request("A poem", max_output_tokens=16, continue_on_failure=True)
    events = await collect(stub(router, channel_to).Generate(req))
    cont = next(e.continuation for e in events if e.HasField("continuation"))
    assert cont.method == "prefill"
    # "Roses are " was streamed; Anthropic got "Roses are" (no trailing space) and answered
    # " red.": the caller gets one space.
    assert text_of(events) == "Roses are red."
    sent = anthropic.requests[-1].body
    assert sent["messages"][-1] == {"role": "assistant", "content": "Roses are"}
    assert events[-1].usage.continued


async def test_without_continue_on_failure_the_answer_ends_incomplete(
    servers: Any, start_router: Any, channel_to: Any
) -> None:
    openai, _ = servers
    openai.scenarios["cheap"] = Scenario(deltas=("The sky ", "is "), cut_after=1)
    router = await start_router(
        [backend("openai", "cheap", openai.base_url, 1.0),
         backend("openai", "dear", openai.base_url, 5.0)]
    )  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as err:
        events = []
        async for ev in stub(router, channel_to).Generate(make_request("Describe the sky")):
            events.append(ev)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not events[-1].usage.complete and not events[-1].usage.continued
    assert not any(e.HasField("continuation") for e in events)


async def test_a_tenant_can_turn_continuation_on_for_all_its_requests(
    servers: Any, start_router: Any, channel_to: Any, tmp_path: Any
) -> None:
    from secutil import bearer, make_keys

    openai, _ = servers
    openai.scenarios["cheap"] = Scenario(deltas=("one ", "two "), cut_after=1)
    openai.scenarios["dear"] = Scenario(deltas=("two three",))
    keys = make_keys(tmp_path / "keys.yaml", ["acme"])
    router = await start_router(
        [backend("openai", "cheap", openai.base_url, 1.0),
         backend("openai", "dear", openai.base_url, 5.0)],
        auth={"keys_file": str(tmp_path / "keys.yaml"),
              "tenants": [{"name": "acme", "continue_on_failure": True}]},
    )  # fmt: skip
    events = await collect(
        stub(router, channel_to).Generate(make_request("count"), metadata=bearer(keys["acme"]))
    )
    assert text_of(events) == "one two three"
    assert events[-1].usage.continued


async def test_when_no_backend_can_go_on_the_answer_ends_incomplete_with_the_sums(
    servers: Any, start_router: Any, channel_to: Any
) -> None:
    openai, _ = servers
    openai.scenarios["cheap"] = Scenario(deltas=("a ", "b "), cut_after=1)
    openai.scenarios["dear"] = Scenario(status=503, error={"message": "overloaded"})
    router = await start_router(
        [backend("openai", "cheap", openai.base_url, 1.0),
         backend("openai", "dear", openai.base_url, 5.0)]
    )  # fmt: skip
    events: list[Any] = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for ev in stub(router, channel_to).Generate(
            make_request("letters", continue_on_failure=True)
        ):
            events.append(ev)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    usage = events[-1].usage
    assert not usage.complete and usage.backend == "cheap"
    assert text_of(events) == "a "


async def test_the_seam_loses_and_repeats_nothing_across_100_forced_failures(
    start_router: Any, channel_to: Any, model_server: Any
) -> None:
    """ModelService backends (scripted engines, prefill): the first fails after a random
    number of tokens; the second continues the open turn. The caller's text must equal the
    uncut answer exactly, every time."""
    import random

    from rtutil import ms_backend

    from serving.engines.scripted import ScriptedEngine

    flaky, steady = ScriptedEngine(), ScriptedEngine()
    router = await start_router(
        [ms_backend("gpu-a", "gpu", await model_server(flaky), cost={"gpu_hourly_usd": 0.1,
                    "gpu_throughput_tokens_per_s": 1000}),
         ms_backend("gpu-b", "gpu", await model_server(steady), cost={"gpu_hourly_usd": 9.0,
                    "gpu_throughput_tokens_per_s": 1000})],
        policy={"circuit": {"consecutive_failures": 1000, "error_rate": 1.0, "min_requests": 1000}},
    )  # fmt: skip
    s = stub(router, channel_to)
    prompt = "one two three four five six seven"
    whole = await collect(
        s.Generate(make_request(prompt, max_output_tokens=40, pin_backends=["gpu-b"]))
    )
    expected = text_of(whole)
    assert len(expected.split()) == 40
    rng = random.Random(7)
    seams = 0
    for _ in range(100):
        flaky.fail_after_tokens = rng.randint(1, 39)
        events = await collect(
            s.Generate(make_request(prompt, max_output_tokens=40, continue_on_failure=True))
        )
        assert text_of(events) == expected
        cont = [e.continuation for e in events if e.HasField("continuation")]
        assert [(c.to_backend, c.method, c.tokens_so_far) for c in cont] == [
            ("gpu-b", "prefill", flaky.fail_after_tokens)
        ]
        usage = events[-1].usage
        assert usage.continued and usage.complete and usage.output_tokens == 40
        seams += 1
    assert seams == 100


async def test_an_answer_cut_after_its_last_token_is_not_continued_past_max_output_tokens(
    start_router: Any, channel_to: Any, model_server: Any
) -> None:
    """A backend that fails after its last token (all max_output_tokens streamed) but
    before its end leaves no output budget: no Continuation (which would ask the next
    backend for one more token and make the answer longer than max_output_tokens); the
    answer ends as without the option. Seen in bench/bench_kills.py: a model server
    SIGKILLed between its last delta and its done event."""
    from rtutil import ms_backend

    from serving.engines.base import EngineError
    from serving.engines.scripted import ScriptedEngine

    class FailsBeforeItsEnd(ScriptedEngine):
        async def _generate(self, request: Any) -> Any:  # type: ignore[override]
            async for chunk in super()._generate(request):
                if chunk.done:
                    raise EngineError("killed before its end", "unavailable")
                yield chunk

    flaky, steady = FailsBeforeItsEnd(), ScriptedEngine()
    router = await start_router(
        [ms_backend("gpu-a", "gpu", await model_server(flaky), cost={"gpu_hourly_usd": 0.1,
                    "gpu_throughput_tokens_per_s": 1000}),
         ms_backend("gpu-b", "gpu", await model_server(steady), cost={"gpu_hourly_usd": 9.0,
                    "gpu_throughput_tokens_per_s": 1000})],
    )  # fmt: skip
    events: list[Any] = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for ev in stub(router, channel_to).Generate(
            make_request("one two three", max_output_tokens=6, continue_on_failure=True)
        ):
            events.append(ev)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not any(e.HasField("continuation") for e in events)
    assert text_of(events) == "one two three one two three"  # all 6 tokens, no 7th
    usage = events[-1].usage
    assert not usage.complete and usage.backend == "gpu-a" and usage.output_tokens == 6
    assert steady.started == []  # gpu-b was never asked for more
