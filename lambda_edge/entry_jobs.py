"""Lambda entry point of the SQS job function (``Handler: lambda_edge.entry_jobs.handler``).

Built at init, once per container (see lambda_edge.entry_http): the router channel, the S3
and DynamoDB clients and the idempotency store.
"""

from lambda_edge.jobs import make_sqs_handler
from lambda_edge.runtime import Runtime

runtime = Runtime.from_env(jobs=True, patch_modules=("botocore",))
handler = make_sqs_handler(runtime)
