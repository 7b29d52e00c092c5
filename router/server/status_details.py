"""A RouterError's machine-readable details, as trailing metadata of the status it ends an
RPC with (``router.server.interceptors``):

=================================  ==========================================================
``grpc-status-details-bin``        ``google.rpc.Status`` (code, the message) holding
                                   ``google.rpc.ErrorInfo`` (``error_reason``, domain
                                   ``hybrid-router``, ``error_metadata``) and
                                   ``google.rpc.RetryInfo`` (``retry_after_s``), each only
                                   when the error declares it
``retry-after``                    ``retry_after_s`` in seconds (``"1.250"``), which
                                   ``hybrid_router.client`` reads into
                                   ``RouterCallError.retry_after``
=================================  ==========================================================

An error that declares neither adds no metadata.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from router.errors import RouterError

#: ``google.rpc.ErrorInfo.domain`` of every reason the router sends.
DOMAIN = "hybrid-router"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRY_AFTER_KEY = "retry-after"

Metadata = tuple[tuple[str, str | bytes], ...]


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def trailing_metadata(exc: RouterError, code: grpc.StatusCode) -> Metadata:
    """The metadata that carries ``exc``'s reason and retry delay (``()`` for neither)."""
    retry_after = exc.retry_after_s
    if not exc.error_reason and retry_after is None:
        return ()
    status = status_pb2.Status(code=code.value[0], message=exc.message)
    if exc.error_reason:
        status.details.append(
            _any(
                error_details_pb2.ErrorInfo(
                    reason=exc.error_reason, domain=DOMAIN, metadata=dict(exc.error_metadata)
                )
            )
        )
    out: list[tuple[str, str | bytes]] = []
    if retry_after is not None:
        delay = max(0.0, retry_after)
        seconds = math.floor(delay)
        nanos = min(int(round((delay - seconds) * 1e9)), 999_999_999)
        status.details.append(
            _any(
                error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)
                )
            )
        )
        out.append((RETRY_AFTER_KEY, f"{delay:.3f}"))
    out.append((STATUS_DETAILS_KEY, status.SerializeToString()))
    return tuple(out)


def read_details(
    metadata: Iterable[tuple[str, Any]] | None,
) -> tuple[error_details_pb2.ErrorInfo | None, error_details_pb2.RetryInfo | None]:
    """The ErrorInfo and RetryInfo in a call's trailing metadata (None where absent)."""
    info: error_details_pb2.ErrorInfo | None = None
    retry: error_details_pb2.RetryInfo | None = None
    for key, value in metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
    return info, retry
