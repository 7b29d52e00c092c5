"""Reliability: the SQS job function under poison, transient faults and duplicates
(issue 16, "SQS jobs").

Separate processes on 127.0.0.1:

- ``moto_server``, one per service: SQS, S3 and DynamoDB (``AWS_ENDPOINT_URL_<SERVICE>``;
  one process would be the bench's bottleneck). The jobs queue has a short visibility
  timeout (``--visibility-timeout-s``, 10 s) and a RedrivePolicy to its DLQ
  (``--max-receive-count``, 5); the results bucket is versioned (a second write of a
  result would show as a second version); the idempotency table is the template's (hash
  key ``id``).
- two model servers (scripted engine): ``gpu-a``, and ``gpu-flaky``: the same model
  server (``serving.model_server``) whose engine fails a job's first *k* attempts before
  the first token (UNAVAILABLE), *k* read from the job id (``...-t2``: twice) and counted
  per request id in the model server process (the router passes the job id through as
  the request id).
- ``hybrid-router serve`` over both, with a tenant token rate limit (burst 20,000
  tokens), prices, JSON request log lines (one per Generate: the calls per job) and the
  circuit breaker out of reach (see below).
- a producer (a thread) sending the jobs in batches of 10 while the pollers work,
  keeping at most ``--backlog`` messages in the queue: moto's SQS scans its whole queue
  on every receive and delete, so a 10,000-message backlog would make the emulator the
  bottleneck (real SQS has no such cost).
- ``--pollers`` Lambda containers: each a process that imports the real entry point
  (``lambda_edge.entry_jobs``: Powertools BatchProcessor, idempotency in DynamoDB,
  results written with ``If-None-Match: *``; ``HYBRID_ROUTER_JOBS_DLQ_URL`` set) and runs
  the event source mapping's loop: receive up to ``--batch-size`` messages (long poll
  1 s), build the SQS event, invoke the handler, delete (DeleteMessageBatch) the
  messages not named in ``batchItemFailures``; failed ones stay invisible and come back
  after the visibility timeout (and SQS moves them to the DLQ after ``maxReceiveCount``
  receives).

The jobs, shuffled (``--seed``): ~80% good (to ``gpu-a``, the cheaper backend, by the
policy); ~10% poison, a mix of kinds whose status and reason are known in advance (bad
JSON, a missing field, a bad job id, an unsupported tool type, an invalid tool schema, a
prompt no window holds, a request over the rate limit's burst, a cost cap below every
estimate, and a job id reused for another request: sent once the first wave has
drained, so that the id's first job is done); ~10% transient: pinned to ``gpu-flaky``,
failing on their first 1 or 2 deliveries, so the router answers UNAVAILABLE for that job
and nothing else; the handler reports the record failed and SQS gives it back after the
visibility timeout. Plus ~1% duplicates: the same body (same job id) sent twice.

Why this transient fault: it is per job and deterministic, so every transient job is
known to fail exactly *k* times and the figures need no guess; the router, its adapter,
the client library, the handler and SQS see a real UNAVAILABLE from a real model server
process. What is scripted is only the model server's decision to fail.

Times are compressed (the template: visibility 720 s, maxReceiveCount 3, BatchSize 5),
so two settings keep the bench about the job path rather than its clock:

- the visibility timeout (10 s) is a few times a batch's time here (10 jobs, the
  handler sharing 2 cores with moto, the router and the model servers: a median of
  3-4 s on a machine busy with other work): a batch slower than it is delivered again
  while running (``batches_slower_than_visibility_timeout``; its jobs then fail with
  ABORTED, "running elsewhere", or are answered from the idempotency record);
- 5 receives: a transient job needs 2 or 3; the rest is margin for a stall of the
  machine (the router marks a backend unhealthy when its load probe times out, and a
  job pinned to it fails until the next good probe).

The circuit breaker is set out of reach: its 30 s cooldown, opened by the scripted
failures of ``gpu-flaky``, would refuse every retry of a job that falls in it (here 4
retries in 40 s; in the template 2 in 24 minutes).

Checks, after the queue is empty (visible, in flight and delayed all 0):

- lost: a good or transient job without exactly one result object (one S3 version)
  holding the scripted answer of its own prompt; also any non-poison message in the DLQ;
- answered twice: a job id with more than one router request log line with
  ``code=OK`` (a Generate the router completed, whether or not its result was kept);
  a result object with more than one version is counted separately;
- poison: every poison message in the DLQ with ``status`` and ``reason`` attributes
  matching its kind (found by ``source_message_id``), and a failure record
  ``failures/<message id>.json`` with the same reason and ``permanent: true``; no poison
  job reaches a model (no OK request line). Extra copies in the DLQ (a message
  dead-lettered again after its delete was lost) are counted;
- transient: each failed at least *k* times (UNAVAILABLE request lines; the causes are
  counted: scripted, or a backend marked unhealthy while the machine stalled), then was
  answered once and has its one result; no failure record is left for a message that
  succeeded.

Figures: jobs, messages, seconds, jobs/s, lost, answered twice, poison in the DLQ with
its reason, transient that eventually succeeded, receives per message (histogram by
kind), handler invocations and batch times. Exit status 1 when a target is missed.

    .venv/bin/python bench/bench_sqs_jobs.py                       # 10,000 jobs
    .venv/bin/python bench/bench_sqs_jobs.py --jobs 500 --json out.json
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import procs

REGION = "us-east-1"
AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_SESSION_TOKEN": "bench",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "hybrid-router-jobs-bench",
    "POWERTOOLS_METRICS_NAMESPACE": "HybridRouterBench",
    "AWS_LAMBDA_FUNCTION_NAME": "hybrid-router-jobs-bench",
}
#: A transient job's id ends with -t<k>: the flaky backend fails its first k attempts.
TRANSIENT_ID = re.compile(r"-t(\d+)$")
#: A transient job fails on its first 1..MAX_FAILS deliveries.
MAX_FAILS = 2
OUTPUT_TOKENS = 6
WINDOW = 8192
BURST_TOKENS = 20_000
#: Above the burst, below the router's own max_output_tokens limit (32768).
OVER_BURST_TOKENS = 30_000
FUNCTION_TIMEOUT_S = 120.0

# --- the jobs ----------------------------------------------------------------------


def prompt(text: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **fields}


#: Poison kinds: body maker (job id -> body text) and the (status, reason regex) expected.
POISON: dict[str, tuple[Any, str, str]] = {
    "bad_json": (
        lambda j: '{"job_id": "' + j + '", "request": {"messages": [',
        "INVALID_ARGUMENT",
        r"^body: Invalid JSON",
    ),
    "missing_field": (
        lambda j: json.dumps({"job_id": j, "request": {"messages": [{"role": "user"}]}}),
        "INVALID_ARGUMENT",
        r"^request\.messages\[0\]\.content: Field required",
    ),
    "bad_job_id": (
        lambda j: json.dumps({"job_id": f"{j}/../x", "request": prompt("hello")}),
        "INVALID_ARGUMENT",
        r"^job_id: String should match pattern",
    ),
    "unsupported_tool": (
        lambda j: json.dumps(
            {"job_id": j, "request": prompt("hi", tools=[{"type": "web_search"}])}
        ),
        "INVALID_ARGUMENT",
        r"^request\.tools\[0\]: type 'web_search': only function tools",
    ),
    "invalid_tool_schema": (
        lambda j: json.dumps(
            {
                "job_id": j,
                "request": prompt(
                    "look it up",
                    tools=[
                        {
                            "type": "function",
                            "function": {"name": "lookup", "parameters": {"type": "objekt"}},
                        }
                    ],
                ),
            }
        ),
        "INVALID_ARGUMENT",
        r"^tools\[0\] \(lookup\)\.parameters_json: not a valid JSON Schema",
    ),
    "prompt_too_large": (
        lambda j: json.dumps({"job_id": j, "request": prompt("word " * 8000)}),
        "OUT_OF_RANGE",
        r"^request needs \d+ tokens .*context window",
    ),
    "over_rate_limit_burst": (
        lambda j: json.dumps(
            {"job_id": j, "request": prompt("a long answer", max_output_tokens=OVER_BURST_TOKENS)}
        ),
        "OUT_OF_RANGE",
        r"rate limit",
    ),
    "cost_cap": (
        lambda j: json.dumps({"job_id": j, "request": prompt("cheap please", max_cost_usd=1e-12)}),
        "FAILED_PRECONDITION",
        r"^max_cost_usd \S+ is below every candidate's estimated cost",
    ),
}
#: Sent after the first wave has drained: the id of a good job that was answered, with
#: another request (Powertools' payload validation refuses it).
REUSE = ("INVALID_ARGUMENT", r"already used for a different request")


@dataclass
class Sent:
    message_id: str
    kind: str  # good | transient | poison | duplicate
    job_id: str
    poison: str = ""
    fails: int = 0
    receives: int = 0


def good_body(job_id: str, i: int, **fields: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "request": prompt(f"job {i} alpha beta", max_output_tokens=OUTPUT_TOKENS, **fields),
    }


def expected_text(body: dict[str, Any]) -> str:
    words = body["request"]["messages"][-1]["content"].split()
    return " ".join(islice(cycle(words), OUTPUT_TOKENS))


@dataclass
class Plan:
    bodies: list[tuple[str, str, str, str, int]]  # (text, kind, job_id, poison kind, fails)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # answerable: job_id -> body
    reuse: list[tuple[str, str]] = field(default_factory=list)  # (text, job id) second wave


def make_plan(args: argparse.Namespace) -> Plan:
    rng = random.Random(args.seed)
    n = args.jobs
    n_poison = round(n * args.poison_pct / 100)
    n_transient = round(n * args.transient_pct / 100)
    n_reuse = max(1, n_poison // (len(POISON) + 1)) if n_poison else 0
    n_first = n_poison - n_reuse
    kinds = ["poison"] * n_first + ["transient"] * n_transient
    kinds += ["good"] * (n - len(kinds) - n_reuse)
    rng.shuffle(kinds)
    plan = Plan(bodies=[])
    poison_kinds = cycle(sorted(POISON))
    for i, kind in enumerate(kinds):
        job_id = f"job-{i:06d}"
        if kind == "poison":
            pk = next(poison_kinds)
            plan.bodies.append((POISON[pk][0](job_id), "poison", job_id, pk, 0))
        elif kind == "transient":
            fails = rng.randint(1, min(MAX_FAILS, args.max_receive_count - 1))
            job_id += f"-t{fails}"
            body = good_body(job_id, i, pin_backends=["gpu-flaky"])
            plan.jobs[job_id] = body
            plan.bodies.append((json.dumps(body), "transient", job_id, "", fails))
        else:
            body = good_body(job_id, i)
            plan.jobs[job_id] = body
            plan.bodies.append((json.dumps(body), "good", job_id, "", 0))
    # Duplicates: a copy of an answerable job's message, at a random later place.
    answerable = [b for b in plan.bodies if b[1] != "poison"]
    for b in rng.sample(answerable, round(n * args.duplicate_pct / 100)):
        at = plan.bodies.index(b)
        plan.bodies.insert(rng.randint(at + 1, len(plan.bodies)), (b[0], "duplicate", *b[2:]))
    goods = [b[2] for b in plan.bodies if b[1] == "good"]
    for job_id in rng.sample(goods, min(n_reuse, len(goods))):
        body = {"job_id": job_id, "request": prompt("another request under the same id")}
        plan.reuse.append((json.dumps(body), job_id))
    return plan


# --- the processes ---------------------------------------------------------------------


class Moto:
    """One ``moto_server`` process; the bench runs one per service (SQS, S3, DynamoDB:
    ``AWS_ENDPOINT_URL_<SERVICE>``), three interpreters instead of one for the emulator."""

    def __init__(self, work: Path, service: str) -> None:
        exe = Path(sys.executable).with_name("moto_server")
        if not exe.exists():
            raise SystemExit(f"{exe.name} not found next to the interpreter: install the dev extra")
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=(work / f"moto-{service}.log").open("wb"),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"moto_server exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=2).read()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("moto_server did not answer")


@dataclass
class Stack:
    queue_url: str
    queue_arn: str
    dlq_url: str
    bucket: str
    table: str


def make_stack(args: argparse.Namespace) -> Stack:
    import boto3

    sqs, s3, ddb = boto3.client("sqs"), boto3.client("s3"), boto3.client("dynamodb")
    tag = uuid.uuid4().hex[:8]
    dlq_url = sqs.create_queue(QueueName=f"jobs-dlq-{tag}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    redrive = {
        "deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
        "maxReceiveCount": str(args.max_receive_count),
    }
    queue_url = sqs.create_queue(
        QueueName=f"jobs-{tag}",
        Attributes={
            "VisibilityTimeout": str(args.visibility_timeout_s),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    bucket = f"results-{tag}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    table = f"idempotency-{tag}"
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return Stack(queue_url, arn["Attributes"]["QueueArn"], dlq_url, bucket, table)


def start_router(work: Path, a_port: int, flaky_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = procs.free_port()

    def backend(name: str, bport: int, hourly: float) -> dict[str, Any]:
        return {
            "name": name,
            "tier": "gpu",
            "kind": "model_service",
            "endpoint": f"127.0.0.1:{bport}",
            "model": "scripted",
            "context_window": WINDOW,
            "max_concurrency": 512,
            "capabilities": ["chat", "tools", "json_schema"],
            "priors": {"ttft_ms": 5, "decode_tokens_per_s": 1000},
            "cost": {"gpu_hourly_usd": hourly, "gpu_throughput_tokens_per_s": 1000},
        }

    cfg = {
        "server": {"address": f"127.0.0.1:{port}", "grace_period_s": 1},
        "backends": [backend("gpu-a", a_port, 1.0), backend("gpu-flaky", flaky_port, 2.0)],
        "policy": {"circuit": {"consecutive_failures": 1_000_000, "min_requests": 1_000_000}},
        "controls": {
            "rate_limits": {
                "default": {"tokens_per_min": 1_000_000_000, "burst_tokens": BURST_TOKENS}
            }
        },
        "telemetry": {"logs": {"requests": True}},
    }
    (work / "router.yaml").write_text(json.dumps(cfg))
    exe = Path(sys.executable).parent / "hybrid-router"
    proc, _ = procs.start(
        [str(exe), "serve", "--config", str(work / "router.yaml"), "--log-level", "info",
         "--json"],
        work / "router.log",
    )  # fmt: skip
    return proc, port


def flaky_backend_main(argv: list[str]) -> int:
    """``_flaky_backend``: serving.model_server with the scripted engine, failing each
    transient job's first k attempts before its first token."""
    from serving import model_server
    from serving.engines.base import EngineError
    from serving.engines.scripted import ScriptedEngine

    class FlakyEngine(ScriptedEngine):
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self.attempts: collections.Counter[str] = collections.Counter()

        def generate(self, request: Any) -> Any:
            return self._flaky(request)

        async def _flaky(self, request: Any) -> Any:
            rid = request.request_id
            self.attempts[rid] += 1
            m = TRANSIENT_ID.search(rid)
            if m and self.attempts[rid] <= int(m.group(1)):
                raise EngineError(
                    f"bench: attempt {self.attempts[rid]} of job {rid} fails", "unavailable"
                )
            async for chunk in super().generate(request):
                yield chunk

    model_server.create_engine = lambda kind, **options: FlakyEngine(**options)  # type: ignore[assignment]
    return model_server.main(argv)


# --- the pollers (Lambda containers) ------------------------------------------------


@dataclass
class Context:
    """The attributes and method of the Lambda runtime's context object."""

    timeout_s: float = FUNCTION_TIMEOUT_S
    function_name: str = AWS["AWS_LAMBDA_FUNCTION_NAME"]
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/hybrid-router-jobs-bench"
    log_stream_name: str = "bench"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self.timeout_s - (time.monotonic() - self.started)) * 1000), 0)


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS poller builds from ReceiveMessage results."""
    records = []
    for m in messages:
        a = m.get("Attributes", {})
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": a.get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": a.get("SentTimestamp", "0"),
                    "SenderId": a.get("SenderId", "AIDAIENQZJOLO23YVJ4VO"),
                    "ApproximateFirstReceiveTimestamp": a.get(
                        "ApproximateFirstReceiveTimestamp", "0"
                    ),
                },
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def poller_main(argv: list[str]) -> int:
    """``_poller CONFIG_JSON``: one Lambda container and its event source mapping loop.
    Bookkeeping (one JSON line per invocation) goes to ``config.out``; the handler's own
    logs and EMF lines go to stdout."""
    cfg = json.loads(argv[0])
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    import boto3

    from lambda_edge.entry_jobs import handler  # Lambda's init phase

    sqs = boto3.client("sqs")
    out = Path(cfg["out"]).open("a", buffering=1)
    lock = Path(cfg["lock"]).open("a")
    out.write(json.dumps({"ready": True}) + "\n")
    while not stopping:
        try:
            # moto's ReceiveMessage is not safe under concurrent calls (two callers can
            # get the same message; a move to the DLQ can fail with a 500): the pollers
            # take turns to receive, which SQS itself does not need.
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                resp = sqs.receive_message(
                    QueueUrl=cfg["queue_url"],
                    MaxNumberOfMessages=cfg["batch_size"],
                    AttributeNames=["All"],
                    WaitTimeSeconds=1,
                )
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        except Exception as exc:  # the emulator's own error: as the mapping does, poll again
            out.write(json.dumps({"receive_error": repr(exc)}) + "\n")
            time.sleep(0.2)
            continue
        messages = resp.get("Messages", [])
        if not messages:
            continue
        t0 = time.monotonic()
        line: dict[str, Any] = {
            "received": [
                [m["MessageId"], int(m["Attributes"]["ApproximateReceiveCount"])] for m in messages
            ]
        }
        try:
            result = handler(sqs_event(messages, cfg["queue_arn"]), Context())
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        except Exception as exc:  # the whole invocation failed: every message comes back
            line["error"] = repr(exc)
            failed = {m["MessageId"] for m in messages}
        line["seconds"] = round(time.monotonic() - t0, 4)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
            ]
            try:
                deleted = sqs.delete_message_batch(QueueUrl=cfg["queue_url"], Entries=entries)
                failed_deletes = [
                    done[int(f["Id"])]["MessageId"] for f in deleted.get("Failed", [])
                ]
            except Exception as exc:
                line["delete_error"] = repr(exc)
                failed_deletes = [m["MessageId"] for m in done]
            if failed_deletes:
                line["delete_failed"] = failed_deletes
        line["failed"] = sorted(failed)
        out.write(json.dumps(line) + "\n")
    return 0


# --- the run ---------------------------------------------------------------------------


def queue_counts(sqs: Any, url: str) -> dict[str, int]:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return {
        "visible": int(a.get(names[0], 0)),
        "in_flight": int(a.get(names[1], 0)),
        "delayed": int(a.get(names[2], 0)),
    }


def send_all(
    sqs: Any,
    url: str,
    bodies: list[tuple[str, str, str, str, int]],
    sent: list[Sent],
    backlog: int,
) -> None:
    """Send ``bodies`` 10 at a time, appending to ``sent`` as they go, keeping at most
    about ``backlog`` messages in the queue (visible or in flight)."""
    for at in range(0, len(bodies), 10):
        while at % 50 == 0:
            c = queue_counts(sqs, url)
            if c["visible"] + c["in_flight"] < backlog:
                break
            time.sleep(0.2)
        chunk = bodies[at : at + 10]
        entries = [{"Id": str(i), "MessageBody": b[0]} for i, b in enumerate(chunk)]
        resp = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        if resp.get("Failed"):
            raise SystemExit(f"send_message_batch failed: {resp['Failed'][:2]}")
        for ok in sorted(resp["Successful"], key=lambda ok: int(ok["Id"])):
            _, kind, job_id, pk, fails = chunk[int(ok["Id"])]
            sent.append(Sent(ok["MessageId"], kind, job_id, pk, fails))


def drain(
    stack: Stack,
    bodies: list[tuple[str, str, str, str, int]],
    sent: list[Sent],
    started: float,
    args: argparse.Namespace,
    what: str,
) -> bool:
    """Send ``bodies`` (a thread, while the pollers work) and wait until they are all
    sent and the queue is empty (visible, in flight, delayed: 0 twice in a row)."""
    import boto3

    sqs = boto3.client("sqs")
    failed: list[BaseException] = []

    def sender() -> None:
        try:
            send_all(boto3.client("sqs"), stack.queue_url, bodies, sent, args.backlog)
        except BaseException as exc:
            failed.append(exc)

    before = len(sent)
    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    quiet = 0
    last_print = 0.0
    deadline = time.monotonic() + args.limit_s
    while time.monotonic() < deadline:
        if failed:
            raise SystemExit(f"sending failed: {failed[0]!r}")
        c = queue_counts(sqs, stack.queue_url)
        quiet = quiet + 1 if not any(c.values()) and not thread.is_alive() else 0
        if quiet >= 2:
            return True
        if time.monotonic() - last_print >= 10:
            last_print = time.monotonic()
            dlq = queue_counts(sqs, stack.dlq_url)["visible"]
            print(
                f"  {what}: t={time.monotonic() - started:6.1f}s sent={len(sent) - before}"
                f"/{len(bodies)} visible={c['visible']} in_flight={c['in_flight']} dlq={dlq}",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(0.5)
    return False


def read_router_log(
    path: Path,
) -> tuple[dict[str, collections.Counter[str]], collections.Counter[str]]:
    """(request id -> Counter of Generate statuses, UNAVAILABLE answers by cause), from
    the router's request log lines."""
    calls: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    causes: collections.Counter[str] = collections.Counter()
    for raw in path.read_text().splitlines():
        if not raw.startswith("{"):
            continue
        line = json.loads(raw)
        if line.get("message") != "request" or "Generate" not in str(line.get("method", "")):
            continue
        code = str(line.get("code", ""))
        calls[str(line.get("request_id", ""))][code] += 1
        if code == "UNAVAILABLE":
            error = str(line.get("error", ""))
            if "bench: attempt" in error:
                causes["scripted (gpu-flaky)"] += 1
            elif "load probe failed" in error:
                causes["backend unhealthy: its load probe timed out"] += 1
            else:
                causes[error[:120]] += 1
    return calls, causes


def read_dlq(sqs: Any, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    empty = 0
    while empty < 3:
        resp = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=600,
        )
        got = resp.get("Messages", [])
        empty = 0 if got else empty + 1
        out.extend(got)
    return out


def list_all(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(page.get("Versions", []))
    return out


def verify(
    args: argparse.Namespace,
    stack: Stack,
    plan: Plan,
    sent: list[Sent],
    work: Path,
) -> dict[str, Any]:
    import boto3

    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    by_id = {s.message_id: s for s in sent}
    # Receives per message (the highest ApproximateReceiveCount any poller saw).
    invocations, errors, delete_failed, receive_errors = 0, 0, 0, 0
    batch_s: list[float] = []
    for f in sorted(work.glob("poller-*.jsonl")):
        for raw in f.read_text().splitlines():
            line = json.loads(raw)
            receive_errors += "receive_error" in line
            if "received" not in line:
                continue
            invocations += 1
            batch_s.append(line["seconds"])
            errors += "error" in line
            delete_failed += len(line.get("delete_failed", []))
            for mid, count in line["received"]:
                s = by_id.get(mid)
                if s is not None:
                    s.receives = max(s.receives, count)
    batch_s.sort()
    hist: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for s in sent:
        hist[s.kind][s.receives] += 1

    # Results: one version per answerable job, its own answer.
    versions = collections.Counter(v["Key"] for v in list_all(s3, stack.bucket, "results/"))
    want = {f"results/{j}.json": j for j in plan.jobs}
    missing = sorted(j for k, j in want.items() if versions[k] == 0)
    twice_written = sorted(j for k, j in want.items() if versions[k] > 1)
    unexpected = sorted(k for k in versions if k not in want)

    def check(key: str) -> str | None:
        job_id = want[key]
        doc = json.loads(s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read())
        if doc.get("job_id") != job_id or doc.get("text") != expected_text(plan.jobs[job_id]):
            return job_id
        return None

    with ThreadPoolExecutor(8) as pool:
        wrong = sorted(j for j in pool.map(check, [k for k in want if versions[k]]) if j)

    # Router calls per job (its request log: one line per Generate).
    calls, causes = read_router_log(work / "router.log")
    none: collections.Counter[str] = collections.Counter()
    ok_twice = sorted(j for j, c in calls.items() if c["OK"] > 1)
    poison_ids = {s.job_id for s in sent if s.kind == "poison" and s.poison != "id_reuse"}
    # (a reused id's job was answered once, for its first request: not counted here)
    poison_answered = sorted(j for j in poison_ids if calls.get(j, none)["OK"])
    transient = {s.job_id: s for s in sent if s.kind == "transient"}
    # Failed as scripted (k UNAVAILABLE; more when the machine stalled: the causes are
    # counted), then answered once, with its one result.
    transient_ok = sorted(
        j
        for j, s in transient.items()
        if versions[f"results/{j}.json"] == 1
        and calls.get(j, none)["UNAVAILABLE"] >= s.fails
        and calls.get(j, none)["OK"] == 1
    )

    # The DLQ: every poison message, with its reason; nothing else.
    dead = read_dlq(sqs, stack.dlq_url)
    copies: collections.Counter[str] = collections.Counter()
    with_reason: set[str] = set()
    bad_reason: list[dict[str, Any]] = []
    not_poison: list[str] = []
    for m in dead:
        attrs = {k: v.get("StringValue", "") for k, v in m.get("MessageAttributes", {}).items()}
        src = attrs.get("source_message_id", m["MessageId"])
        s = by_id.get(src)
        if s is None or s.kind != "poison":
            not_poison.append(by_id[src].job_id if src in by_id else src)
            continue
        copies[src] += 1
        status, pattern = REUSE if s.poison == "id_reuse" else POISON[s.poison][1:]
        if attrs.get("status") == status and re.search(pattern, attrs.get("reason", "")):
            with_reason.add(src)
        else:
            bad_reason.append({"kind": s.poison, **attrs})
    poison_sent = [s for s in sent if s.kind == "poison"]
    poison_missing = [s.message_id for s in poison_sent if copies[s.message_id] == 0]
    extra_copies = sum(n - 1 for n in copies.values() if n > 1)

    # Failure records: one per poison message, none left for a job that succeeded.
    records = {
        o["Key"].removeprefix("failures/").removesuffix(".json")
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=stack.bucket, Prefix="failures/"
        )
        for o in page.get("Contents", [])
    }

    def record_ok(s: Sent) -> bool:
        if s.message_id not in records:
            return False
        key = f"failures/{s.message_id}.json"
        doc = json.loads(s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read())
        status, pattern = REUSE if s.poison == "id_reuse" else POISON[s.poison][1:]
        return bool(
            doc.get("status") == status
            and re.search(pattern, doc.get("reason", ""))
            and doc.get("permanent") is True
        )

    with ThreadPoolExecutor(8) as pool:
        records_ok = sum(pool.map(record_ok, poison_sent))
    stale_records = sorted(records - {s.message_id for s in poison_sent})
    left = queue_counts(sqs, stack.queue_url)

    answerable = len(plan.jobs)
    return {
        "answerable_jobs": answerable,
        "results_ok": answerable - len(missing) - len(wrong),
        "lost": len(missing) + len(not_poison),
        "lost_examples": (missing + not_poison)[:5],
        "wrong_result": len(wrong),
        "answered_twice": len(ok_twice),
        "answered_twice_examples": ok_twice[:5],
        "result_written_twice": len(twice_written),
        "unexpected_result_objects": len(unexpected),
        "router_generate_calls": sum(sum(c.values()) for c in calls.values()),
        "router_generate_ok": sum(c["OK"] for c in calls.values()),
        "router_generate_calls_by_code": dict(sum(calls.values(), collections.Counter())),
        "router_unavailable_by_cause": dict(causes.most_common()),
        "poison_sent": len(poison_sent),
        "poison_in_dlq_with_reason": len(with_reason),
        "poison_missing_from_dlq": len(poison_missing),
        "poison_dlq_extra_copies": extra_copies,
        "poison_dlq_copies_without_reason": bad_reason[:5],
        "poison_failure_records_ok": records_ok,
        "poison_reached_a_model": len(poison_answered),
        "non_poison_in_dlq": len(not_poison),
        "transient_sent": len(transient),
        "transient_failed_then_succeeded": len(transient_ok),
        "stale_failure_records": len(stale_records),
        "left_in_queue": left,
        "receives_per_message": {
            k: {str(n): c for n, c in sorted(v.items())} for k, v in sorted(hist.items())
        },
        "handler_invocations": invocations,
        "handler_invocation_errors": errors,
        "handler_batch_seconds": {
            "p50": batch_s[len(batch_s) // 2] if batch_s else None,
            "p99": batch_s[int(len(batch_s) * 0.99)] if batch_s else None,
            "max": batch_s[-1] if batch_s else None,
        },
        "batches_slower_than_visibility_timeout": sum(
            1 for b in batch_s if b > args.visibility_timeout_s
        ),
        "delete_failed": delete_failed,
        "receive_errors": receive_errors,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sqs-jobs-"))
    os.environ.update(AWS)
    for var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(var, None)
    plan = make_plan(args)
    # SIGTERM (e.g. from timeout(1)) stops the processes started here, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started_procs: list[subprocess.Popen[bytes]] = []
    for service in ("sqs", "s3", "dynamodb"):
        moto = Moto(work, service)
        started_procs.append(moto.proc)
        os.environ[f"AWS_ENDPOINT_URL_{service.upper()}"] = moto.url
    os.environ["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL_SQS"]  # nothing else is used
    try:
        stack = make_stack(args)
        backend, a_port = procs.scripted_backend(work)
        started_procs.append(backend)
        flaky, flaky_port = procs.start(
            [sys.executable, str(Path(__file__).resolve()), "_flaky_backend", "--engine",
             "scripted", "--port", "0", "--max-concurrency", "512", "--log-level", "WARNING"],
            work / "flaky.log",
        )  # fmt: skip
        started_procs.append(flaky)
        router, port = start_router(work, a_port, flaky_port)
        started_procs.append(router)
        env = {
            **os.environ,
            "HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{port}",
            "HYBRID_ROUTER_JOBS_BUCKET": stack.bucket,
            "HYBRID_ROUTER_IDEMPOTENCY_TABLE": stack.table,
            "HYBRID_ROUTER_JOBS_DLQ_URL": stack.dlq_url,
            "HYBRID_ROUTER_DEADLINE_MARGIN_MS": "1000",
        }
        pollers = []
        for i in range(args.pollers):
            cfg = {
                "out": str(work / f"poller-{i}.jsonl"),
                "queue_url": stack.queue_url,
                "queue_arn": stack.queue_arn,
                "batch_size": args.batch_size,
                "lock": str(work / "receive.lock"),
            }
            p = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "_poller", json.dumps(cfg)],
                stdout=(work / f"poller-{i}.log").open("wb"), stderr=subprocess.STDOUT,
                env=env, cwd=procs.REPO,
            )  # fmt: skip
            pollers.append(p)
            started_procs.append(p)
        deadline = time.monotonic() + 120
        for i, p in enumerate(pollers):
            f = work / f"poller-{i}.jsonl"
            while not (f.exists() and f.read_text()):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"poller {i} did not start; see {work}/poller-{i}.log")
                time.sleep(0.1)
        print(
            f"sqs-jobs: {args.jobs} jobs ({len(plan.bodies)} messages), {args.pollers} pollers, "
            f"work dir {work}",
            file=sys.stderr,
            flush=True,
        )
        t0 = time.monotonic()
        sent: list[Sent] = []
        drained = drain(stack, plan.bodies, sent, t0, args, "wave 1")
        if drained and plan.reuse:
            bodies = [(text, "poison", job_id, "id_reuse", 0) for text, job_id in plan.reuse]
            drained = drain(stack, bodies, sent, t0, args, "wave 2 (reused ids)")
        seconds = time.monotonic() - t0
        for p in pollers:
            p.send_signal(signal.SIGTERM)
        for p in pollers:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        print(f"  drained in {seconds:.1f}s; verifying", file=sys.stderr, flush=True)
        res: dict[str, Any] = {
            "jobs": args.jobs,
            "messages": len(sent),
            "duplicates": sum(1 for s in sent if s.kind == "duplicate"),
            "pollers": args.pollers,
            "batch_size": args.batch_size,
            "visibility_timeout_s": args.visibility_timeout_s,
            "max_receive_count": args.max_receive_count,
            "seconds": round(seconds, 1),
            "jobs_per_s": round(args.jobs / seconds, 1),
            "drained": drained,
            "poison_kinds": dict(
                sorted(collections.Counter(s.poison for s in sent if s.kind == "poison").items())
            ),
        }
        res.update(verify(args, stack, plan, sent, work))
        res["router_exit"] = router.poll()
        res["work_dir"] = str(work)
    finally:
        procs.stop(*reversed(started_procs))
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_poller"]:
        return poller_main(argv[1:])
    if argv[:1] == ["_flaky_backend"]:
        return flaky_backend_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--poison-pct", type=float, default=10.0)
    p.add_argument("--transient-pct", type=float, default=10.0)
    p.add_argument("--duplicate-pct", type=float, default=1.0)
    p.add_argument("--pollers", type=int, default=4, help="Lambda containers at once")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--visibility-timeout-s", type=int, default=10)
    p.add_argument("--max-receive-count", type=int, default=5)
    p.add_argument(
        "--backlog", type=int, default=300, help="messages kept in the queue by the producer"
    )
    p.add_argument("--limit-s", type=float, default=3600, help="give up draining after this")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    if args.max_receive_count < 2:
        p.error("--max-receive-count: at least 2 (a transient job fails at least once)")
    res = run(args)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    ok = (
        res["drained"]
        and res["lost"] == 0
        and res["wrong_result"] == 0
        and res["answered_twice"] == 0
        and res["result_written_twice"] == 0
        and res["unexpected_result_objects"] == 0
        and res["poison_in_dlq_with_reason"] == res["poison_sent"]
        and res["poison_failure_records_ok"] == res["poison_sent"]
        and res["poison_reached_a_model"] == 0
        and res["transient_failed_then_succeeded"] == res["transient_sent"]
        and res["stale_failure_records"] == 0
        and not any(res["left_in_queue"].values())
        and res["router_exit"] is None
    )
    print("targets:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
