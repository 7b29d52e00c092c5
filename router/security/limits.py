"""Request limits: size of one request, open streams per connection and per tenant.

Stream counters on the event loop, no locks: ``acquire`` raises ResourceExhausted naming the
limit, else returns a ``Slot`` to ``release`` when the stream ends. A refused stream
never touches the counters of the streams already open.
"""

from __future__ import annotations

from collections.abc import Sequence

# The tree's classes (router.errors); importable from here.
from router.errors import RequestLimitExceeded, StreamLimitExceeded


class Slot:
    __slots__ = ("_limits", "_peer", "_tenant", "_released")

    def __init__(self, limits: StreamLimits, peer: str | None, tenant: str) -> None:
        self._limits = limits
        self._peer = peer
        self._tenant = tenant
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._limits._dec(self._peer, self._tenant)


class StreamLimits:
    def __init__(self, per_connection: int = 0) -> None:
        #: 0: no app-level per-connection limit.
        self.per_connection = per_connection
        self._by_peer: dict[str, int] = {}
        self._by_tenant: dict[str, int] = {}

    def open_streams(self, tenant: str) -> int:
        return self._by_tenant.get(tenant, 0)

    def acquire(self, peer: str, tenant: str, tenant_limit: int, *, limit_key: str) -> Slot:
        """Count one more stream for ``peer`` and ``tenant``.

        ``tenant_limit`` 0 means unlimited; ``limit_key`` is the config key that set it
        (named in the error).
        """
        per_conn = self.per_connection
        if per_conn:
            n = self._by_peer.get(peer, 0)
            if n >= per_conn:
                raise StreamLimitExceeded(
                    "max_streams_per_connection",
                    f"this connection already has {n} open streams, the limit "
                    f"(server.limits.max_streams_per_connection = {per_conn}); wait for one "
                    "to finish or open another connection",
                )
        if tenant_limit:
            n = self._by_tenant.get(tenant, 0)
            if n >= tenant_limit:
                who = f"tenant {tenant!r}" if tenant else "unauthenticated callers"
                raise StreamLimitExceeded(
                    "max_streams_per_tenant",
                    f"{who} already has {n} open streams, the limit ({limit_key} = "
                    f"{tenant_limit}); wait for one to finish",
                )
        if per_conn:
            self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        self._by_tenant[tenant] = self._by_tenant.get(tenant, 0) + 1
        return Slot(self, peer if per_conn else None, tenant)

    def _dec(self, peer: str | None, tenant: str) -> None:
        if peer is not None:
            n = self._by_peer.get(peer, 0) - 1
            if n > 0:
                self._by_peer[peer] = n
            else:
                self._by_peer.pop(peer, None)
        n = self._by_tenant.get(tenant, 0) - 1
        if n > 0:
            self._by_tenant[tenant] = n
        else:
            self._by_tenant.pop(tenant, None)


def check_request_size(contents: Sequence[str], max_messages: int, max_prompt_bytes: int) -> None:
    """Raise RequestLimitExceeded when a request has too many messages or prompt bytes.

    Cheap for requests far below the byte limit: a UTF-8 character takes 1 to 4 bytes, so
    the contents are only encoded when 4 x characters could exceed the limit.
    """
    n = len(contents)
    if n > max_messages:
        raise RequestLimitExceeded(
            "max_messages",
            "messages",
            f"{n} messages; this router accepts at most {max_messages} per request "
            f"(server.limits.max_messages)",
        )
    chars = 0
    for c in contents:
        chars += len(c)
    if chars * 4 <= max_prompt_bytes:
        return
    size = chars if chars > max_prompt_bytes else sum(len(c.encode("utf-8")) for c in contents)
    if size > max_prompt_bytes:
        raise RequestLimitExceeded(
            "max_prompt_bytes",
            "messages",
            f"{'at least ' if chars == size and chars > max_prompt_bytes else ''}{size} bytes of "
            f"message text; this router accepts at most {max_prompt_bytes} "
            "(server.limits.max_prompt_bytes); send less text",
        )
