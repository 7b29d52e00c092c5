"""The Lambda front-ends against a real router with rate limits: a refusal that waiting
cures is 429 with ``Retry-After``; one it does not cure is 413 / 422; an SQS job that no
retry can help goes to the DLQ at once, a rate-limited one is retried."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import pytest
from lambda_events import http_event, prompt_body
from rtutil import ms_backend
from test_lambda_http import body_of, invoke, runtime_for
from test_lambda_jobs import JobsStack, job, poll_once, stack  # noqa: F401  (a fixture)
from test_lambda_stream import post, serve  # noqa: F401  (a fixture)

from lambda_edge.http_api import make_http_handler
from lambda_edge.jobs import make_sqs_handler
from lambda_edge.runtime import Runtime
from lambda_edge.settings import Settings
from serving.engines.scripted import ScriptedEngine

PRICED = {"gpu_hourly_usd": 1.0, "gpu_throughput_tokens_per_s": 100, "source": "test"}
#: One request every 20 s with a burst of 2, 1000 tokens at once at most.
LIMITS = {
    "rate_limits": {"default": {"requests_per_min": 3, "burst_requests": 2, "tokens_per_min": 1000}}
}


@pytest.fixture
async def limited(model_server, start_router):  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(reply_tokens=3)
    backend = ms_backend("gpu-a", "gpu", await model_server(engine), cost=PRICED)
    router = await start_router([backend], controls=LIMITS)
    return engine, router


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    made: list[Runtime] = []
    yield made
    for rt in made:
        rt.close()


async def test_http_answers_429_with_retry_after_and_413_422_for_what_cannot_pass(
    limited, runtimes
):
    engine, router = limited
    rt = runtime_for(router.port)
    runtimes.append(rt)
    handler = make_http_handler(rt)

    # Not retryable: above the token burst (nothing is charged), and a cost cap below every
    # candidate (it passed the limits: one request counted, its tokens given back).
    resp = await invoke(handler, http_event("/v1/generate", prompt_body(max_output_tokens=2000)))
    assert resp["statusCode"] == 413 and "Retry-After" not in resp["headers"]
    err = body_of(resp)["error"]
    assert err["status"] == "OUT_OF_RANGE" and "no wait lets through" in err["message"]
    resp = await invoke(handler, http_event("/v1/generate", prompt_body(max_cost_usd=1e-9)))
    assert resp["statusCode"] == 422 and "Retry-After" not in resp["headers"]
    assert body_of(resp)["error"]["status"] == "FAILED_PRECONDITION"
    assert "max_cost_usd" in body_of(resp)["error"]["message"]
    assert engine.started == []

    # The second request of the burst of 2 passes; the next is 429 with the wait, in
    # whole seconds, rounded up.
    resp = await invoke(handler, http_event("/v1/generate", prompt_body()))
    assert resp["statusCode"] == 200, resp["body"]
    resp = await invoke(handler, http_event("/v1/generate", prompt_body()))
    assert resp["statusCode"] == 429, resp["body"]
    err = body_of(resp)["error"]
    assert err["status"] == "RESOURCE_EXHAUSTED" and "3 requests a minute" in err["message"]
    assert 18.0 < err["retry_after_s"] <= 20.0
    assert resp["headers"]["Retry-After"] in ("19", "20")
    # The OpenAI-compatible path carries the same header.
    openai = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    resp = await invoke(handler, http_event("/v1/chat/completions", openai))
    assert resp["statusCode"] == 429 and resp["headers"]["Retry-After"] in ("19", "20")


async def test_the_streaming_server_answers_429_with_retry_after(limited, serve):  # noqa: F811
    _, router = limited
    s = serve(router.port)
    results = [
        await asyncio.to_thread(post, s.url + "/v1/generate/stream", prompt_body())
        for _ in range(3)
    ]
    assert [r.status_code for r in results] == [200, 200, 429]
    assert results[2].headers["Retry-After"] in ("19", "20")
    assert results[2].json()["error"]["status"] == "RESOURCE_EXHAUSTED"


@pytest.fixture
def jobs_runtime_with_dlq(stack: JobsStack) -> Iterator[Callable[[int], Runtime]]:  # noqa: F811
    made: list[Runtime] = []

    def make(port: int) -> Runtime:
        rt = Runtime(
            Settings.from_env(
                {
                    "HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{port}",
                    "HYBRID_ROUTER_JOBS_BUCKET": stack.bucket,
                    "HYBRID_ROUTER_IDEMPOTENCY_TABLE": stack.table,
                    "HYBRID_ROUTER_JOBS_DLQ_URL": stack.dlq_url,
                },
                jobs=True,
            )
        )
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


async def test_jobs_no_retry_can_help_go_to_the_dlq_at_once(
    stack,  # noqa: F811  (the fixture)
    jobs_runtime_with_dlq,
    limited,
):
    engine, router = limited
    handler = make_sqs_handler(jobs_runtime_with_dlq(router.port))
    over = stack.send(job("job-over", "alpha", max_output_tokens=2000))  # OUT_OF_RANGE
    capped = stack.send(job("job-cap", "alpha", max_cost_usd=1e-9))  # FAILED_PRECONDITION
    delivered, failed = await poll_once(stack, handler)
    assert sorted(delivered) == sorted([over, capped]) and failed == []
    # Both are in the DLQ after one receive, with their status and original message id.
    dead = await asyncio.to_thread(
        lambda: stack.sqs.receive_message(
            QueueUrl=stack.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
    )
    got = {
        m["MessageAttributes"]["source_message_id"]["StringValue"]: (
            m["MessageAttributes"]["status"]["StringValue"],
            json.loads(m["Body"])["job_id"],
        )
        for m in dead
    }
    assert got == {over: ("OUT_OF_RANGE", "job-over"), capped: ("FAILED_PRECONDITION", "job-cap")}
    for mid, status in ((over, "OUT_OF_RANGE"), (capped, "FAILED_PRECONDITION")):
        reason = json.loads(
            stack.s3.get_object(Bucket=stack.bucket, Key=f"failures/{mid}.json")["Body"].read()
        )
        assert reason["status"] == status and reason["permanent"] is True
        assert reason["receive_count"] == 1
    # Nothing is left to retry, and no model ran.
    assert await asyncio.to_thread(stack.receive) == []
    assert engine.started == []

    # The cost cap counted one request of the burst of 2: one more job runs, the next is
    # rate limited and retried later, not dead-lettered.
    sent = {stack.send(job("job-1", "alpha beta")), stack.send(job("job-2", "gamma delta"))}
    delivered, failed = await poll_once(stack, handler)
    assert set(delivered) == sent and len(failed) == 1 and len(engine.started) == 1
    reason = json.loads(
        stack.s3.get_object(Bucket=stack.bucket, Key=f"failures/{failed[0]}.json")["Body"].read()
    )
    assert reason["status"] == "RESOURCE_EXHAUSTED" and reason["permanent"] is False
