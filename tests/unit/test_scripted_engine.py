"""ScriptedEngine: output, usage, timing (fake clock), FIFO slots, failures, cancellation."""

from __future__ import annotations

import asyncio

import pytest
from testkit import FakeClock, collect, wait_until

from serving.engines import create_engine
from serving.engines.base import EngineError, EngineLoad, EngineRequest
from serving.engines.scripted import ScriptedEngine, count_scripted_tokens


def request(
    request_id: str = "r1",
    text: str = "alpha beta gamma",
    max_output_tokens: int = 5,
    stop: tuple[str, ...] = (),
) -> EngineRequest:
    return EngineRequest(
        request_id=request_id,
        messages=(("user", text),),
        max_output_tokens=max_output_tokens,
        stop=stop,
    )


async def wait_for_load(engine: ScriptedEngine, expected: EngineLoad) -> None:
    """Let queued tasks run until the engine reports ``expected`` (fails after 5 s)."""
    await wait_until(
        lambda: engine.load() == expected, f"engine load {expected}", timeout_s=5.0, every_s=0
    )


async def test_output_cycles_the_last_message_words_and_ends_with_usage() -> None:
    engine = ScriptedEngine()
    chunks = await collect(engine.generate(request(max_output_tokens=5)))
    *deltas, done = chunks
    assert "".join(c.text for c in deltas) == "alpha beta gamma alpha beta"
    assert [c.tokens for c in deltas] == [1, 1, 1, 1, 1]
    assert done.done and not done.text
    assert done.input_tokens == engine.count_tokens((("user", "alpha beta gamma"),))
    assert (done.output_tokens, done.finish_reason) == (5, "length")
    assert engine.started == ["r1"] and engine.cancelled == []


async def test_output_is_deterministic() -> None:
    first = await collect(ScriptedEngine().generate(request(max_output_tokens=7)))
    second = await collect(ScriptedEngine().generate(request(max_output_tokens=7)))
    assert first[:-1] == second[:-1]


async def test_message_without_words_gets_filler_words() -> None:
    chunks = await collect(ScriptedEngine().generate(request(text="   ", max_output_tokens=2)))
    assert "".join(c.text for c in chunks) == "lorem ipsum"


async def test_reply_tokens_ends_early_with_stop() -> None:
    engine = ScriptedEngine(reply_tokens=2)
    done = (await collect(engine.generate(request(max_output_tokens=10))))[-1]
    assert (done.output_tokens, done.finish_reason) == (2, "stop")


async def test_stop_string_cuts_the_output_before_it() -> None:
    engine = ScriptedEngine()
    chunks = await collect(engine.generate(request(max_output_tokens=10, stop=("gamma",))))
    assert "".join(c.text for c in chunks) == "alpha beta "
    assert (chunks[-1].output_tokens, chunks[-1].finish_reason) == (3, "stop")


def test_count_tokens_is_words_plus_overheads() -> None:
    engine = ScriptedEngine()
    # 2 + 3 words, 4 per message, 3 per prompt
    assert engine.count_tokens((("system", "be brief"), ("user", "one two three"))) == 16


@pytest.mark.parametrize(
    ("bad", "error_class", "message"),
    [
        (EngineRequest("r", (), 4), "invalid", "messages: must not be empty"),
        (EngineRequest("r", (("user", "x"),), 0), "invalid", "max_output_tokens: must be > 0"),
        # 1 word + 4 + 3 = 8 prompt tokens; 8 + 57 > 64
        (EngineRequest("r", (("user", "x"),), 57), "too_large", "prompt 8 tokens"),
    ],
)
async def test_bad_requests_fail_before_taking_a_slot(
    bad: EngineRequest, error_class: str, message: str
) -> None:
    engine = ScriptedEngine(context_window=64)
    with pytest.raises(EngineError) as caught:
        await collect(engine.generate(bad))
    assert caught.value.error_class == error_class
    assert str(caught.value).startswith(message)
    assert engine.started == []
    # exactly at the window is fine
    await collect(engine.generate(EngineRequest("ok", (("user", "x"),), 56)))


async def test_ttft_and_rate_follow_the_injected_clock() -> None:
    clock = FakeClock(1000.0)
    engine = ScriptedEngine(ttft_ms=250, tokens_per_s=10, sleep=clock.sleep, clock=clock)
    chunks = await collect(engine.generate(request(max_output_tokens=4)))
    assert clock.sleeps == pytest.approx([0.25, 0.1, 0.1, 0.1])
    assert clock() == pytest.approx(1000.55)
    assert chunks[-1].queue_ms == 0.0
    assert engine.load().decode_tokens_per_s == 10.0


async def test_prefill_adds_the_prompt_at_its_rate_to_the_first_token() -> None:
    clock = FakeClock(1000.0)
    engine = ScriptedEngine(ttft_ms=100, prefill_tokens_per_s=1000, sleep=clock.sleep, clock=clock)
    short = EngineRequest("s", (("user", "a b"),), 1)
    long = EngineRequest("l", (("user", " ".join(["w"] * 2000)),), 1)
    await collect(engine.generate(short))
    await collect(engine.generate(long))
    prompts = [count_scripted_tokens(r.messages) for r in (short, long)]
    assert clock.sleeps == pytest.approx([0.1 + n / 1000 for n in prompts])
    assert clock.sleeps[1] > 2.0  # 2,000 words of prompt: two seconds more


def test_a_negative_prefill_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="prefill_tokens_per_s"):
        ScriptedEngine(prefill_tokens_per_s=-1)


async def test_rate_does_not_drift_when_the_consumer_is_slow() -> None:
    clock = FakeClock()
    engine = ScriptedEngine(tokens_per_s=10, sleep=clock.sleep, clock=clock)
    stream = engine.generate(request(max_output_tokens=3))
    await anext(stream)
    clock.advance(0.15)  # the consumer took longer than one token interval
    await anext(stream)
    await anext(stream)
    assert clock.sleeps == pytest.approx([0.05])


async def test_requests_beyond_the_slots_wait_in_fifo_order() -> None:
    clock = FakeClock()
    engine = ScriptedEngine(max_concurrency=1, clock=clock, sleep=clock.sleep)
    first = engine.generate(request("a"))
    await anext(first)  # "a" holds the only slot
    waiters = [asyncio.create_task(collect(engine.generate(request(rid)))) for rid in "bc"]
    await wait_for_load(engine, EngineLoad(queue_depth=2, in_flight=1))
    clock.advance(2.0)
    rest = await collect(first)
    b_chunks, c_chunks = await asyncio.gather(*waiters)
    assert rest[-1].finish_reason == "length"
    assert engine.started == ["a", "b", "c"]
    assert b_chunks[-1].queue_ms == pytest.approx(2000.0)
    assert engine.load() == EngineLoad(queue_depth=0, in_flight=0)
    assert engine.cancelled == []


async def test_closing_the_stream_mid_generation_records_the_cancel_and_frees_the_slot() -> None:
    engine = ScriptedEngine(max_concurrency=1)
    stream = engine.generate(request("a", max_output_tokens=100))
    await anext(stream)
    waiting = asyncio.create_task(collect(engine.generate(request("b", max_output_tokens=2))))
    await wait_for_load(engine, EngineLoad(queue_depth=1, in_flight=1))
    await stream.aclose()
    assert engine.cancelled == ["a"]
    assert (await waiting)[-1].output_tokens == 2
    assert engine.load() == EngineLoad(queue_depth=0, in_flight=0)


async def test_cancelling_the_consumer_task_stops_generation() -> None:
    gate = asyncio.Event()

    async def blocking_sleep(seconds: float) -> None:
        await gate.wait()

    engine = ScriptedEngine(ttft_ms=10, sleep=blocking_sleep)
    task = asyncio.create_task(collect(engine.generate(request("a"))))
    await wait_for_load(engine, EngineLoad(queue_depth=0, in_flight=1))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.cancelled == ["a"]
    assert engine.load() == EngineLoad(queue_depth=0, in_flight=0)


async def test_cancelling_a_queued_request_leaves_the_queue() -> None:
    engine = ScriptedEngine(max_concurrency=1)
    first = engine.generate(request("a", max_output_tokens=3))
    await anext(first)
    queued = asyncio.create_task(collect(engine.generate(request("b"))))
    await wait_for_load(engine, EngineLoad(queue_depth=1, in_flight=1))
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert engine.load() == EngineLoad(queue_depth=0, in_flight=1)
    assert (await collect(first))[-1].output_tokens == 3
    assert engine.started == ["a"]
    assert engine.cancelled == ["b"]
    assert engine.load() == EngineLoad(queue_depth=0, in_flight=0)


async def test_reading_past_the_done_chunk_is_not_a_cancel() -> None:
    engine = ScriptedEngine()
    stream = engine.generate(request(max_output_tokens=1))
    assert not (await anext(stream)).done
    assert (await anext(stream)).done
    await stream.aclose()
    assert engine.cancelled == []


@pytest.mark.parametrize("error_class", ["invalid", "too_large", "unavailable"])
async def test_failure_before_first_token_raises_that_class_and_frees_the_slot(
    error_class: str,
) -> None:
    engine = ScriptedEngine(max_concurrency=1, fail_before_first_token=error_class)
    with pytest.raises(EngineError) as caught:
        await anext(engine.generate(request("a")))
    assert caught.value.error_class == error_class
    assert engine.started == ["a"]
    assert engine.load() == EngineLoad(queue_depth=0, in_flight=0)
    engine.fail_before_first_token = None  # failure modes may change between requests
    assert (await collect(engine.generate(request("b"))))[-1].done


async def test_failure_after_tokens_raises_unavailable_after_that_many() -> None:
    engine = ScriptedEngine(fail_after_tokens=2)
    seen: list[str] = []
    with pytest.raises(EngineError) as caught:
        async for chunk in engine.generate(request(max_output_tokens=10)):
            seen.append(chunk.text)
    assert seen == ["alpha", " beta"]
    assert caught.value.error_class == "unavailable"
    assert engine.load() == EngineLoad(queue_depth=0, in_flight=0)


async def test_close_fails_waiting_requests_and_refuses_new_ones() -> None:
    engine = ScriptedEngine(max_concurrency=1)
    first = engine.generate(request("a"))
    await anext(first)
    queued = asyncio.create_task(collect(engine.generate(request("b"))))
    await wait_for_load(engine, EngineLoad(queue_depth=1, in_flight=1))
    await engine.close()
    with pytest.raises(EngineError, match="engine closed") as caught:
        await queued
    assert caught.value.error_class == "unavailable"
    with pytest.raises(EngineError, match="engine closed"):
        await anext(engine.generate(request("c")))
    await first.aclose()


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        ScriptedEngine(max_concurrency=0)
    with pytest.raises(ValueError, match="fail_before_first_token"):
        ScriptedEngine(fail_before_first_token="boom")


def test_factory_builds_engines_by_kind() -> None:
    engine = create_engine("scripted", model_name="fake-7b", context_window=512)
    assert isinstance(engine, ScriptedEngine)
    assert (engine.info.model, engine.info.context_window, engine.info.engine) == (
        "fake-7b",
        512,
        "scripted",
    )
    with pytest.raises(ValueError, match="unknown kind 'tensorrt'"):
        create_engine("tensorrt")
    with pytest.raises(ValueError, match=r"engine_kwargs\.model: required"):
        create_engine("vllm")  # a GPU engine: tests/unit/test_vllm_engine.py


async def test_failure_after_requests_serves_the_first_n_then_fails_every_request() -> None:
    engine = ScriptedEngine(fail_after_requests=1)
    assert (await collect(engine.generate(request("a"))))[-1].done  # e.g. a smoke test
    for rid in ("b", "c"):
        with pytest.raises(EngineError, match="only the first 1 request") as caught:
            await collect(engine.generate(request(rid)))
        assert caught.value.error_class == "unavailable"
    assert engine.started == ["a", "b", "c"]
    assert engine.load() == EngineLoad(queue_depth=0, in_flight=0)
    with pytest.raises(ValueError, match="fail_after_requests: must be an integer >= 0"):
        ScriptedEngine(fail_after_requests=-1)
