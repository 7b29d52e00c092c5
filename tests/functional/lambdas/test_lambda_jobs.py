"""The SQS job handler against a real router and moto's SQS, S3 and DynamoDB.

A small poller stands in for Lambda's SQS event source mapping: it receives from the
queue (moto honours the queue's RedrivePolicy), builds the SQS event, invokes the handler
and deletes the records that did not come back in ``batchItemFailures``. A failed
record's visibility is reset to 0, as if the visibility timeout had passed. The queue
uses the template's ``maxReceiveCount``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import cfn_yaml
from lambda_events import LambdaContext, prompt_body, sqs_event, unique
from rtutil import ms_backend

from lambda_edge.jobs import make_sqs_handler
from lambda_edge.runtime import Runtime
from lambda_edge.settings import Settings
from serving.engines.scripted import ScriptedEngine

TEMPLATE = Path(__file__).resolve().parents[3] / "deploy" / "sam" / "template.yaml"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def template_max_receive_count() -> int:
    t = cfn_yaml.load(str(TEMPLATE))
    return int(t["Resources"]["JobsQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"])


@dataclass
class JobsStack:
    """The template's queue, DLQ, bucket and table, made in moto."""

    queue_url: str
    queue_arn: str
    dlq_url: str
    bucket: str
    table: str
    max_receive_count: int
    sqs: Any = field(repr=False)
    s3: Any = field(repr=False)

    def send(self, body: Any) -> str:
        text = body if isinstance(body, str) else json.dumps(body)
        return str(self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=text)["MessageId"])

    def receive(self, url: str | None = None) -> list[dict[str, Any]]:
        resp = self.sqs.receive_message(
            QueueUrl=url or self.queue_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            VisibilityTimeout=30,
        )
        return list(resp.get("Messages", []))

    def result(self, job_id: str) -> dict[str, Any]:
        obj = self.s3.get_object(Bucket=self.bucket, Key=f"results/{job_id}.json")
        return dict(json.loads(obj["Body"].read()))

    def versions(self, key: str) -> int:
        resp = self.s3.list_object_versions(Bucket=self.bucket, Prefix=key)
        return len([v for v in resp.get("Versions", []) if v["Key"] == key])


@pytest.fixture
def stack(aws_env) -> JobsStack:  # type: ignore[no-untyped-def]
    sqs = boto3.client("sqs")
    s3 = boto3.client("s3")
    ddb = boto3.client("dynamodb")
    mrc = template_max_receive_count()
    dlq_url = sqs.create_queue(QueueName=unique("jobs-dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(
        QueueName=unique("jobs"),
        Attributes={
            "VisibilityTimeout": "720",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(mrc)}
            ),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    bucket = unique("results")
    s3.create_bucket(Bucket=bucket)
    # Versioning on, so that a second write of a result would show as a second version.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    table = unique("idempotency")
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return JobsStack(queue_url, queue_arn, dlq_url, bucket, table, mrc, sqs, s3)


@pytest.fixture
def jobs_runtime(stack: JobsStack) -> Iterator[Callable[[int], Runtime]]:
    made: list[Runtime] = []

    def make(port: int) -> Runtime:
        rt = Runtime(
            Settings.from_env(
                {
                    "HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{port}",
                    "HYBRID_ROUTER_JOBS_BUCKET": stack.bucket,
                    "HYBRID_ROUTER_IDEMPOTENCY_TABLE": stack.table,
                },
                jobs=True,
            )
        )
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


async def poll_once(
    stack: JobsStack, handler: Handler, *, lose_deletes: frozenset[str] = frozenset()
) -> tuple[list[str], list[str]]:
    """One event-source-mapping round: (message ids delivered, ids reported failed).

    ``lose_deletes``: successes whose delete is lost (the poller died first), so SQS
    delivers them again: a true redelivery."""
    messages = await asyncio.to_thread(stack.receive)
    if not messages:
        return [], []
    resp = await asyncio.to_thread(
        handler, sqs_event(messages, stack.queue_arn), LambdaContext(timeout_s=120)
    )
    failed = {f["itemIdentifier"] for f in resp["batchItemFailures"]}
    for m in messages:
        if m["MessageId"] in failed:
            stack.sqs.change_message_visibility(
                QueueUrl=stack.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
            )
        elif m["MessageId"] in lose_deletes:
            stack.sqs.change_message_visibility(
                QueueUrl=stack.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
            )
        else:
            stack.sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=m["ReceiptHandle"])
    return [m["MessageId"] for m in messages], sorted(failed)


def job(job_id: str, text: str, **fields: Any) -> dict[str, Any]:
    return {"job_id": job_id, "request": prompt_body(text, **fields)}


async def test_batch_with_poison_transient_and_duplicates_is_exactly_once(
    stack, jobs_runtime, model_server, start_router
):
    good = ScriptedEngine(reply_tokens=3)
    flaky = ScriptedEngine(reply_tokens=3, fail_before_first_token="unavailable")
    router = await start_router(
        [
            ms_backend("gpu-a", "gpu", await model_server(good)),
            ms_backend("gpu-flaky", "gpu", await model_server(flaky)),
        ]
    )
    handler = make_sqs_handler(jobs_runtime(router.port))

    a = stack.send(job("job-a", "alpha beta", pin_backends=["gpu-a"]))
    b = stack.send(job("job-b", "gamma delta", pin_backends=["gpu-a"]))
    poison = stack.send({"job_id": "job-p", "request": {"messages": [{"role": "user"}]}})
    transient = stack.send(job("job-t", "epsilon", pin_backends=["gpu-flaky"]))
    dup = stack.send(job("job-a", "alpha beta", pin_backends=["gpu-a"]))  # sent twice

    # Round 1: one batch; the poison and the transient job fail alone; job-a's delete is
    # lost, so it comes back; the twice-sent job-a is answered from the idempotency store.
    delivered, failed = await poll_once(stack, handler, lose_deletes=frozenset({a}))
    assert set(delivered) == {a, b, poison, transient, dup}
    assert failed == sorted([poison, transient])
    assert good.started == ["job-a", "job-b"]

    # The backend recovers; the poller keeps going until the queue is empty.
    flaky.fail_before_first_token = None
    for _ in range(stack.max_receive_count + 3):
        delivered, failed = await poll_once(stack, handler)
        if not delivered:
            break
    else:
        pytest.fail("the queue never drained")

    # Exactly once: each job's model ran once (the transient one: once more after its
    # failure before the first token), and each result object was written once.
    assert good.started == ["job-a", "job-b"]
    assert flaky.started == ["job-t", "job-t"]
    for job_id, text in (("job-a", "alpha beta alpha"), ("job-b", "gamma delta gamma")):
        result = stack.result(job_id)
        assert result["text"] == text and result["usage"]["backend"] == "gpu-a"
        assert result["decision"]["backend"] == "gpu-a"
        assert stack.versions(f"results/{job_id}.json") == 1
    assert stack.result("job-t")["text"] == "epsilon epsilon epsilon"
    assert stack.versions("results/job-t.json") == 1
    # The transient job's failure record was removed once it succeeded.
    listed = stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix="failures/")
    assert [o["Key"] for o in listed.get("Contents", [])] == [f"failures/{poison}.json"]

    # The poison message is in the DLQ (moved by SQS after maxReceiveCount receives),
    # and its message id finds the reason.
    dead = await asyncio.to_thread(stack.receive, stack.dlq_url)
    assert [m["MessageId"] for m in dead] == [poison]
    assert int(dead[0]["Attributes"]["ApproximateReceiveCount"]) >= stack.max_receive_count
    reason = json.loads(
        stack.s3.get_object(Bucket=stack.bucket, Key=f"failures/{poison}.json")["Body"].read()
    )
    assert reason["status"] == "INVALID_ARGUMENT" and reason["permanent"] is True
    assert reason["reason"].startswith("request.messages[0].content: Field required")
    assert reason["receive_count"] == stack.max_receive_count


async def test_reused_job_id_with_another_request_is_refused(
    stack, jobs_runtime, model_server, start_router
):
    engine = ScriptedEngine(reply_tokens=2)
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    handler = make_sqs_handler(jobs_runtime(router.port))
    stack.send(job("job-x", "one two"))
    await poll_once(stack, handler)
    second = stack.send(job("job-x", "something else"))
    _, failed = await poll_once(stack, handler)
    assert failed == [second]
    assert engine.started == ["job-x"]
    assert stack.result("job-x")["text"] == "one two"
    reason = json.loads(
        stack.s3.get_object(Bucket=stack.bucket, Key=f"failures/{second}.json")["Body"].read()
    )
    assert "already used for a different request" in reason["reason"]


async def test_router_down_is_a_transient_failure(stack, jobs_runtime):
    from lambda_events import free_port

    handler = make_sqs_handler(jobs_runtime(free_port()))
    mid = stack.send(job("job-down", "hello"))
    _, failed = await poll_once(stack, handler)
    assert failed == [mid]
    reason = json.loads(
        stack.s3.get_object(Bucket=stack.bucket, Key=f"failures/{mid}.json")["Body"].read()
    )
    assert reason["status"] == "UNAVAILABLE" and reason["permanent"] is False


async def test_job_results_carry_tool_calls_and_the_format_error(stack, jobs_runtime, tool_router):
    """A job with tools gets the calls reassembled; one with a JSON schema that its
    answer misses gets the reason in ``format_error`` (the answer is kept as it came)."""
    from tool_backends import BERGEN, OSLO, TWO_CALLS_TEXT, WEATHER_SCHEMA, WEATHER_TOOL, as_json

    handler = make_sqs_handler(jobs_runtime(tool_router.port))
    stack.send(
        job(
            "job-tools",
            "Weather in Oslo and Bergen?",
            tools=[WEATHER_TOOL],
            tool_choice="get_weather",
            pin_backends=["two-calls"],
        )
    )
    schema = {"name": "weather", "schema": WEATHER_SCHEMA}
    stack.send(
        job(
            "job-json",
            "Weather in Oslo?",
            response_format={"type": "json_schema", "json_schema": schema},
            pin_backends=["json-sloppy"],
        )
    )
    for _ in range(3):
        delivered, failed = await poll_once(stack, handler)
        assert failed == []
        if not delivered:
            break
    tools = stack.result("job-tools")
    assert tools["text"] == TWO_CALLS_TEXT
    assert tools["tool_calls"] == [as_json(OSLO), as_json(BERGEN)]
    assert tools["format_error"] == ""
    assert tools["usage"]["finish_reason"] == "tool_calls" and tools["usage"]["tool_calls"] == 2
    answer = stack.result("job-json")
    assert answer["tool_calls"] == []
    assert answer["format_error"].startswith("the answer is not JSON")
    assert answer["usage"]["format_error"] == answer["format_error"]


async def test_a_job_with_a_bad_tool_field_is_a_permanent_failure_naming_it(stack, jobs_runtime):
    """Refused by the body model (naming the field), before any router call; permanent,
    so with HYBRID_ROUTER_JOBS_DLQ_URL it would go to the DLQ at once."""
    from lambda_events import free_port

    handler = make_sqs_handler(jobs_runtime(free_port()))  # no router: never asked
    mid = stack.send(job("job-bad-tool", "hi", tools=[{"type": "web_search"}]))
    _, failed = await poll_once(stack, handler)
    assert failed == [mid]
    reason = json.loads(
        stack.s3.get_object(Bucket=stack.bucket, Key=f"failures/{mid}.json")["Body"].read()
    )
    assert reason["status"] == "INVALID_ARGUMENT" and reason["permanent"] is True
    assert reason["reason"].startswith("request.tools[0]: type 'web_search': only function tools")


async def test_a_job_running_elsewhere_leaves_no_failure_record(
    stack, jobs_runtime, model_server, start_router
):
    """A message delivered again while its first delivery still runs the job (a batch
    slower than the visibility timeout, or SQS delivering twice) fails with ABORTED and
    comes back. It stores no failure record: the first delivery succeeds with receive
    count 1 and deletes the message, so nothing would remove one (bench_sqs_jobs.py)."""
    engine = ScriptedEngine(reply_tokens=2, ttft_ms=3000)  # the second delivery comes meanwhile
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    first = make_sqs_handler(jobs_runtime(router.port))  # two Lambda containers
    second = make_sqs_handler(jobs_runtime(router.port))
    mid = stack.send(job("job-slow", "one two"))
    delivered = await asyncio.to_thread(stack.receive)
    running = asyncio.ensure_future(
        asyncio.to_thread(
            first, sqs_event(delivered, stack.queue_arn), LambdaContext(timeout_s=120)
        )
    )
    for _ in range(200):
        if engine.started:
            break
        await asyncio.sleep(0.05)
    assert engine.started == ["job-slow"]
    # The visibility timeout passes while the job runs: SQS delivers the message again.
    stack.sqs.change_message_visibility(
        QueueUrl=stack.queue_url, ReceiptHandle=delivered[0]["ReceiptHandle"], VisibilityTimeout=0
    )
    again = await asyncio.to_thread(stack.receive)
    assert [m["MessageId"] for m in again] == [mid]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    resp = await asyncio.to_thread(
        second, sqs_event(again, stack.queue_arn), LambdaContext(timeout_s=120)
    )
    assert resp["batchItemFailures"] == [{"itemIdentifier": mid}]
    assert (await running)["batchItemFailures"] == []
    assert engine.started == ["job-slow"]
    assert stack.result("job-slow")["text"] == "one two"
    listed = stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix="failures/")
    assert listed.get("Contents", []) == []
