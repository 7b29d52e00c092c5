"""SQS job front-end: each message is a generate job; the result goes to S3 under its id.

Message body: ``{"job_id": "...", "request": {...GenerateBody...}}``. Result:
``s3://$HYBRID_ROUTER_JOBS_BUCKET/<result prefix><job_id>.json`` with the decision, text,
tool calls (``{id, name, arguments}``, reassembled), the format error ("" when the answer
fits the request's JSON format and tools), usage and failovers.

- Batch: Powertools ``BatchProcessor`` with ``ReportBatchItemFailures``: a failing record
  is reported alone and comes back after the visibility timeout; the others are done.
- Exactly once: Powertools idempotency on ``job_id`` with DynamoDB persistence. A
  redelivered (or twice-sent) job returns the stored result without calling the router;
  the S3 write is conditional (``If-None-Match: *``) so even a job whose idempotency
  record expired never overwrites its result. The same ``job_id`` with a different
  request is refused (payload validation), not run.
- Poison messages: every failure writes ``<failure prefix><message id>.json`` (reason,
  status, whether retrying can help, receive count) and reports the record as failed;
  after the queue's ``maxReceiveCount`` receives SQS moves the message to the DLQ, where
  its message id finds the reason. A success on a later receive removes the record. A
  job running elsewhere (ABORTED: the message was delivered again while an invocation
  still runs it) is logged and retried but stores no record: the running invocation's
  own outcome is the one recorded (when it succeeds on the first receive, nothing would
  remove a record written now).
- A failure no retry can help (``lambda_edge.status.permanent``: a bad body, a prompt no
  window holds (OUT_OF_RANGE), a cost cap or data class the policy refuses
  (FAILED_PRECONDITION)...) goes to the DLQ at once when ``HYBRID_ROUTER_JOBS_DLQ_URL`` is
  set: the message is sent there (with attributes naming the status, the reason and the
  original message id) and the record is reported done, so the router is not asked
  again. A rate limit (RESOURCE_EXHAUSTED) or an unavailable router is retried.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from hybrid_router.client import OptionError, RouterCallError
from pydantic import ValidationError

from lambda_edge.payloads import (
    Job,
    decision_dict,
    describe,
    failover_dict,
    tool_call_dict,
    usage_dict,
)
from lambda_edge.runtime import Runtime
from lambda_edge.status import permanent

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class JobFailed(Exception):
    """A job failed; ``permanent`` when retrying the same message cannot help."""

    def __init__(self, status: str, reason: str, *, permanent: bool, store: bool = True) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.permanent = permanent
        #: False: logged, no failure record (the job is running in another invocation).
        self.store = store


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def make_sqs_handler(rt: Runtime) -> Handler:
    settings = rt.settings
    tel = rt.telemetry
    log = tel.logger
    s3 = rt.aws("s3")
    sqs = rt.aws("sqs") if settings.jobs_dlq_url else None
    persistence = DynamoDBPersistenceLayer(
        table_name=settings.idempotency_table, boto3_client=rt.aws("dynamodb")
    )
    config = IdempotencyConfig(
        event_key_jmespath="job_id",
        payload_validation_jmespath="request",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=settings.idempotency_ttl_s,
    )
    # A batch of poison messages is reported record by record, not as a failed invocation.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    state: dict[str, Any] = {"context": None}

    def result_key(job_id: str) -> str:
        return f"{settings.jobs_result_prefix}{job_id}.json"

    @idempotent_function(data_keyword_argument="job", persistence_store=persistence, config=config)
    def run_job(job: dict[str, Any]) -> dict[str, Any]:
        parsed = Job.model_validate(job)
        context = state["context"]
        timeout = min(rt.timeout_s(context), settings.job_timeout_s)
        with tel.router_span("router.Generate") as tp:
            c = rt.client.complete(
                parsed.request.to_proto(request_id=parsed.job_id), timeout_s=timeout, traceparent=tp
            )
        tel.usage("sqs", c.usage, request_id=c.request_id)
        body = {
            "job_id": parsed.job_id,
            "request_id": c.request_id,
            "decision": decision_dict(c.decision) if c.decision else None,
            "text": c.text,
            "tool_calls": [tool_call_dict(t) for t in c.tool_calls],
            "format_error": c.usage.format_error if c.usage else "",
            "usage": usage_dict(c.usage) if c.usage else None,
            "failovers": [failover_dict(f) for f in c.failovers],
            "completed_at": _now(),
        }
        key = result_key(parsed.job_id)
        written = put_once(key, json.dumps(body, separators=(",", ":")).encode())
        return {"job_id": parsed.job_id, "key": key, "request_id": c.request_id, "written": written}

    def put_once(key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            s3.put_object(
                Bucket=settings.jobs_bucket,
                Key=key,
                Body=data,
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                log.info("result already written; kept as it is", extra={"key": key})
                return False
            raise
        return True

    def record_failure(record: SQSRecord, job_id: str, err: JobFailed) -> None:
        receive_count = int(record.attributes.approximate_receive_count or 0)
        doc = {
            "message_id": record.message_id,
            "job_id": job_id,
            "status": err.status,
            "reason": err.reason,
            "permanent": err.permanent,
            "receive_count": receive_count,
            "failed_at": _now(),
        }
        log.warning("job failed", extra=doc)
        tel.failure("sqs", err.status, err.reason, request_id=job_id, permanent=err.permanent)
        if not err.store:
            return
        try:
            s3.put_object(
                Bucket=settings.jobs_bucket,
                Key=f"{settings.jobs_failure_prefix}{record.message_id}.json",
                Body=json.dumps(doc).encode(),
                ContentType="application/json",
            )
        except Exception:  # the reason is in the log line above as well
            log.exception("could not store the failure record", extra={"job_id": job_id})

    def dead_letter(record: SQSRecord, job_id: str, err: JobFailed) -> bool:
        """Send a message no retry can help to the DLQ now; False when it cannot be sent
        (then SQS redrives it after maxReceiveCount, as before)."""
        if sqs is None:
            return False

        def attr(value: str) -> dict[str, str]:
            return {"DataType": "String", "StringValue": value[:1024] or "-"}

        try:
            sqs.send_message(
                QueueUrl=settings.jobs_dlq_url,
                MessageBody=record.body or "",
                MessageAttributes={
                    "status": attr(err.status),
                    "reason": attr(err.reason),
                    "job_id": attr(job_id),
                    "source_message_id": attr(record.message_id),
                },
            )
        except Exception:
            log.exception("could not send the job to the DLQ; SQS redrives it later")
            return False
        log.info("job sent to the DLQ: no retry can help", extra={"job_id": job_id})
        return True

    def record_handler(record: SQSRecord) -> dict[str, Any]:
        job_id = ""
        try:
            try:
                job = Job.model_validate_json(record.body or "")
            except ValidationError as exc:
                raise JobFailed("INVALID_ARGUMENT", describe(exc)[1], permanent=True) from None
            job_id = job.job_id
            try:
                job.request.to_proto(request_id=job_id)  # what the models let through
            except OptionError as exc:
                raise JobFailed("INVALID_ARGUMENT", f"request.{exc}", permanent=True) from None
            try:
                result = run_job(job=job.model_dump(mode="json"))
            except RouterCallError as exc:
                if exc.code == "UNAUTHENTICATED" and rt.api_key.from_secret:
                    rt.api_key.invalidate()
                raise JobFailed(
                    exc.code, exc.message, permanent=permanent(exc.code, exc.message)
                ) from None
            except IdempotencyValidationError:
                raise JobFailed(
                    "INVALID_ARGUMENT",
                    f"job_id {job_id!r} was already used for a different request; "
                    f"give each job its own id",
                    permanent=True,
                ) from None
            except IdempotencyAlreadyInProgressError:
                raise JobFailed(
                    "ABORTED",
                    f"job {job_id!r} is running elsewhere; retried later",
                    permanent=False,
                    store=False,
                ) from None
        except JobFailed as err:
            record_failure(record, job_id, err)
            if err.permanent and dead_letter(record, job_id, err):
                return {"job_id": job_id, "dead_lettered": err.status}
            raise
        except Exception as exc:
            record_failure(record, job_id, JobFailed("INTERNAL", repr(exc), permanent=False))
            raise
        if int(record.attributes.approximate_receive_count or 1) > 1:
            _forget_failure(record.message_id)
        return result

    def _forget_failure(message_id: str) -> None:
        try:
            s3.delete_object(
                Bucket=settings.jobs_bucket, Key=f"{settings.jobs_failure_prefix}{message_id}.json"
            )
        except Exception:
            log.exception("could not delete an old failure record")

    @log.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        config.register_lambda_context(context)
        state["context"] = context
        response: dict[str, Any] = dict(
            process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
        )
        return response

    if tel.tracer is not None and not tel.tracer.disabled:
        return tel.tracer.capture_lambda_handler(handler, capture_response=False)  # type: ignore[no-any-return]
    return handler  # type: ignore[no-any-return]
