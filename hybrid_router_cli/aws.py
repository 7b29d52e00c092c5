"""The AWS clients of ``keys`` (Secrets Manager) and ``models`` (S3), from their
``--region`` and ``--endpoint-url`` flags.

A flag or an AWS setting boto3 cannot use is a usage error (exit 2) that names the flag
and the variables to set, never a botocore traceback. boto3 is imported only to build a
client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from hybrid_router_cli.errors import EXIT_USAGE, CliError

_REGION_VARS = "AWS_REGION or AWS_DEFAULT_REGION"


def check_endpoint_url(url: str) -> None:
    """``--endpoint-url``: empty (AWS's endpoint) or an http(s) URL with a host."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host:
        raise CliError(
            f"--endpoint-url {url!r} is not an http(s) URL; pass one such as "
            "http://127.0.0.1:5000, or leave the flag out for AWS's endpoint",
            exit_code=EXIT_USAGE,
        )


def client(service: str, *, region: str, endpoint_url: str, what: str) -> Any:
    """A boto3 client for ``service``; ``what`` names the store in errors."""
    check_endpoint_url(endpoint_url)
    import boto3
    from botocore.exceptions import InvalidRegionError, NoRegionError

    kwargs: dict[str, Any] = {}
    if region:
        kwargs["region_name"] = region
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    try:
        return boto3.session.Session().client(service, **kwargs)
    except NoRegionError:
        raise CliError(
            f"{what}: no AWS region; pass --region (e.g. eu-west-1) or set {_REGION_VARS}",
            exit_code=EXIT_USAGE,
        ) from None
    except InvalidRegionError:
        bad = (
            f"--region {region!r}"
            if region
            else f"the region from {_REGION_VARS} or the AWS config"
        )
        raise CliError(
            f"{what}: {bad} is not an AWS region name; give one such as eu-west-1",
            exit_code=EXIT_USAGE,
        ) from None
    except ValueError as exc:  # an endpoint from the AWS config or AWS_ENDPOINT_URL*
        raise CliError(
            f"{what}: {exc}; set --endpoint-url to an http(s) URL, or fix AWS_ENDPOINT_URL "
            "and the AWS config's endpoint_url",
            exit_code=EXIT_USAGE,
        ) from None
