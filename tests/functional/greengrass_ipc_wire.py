"""A local "nucleus": a Unix-socket server speaking Greengrass IPC's wire format.

Greengrass IPC is eventstream RPC (aws-c-event-stream) over the Unix socket named by
``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT``. Every message is an AWS event
stream frame (``eventstream_codec``: prelude CRC and message CRC, checked here on every
message the client sends) with the RPC headers, all int32:

- ``:message-type``: APPLICATION_MESSAGE 0, APPLICATION_ERROR 1, PING 2, PING_RESPONSE 3,
  CONNECT 4, CONNECT_ACK 5, PROTOCOL_ERROR 6, INTERNAL_ERROR 7;
- ``:message-flags``: CONNECTION_ACCEPTED 1, TERMINATE_STREAM 2;
- ``:stream-id``: 0 for connection messages, then 1, 2, ... one per operation, chosen by
  the client; the first message of a stream names the ``operation`` (string header).

What this server does, as the nucleus does it (its Java eventstream RPC server,
``ServiceOperationMappingContinuationHandler`` / ``OperationContinuationHandler``, and
``ConfigStoreIPCEventStreamAgent`` in aws-greengrass-nucleus):

- The first message must be CONNECT, with ``:version`` ``0.1.0`` and the payload
  ``{"authToken": <SVCUID>}``; anything else first gets a PROTOCOL_ERROR and the
  connection is closed. A known token gets CONNECT_ACK with CONNECTION_ACCEPTED; an unknown
  token (or another version) gets CONNECT_ACK without it, and the connection is closed.
- Operation messages carry ``:content-type: application/json`` and ``service-model-type``
  (``aws.greengrass#<Shape>``). A request/response operation answers once with
  TERMINATE_STREAM; ``SubscribeToConfigurationUpdate`` answers, keeps the stream open and
  sends one ``ConfigurationUpdateEvents`` per changed configuration leaf (its ``keyPath``
  relative to the component's configuration), until the client terminates the stream.
- Modelled errors are APPLICATION_ERROR + TERMINATE_STREAM, ``service-model-type`` the
  error shape, payload the shape's members plus ``_service`` / ``_message`` /
  ``_errorCode``: ``ResourceNotFoundError`` ("Key not found") from GetConfiguration and
  SubscribeToConfigurationUpdate, ``UnauthorizedError`` from PublishToIoTCore on a topic
  the component's ``accessControl`` (``aws.greengrass.ipc.mqttproxy``) does not allow.
  An operation this server does not know is answered as the nucleus answers one it does
  not support: APPLICATION_ERROR with only ``:content-type``.
- PING gets a PING_RESPONSE with the PING's non-``:`` headers and payload.

``PublishToIoTCore`` is recorded (component, topic, QoS, decoded payload); nothing goes to
IoT Core. ``corrupt_next`` flips the message CRC of the next frame this server sends (the
client must reject it). Test-facing methods (``add_component``, ``set_configuration``,
``wait_for``) run on the server's event loop.

Faults for reconnect tests: ``drop_connections()`` aborts every client connection (the
socket closed under the client, as a crashed nucleus leaves it); ``stop()`` also stops
listening and removes the socket file, and ``start()`` listens again on the same path (a
nucleus restart; configuration, recorded calls and publishes are kept);
``end_subscriptions()`` ends the configuration update streams with TERMINATE_STREAM and
keeps the connections; ``hold_connects`` records a CONNECT and never answers it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventstream_codec import (
    INT32,
    STRING,
    FrameError,
    Header,
    Message,
    corrupt,
    encode_message,
    read_message,
)
from testkit import wait_until

log = logging.getLogger("greengrass_ipc_wire")

APPLICATION_MESSAGE, APPLICATION_ERROR, PING, PING_RESPONSE = 0, 1, 2, 3
CONNECT, CONNECT_ACK, PROTOCOL_ERROR, INTERNAL_ERROR = 4, 5, 6, 7
CONNECTION_ACCEPTED, TERMINATE_STREAM = 1, 2
VERSION = "0.1.0"
SERVICE = "aws.greengrass#GreengrassCoreIPC"
JSON = "application/json"

GET_CONFIGURATION = "aws.greengrass#GetConfiguration"
SUBSCRIBE_TO_CONFIGURATION_UPDATE = "aws.greengrass#SubscribeToConfigurationUpdate"
PUBLISH_TO_IOT_CORE = "aws.greengrass#PublishToIoTCore"
MQTT_PROXY = "aws.greengrass.ipc.mqttproxy"
KEY_NOT_FOUND = "Key not found"


@dataclass(frozen=True)
class Policy:
    """One ``accessControl`` policy: operations (or ``*``) on resources (MQTT filters)."""

    operations: tuple[str, ...]
    resources: tuple[str, ...]


@dataclass
class Component:
    name: str
    token: str
    configuration: dict[str, Any]
    #: accessControl, by IPC service (e.g. ``aws.greengrass.ipc.mqttproxy``).
    access: dict[str, list[Policy]] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectAttempt:
    token: str | None
    version: str | None
    component: str | None  # None: refused
    accepted: bool


@dataclass(frozen=True)
class Published:
    component: str
    topic: str
    qos: str
    payload: bytes
    retain: bool | None


@dataclass
class _Subscription:
    conn: _Connection
    stream_id: int
    component: str
    key_path: tuple[str, ...]


class OperationError(Exception):
    """A modelled error: APPLICATION_ERROR with this shape."""

    def __init__(self, shape: str, message: str, **members: Any) -> None:
        super().__init__(message)
        self.shape = shape
        self.message = message
        self.members = members

    def payload(self) -> bytes:
        body = {
            "_service": SERVICE,
            "_message": self.message,
            "_errorCode": self.shape,
            "message": self.message,
            **self.members,
        }
        return json.dumps(body).encode()


def mqtt_match(pattern: str, topic: str) -> bool:
    """An MQTT topic filter (``+`` one level, ``#`` the rest) or ``*`` (anything)."""
    if pattern == "*":
        return True
    p, t = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(p) == len(t)


def leaves(conf: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf of a configuration by its key path (empty objects are leaves too)."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in conf.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and value:
            out.update(leaves(value, path))
        else:
            out[path] = value
    return out


class FakeNucleus:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.components: dict[str, Component] = {}
        self.connects: list[ConnectAttempt] = []
        self.published: list[Published] = []
        #: (component, operation, request payload) of every operation call.
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        #: Framing errors found in what clients sent (bad CRCs, bad lengths).
        self.frame_errors: list[str] = []
        #: PROTOCOL_ERROR messages this server sent, and why.
        self.protocol_errors: list[str] = []
        self.subscriptions: list[_Subscription] = []
        #: Flip the message CRC of the next frame sent (a fault for the client to catch).
        self.corrupt_next = False
        #: Record CONNECT messages but never answer them (a nucleus that hangs).
        self.hold_connects = False
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Connection] = set()

    # --- setup -------------------------------------------------------------------------

    def add_component(
        self,
        name: str,
        token: str,
        configuration: Mapping[str, Any],
        access: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Component:
        """``access`` is a recipe's ``accessControl`` (service -> policy id -> policy)."""
        policies = {
            service: [
                Policy(tuple(p.get("operations", ())), tuple(p.get("resources", ())))
                for p in by_id.values()
            ]
            for service, by_id in (access or {}).items()
        }
        comp = Component(name, token, json.loads(json.dumps(configuration)), policies)
        self.components[name] = comp
        return comp

    async def start(self) -> FakeNucleus:
        """Listen on ``socket_path`` (again, after :meth:`stop`)."""
        self._server = await asyncio.start_unix_server(self._serve, path=self.socket_path)
        return self

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return len(self._conns)

    def drop_connections(self) -> int:
        """Abort every client connection (no goodbye on the wire); returns how many."""
        conns = list(self._conns)
        for conn in conns:
            conn.abort()
        return len(conns)

    async def stop(self) -> None:
        """Stop as a nucleus does: no more listening, the socket file gone, every
        connection dropped. :meth:`start` brings it back on the same path."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self.drop_connections()
        await self.wait_for(lambda: not self._conns, "every connection closed")

    async def end_subscriptions(self) -> int:
        """End every configuration update stream (TERMINATE_STREAM), connections kept."""
        subs, self.subscriptions = list(self.subscriptions), []
        for sub in subs:
            await sub.conn.send(APPLICATION_MESSAGE, TERMINATE_STREAM, sub.stream_id)
            sub.conn.open_streams.discard(sub.stream_id)
        return len(subs)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    # --- what a deployment does ----------------------------------------------------------

    async def set_configuration(self, component: str, configuration: Mapping[str, Any]) -> int:
        """Replace a component's configuration, as a deployment does; notify subscribers.

        Returns the number of ConfigurationUpdateEvents sent (one per changed leaf per
        subscription that covers it).
        """
        comp = self.components[component]
        before, after = leaves(comp.configuration), leaves(configuration)
        comp.configuration = json.loads(json.dumps(configuration))
        changed = sorted(
            path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
        )
        sent = 0
        for sub in list(self.subscriptions):
            if sub.component != component:
                continue
            for path in changed:
                if path[: len(sub.key_path)] == sub.key_path:
                    event = {
                        "configurationUpdateEvent": {"componentName": component, "keyPath": path}
                    }
                    await sub.conn.send_stream(
                        sub.stream_id, "aws.greengrass#ConfigurationUpdateEvents", event
                    )
                    sent += 1
        return sent

    async def wait_for(
        self, predicate: Callable[[], bool], what: str, timeout_s: float = 30.0
    ) -> None:
        await wait_until(predicate, f"the nucleus to see {what}", timeout_s)

    def published_json(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p.payload) for p in self.published if p.topic == topic]

    # --- the wire ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        self._conns.add(conn)
        try:
            await conn.run()
        finally:
            self._conns.discard(conn)
            self.subscriptions = [s for s in self.subscriptions if s.conn is not conn]
            conn.close()


class _Connection:
    def __init__(
        self, nucleus: FakeNucleus, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.nucleus = nucleus
        self.reader = reader
        self.writer = writer
        self.component: Component | None = None
        self.last_stream_id = 0
        self.open_streams: set[int] = set()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    async def send(
        self,
        message_type: int,
        flags: int,
        stream_id: int,
        headers: Sequence[Header] = (),
        payload: bytes = b"",
    ) -> None:
        frame = encode_message(
            [
                *headers,
                Header(":message-type", INT32, message_type),
                Header(":message-flags", INT32, flags),
                Header(":stream-id", INT32, stream_id),
            ],
            payload,
        )
        if self.nucleus.corrupt_next:
            self.nucleus.corrupt_next = False
            frame = corrupt(frame)
        self.writer.write(frame)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def send_stream(
        self, stream_id: int, shape: str, body: Mapping[str, Any], *, terminate: bool = False
    ) -> None:
        await self.send(
            APPLICATION_MESSAGE,
            TERMINATE_STREAM if terminate else 0,
            stream_id,
            [Header.string(":content-type", JSON), Header.string("service-model-type", shape)],
            json.dumps(body).encode(),
        )
        if terminate:
            self.open_streams.discard(stream_id)

    async def send_error(self, stream_id: int, err: OperationError) -> None:
        await self.send(
            APPLICATION_ERROR,
            TERMINATE_STREAM,
            stream_id,
            [Header.string(":content-type", JSON), Header.string("service-model-type", err.shape)],
            err.payload(),
        )
        self.open_streams.discard(stream_id)

    async def protocol_error(self, why: str) -> None:
        self.nucleus.protocol_errors.append(why)
        await self.send(
            PROTOCOL_ERROR,
            0,
            0,
            [Header.string(":content-type", JSON)],
            json.dumps({"message": why}).encode(),
        )
        self.close()

    async def run(self) -> None:
        while True:
            try:
                msg = await read_message(self.reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except FrameError as exc:
                # aws-c-event-stream's decoder shuts the channel down on a bad frame.
                self.nucleus.frame_errors.append(str(exc))
                return
            if not await self.handle(msg):
                return

    async def handle(self, msg: Message) -> bool:
        """False: the connection is to be closed."""
        mtype = msg.get(":message-type", INT32)
        flags = msg.get(":message-flags", INT32)
        stream_id = msg.get(":stream-id", INT32)
        if mtype is None or flags is None or stream_id is None:
            await self.protocol_error(
                "the :message-type, :message-flags and :stream-id headers (int32) are required"
            )
            return False
        if self.component is None:
            if mtype != CONNECT or stream_id != 0:
                await self.protocol_error("a CONNECT message must be received first")
                return False
            return await self.connect(msg)
        if stream_id == 0:
            if mtype == PING:
                echo = [h for h in msg.headers if not h.name.startswith(":")]
                await self.send(PING_RESPONSE, 0, 0, echo, msg.payload)
                return True
            if mtype == PING_RESPONSE:
                return True
            await self.protocol_error(f"message type {mtype} is not valid on stream 0")
            return False
        if mtype not in (APPLICATION_MESSAGE, APPLICATION_ERROR):
            await self.protocol_error("only application messages may be sent on a stream")
            return False
        if stream_id > self.last_stream_id:
            if stream_id != self.last_stream_id + 1:
                await self.protocol_error(f"stream-id {stream_id}: new streams count up by one")
                return False
            self.last_stream_id = stream_id
            operation = msg.get("operation", STRING)
            if not operation:
                await self.protocol_error("the first message of a stream names its operation")
                return False
            self.open_streams.add(stream_id)
            await self.operation(stream_id, operation, msg)
        elif flags & TERMINATE_STREAM:  # the client closes a stream (e.g. unsubscribes)
            self.open_streams.discard(stream_id)
            self.nucleus.subscriptions = [
                s
                for s in self.nucleus.subscriptions
                if not (s.conn is self and s.stream_id == stream_id)
            ]
        return True

    async def connect(self, msg: Message) -> bool:
        version = msg.get(":version", STRING)
        token: str | None = None
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            token = json.loads(msg.payload).get("authToken")
        comp = next((c for c in self.nucleus.components.values() if c.token == token), None)
        accepted = comp is not None and version == VERSION
        if self.nucleus.hold_connects:
            self.nucleus.connects.append(ConnectAttempt(token, version, None, False))
            return True  # never answered; the client gives up and closes
        self.nucleus.connects.append(
            ConnectAttempt(token, version, comp.name if comp and accepted else None, accepted)
        )
        if not accepted:
            await self.send(CONNECT_ACK, 0, 0)
            self.close()
            return False
        self.component = comp
        await self.send(CONNECT_ACK, CONNECTION_ACCEPTED, 0)
        return True

    async def operation(self, stream_id: int, operation: str, msg: Message) -> None:
        assert self.component is not None
        handler = {
            GET_CONFIGURATION: self.get_configuration,
            SUBSCRIBE_TO_CONFIGURATION_UPDATE: self.subscribe_to_configuration_update,
            PUBLISH_TO_IOT_CORE: self.publish_to_iot_core,
        }.get(operation)
        if handler is None:
            body = {"error": "Unsupported Operation", "message": f"{operation} is unsupported."}
            await self.send(
                APPLICATION_ERROR,
                TERMINATE_STREAM,
                stream_id,
                [Header.string(":content-type", JSON)],
                json.dumps(body).encode(),
            )
            return
        request_shape = operation + "Request"
        try:
            if msg.get(":content-type", STRING) != JSON:
                raise OperationError("aws.greengrass#ServiceError", "content type must be JSON")
            if msg.get("service-model-type", STRING) != request_shape:
                raise OperationError(
                    "aws.greengrass#ServiceError", f"{operation} takes a {request_shape}"
                )
            try:
                request = json.loads(msg.payload or b"{}")
            except ValueError:
                raise OperationError("aws.greengrass#ServiceError", "invalid JSON") from None
            self.nucleus.calls.append((self.component.name, operation, request))
            await handler(stream_id, request)
        except OperationError as err:
            await self.send_error(stream_id, err)

    def _config_node(self, request: Mapping[str, Any]) -> tuple[Component, tuple[str, ...], Any]:
        assert self.component is not None
        name = request.get("componentName") or self.component.name
        comp = self.nucleus.components.get(name)
        if comp is None:
            raise OperationError("aws.greengrass#ResourceNotFoundError", KEY_NOT_FOUND)
        path = tuple(request.get("keyPath") or ())
        node: Any = comp.configuration
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                raise OperationError("aws.greengrass#ResourceNotFoundError", KEY_NOT_FOUND)
            node = node[key]
        return comp, path, node

    async def get_configuration(self, stream_id: int, request: Mapping[str, Any]) -> None:
        comp, path, node = self._config_node(request)
        # A leaf comes back as {its key: value}; an object as itself.
        value = node if isinstance(node, Mapping) else {path[-1]: node}
        await self.send_stream(
            stream_id,
            "aws.greengrass#GetConfigurationResponse",
            {"componentName": comp.name, "value": value},
            terminate=True,
        )

    async def subscribe_to_configuration_update(
        self, stream_id: int, request: Mapping[str, Any]
    ) -> None:
        comp, path, _ = self._config_node(request)
        self.nucleus.subscriptions.append(_Subscription(self, stream_id, comp.name, path))
        await self.send_stream(
            stream_id, "aws.greengrass#SubscribeToConfigurationUpdateResponse", {}
        )

    async def publish_to_iot_core(self, stream_id: int, request: Mapping[str, Any]) -> None:
        assert self.component is not None
        topic = request.get("topicName")
        qos = request.get("qos")
        if not topic or qos not in ("0", "1"):
            raise OperationError(
                "aws.greengrass#InvalidArgumentsError", "topicName and qos (0 or 1) are required"
            )
        allowed = any(
            (PUBLISH_TO_IOT_CORE in p.operations or "*" in p.operations)
            and any(mqtt_match(r, topic) for r in p.resources)
            for p in self.component.access.get(MQTT_PROXY, [])
        )
        if not allowed:
            raise OperationError(
                "aws.greengrass#UnauthorizedError",
                f"Principal {self.component.name} is not authorized to perform "
                f"{MQTT_PROXY}:{PUBLISH_TO_IOT_CORE} on resource {topic}",
            )
        payload = base64.b64decode(request["payload"]) if "payload" in request else b""
        self.nucleus.published.append(
            Published(self.component.name, topic, qos, payload, request.get("retain"))
        )
        await self.send_stream(
            stream_id, "aws.greengrass#PublishToIoTCoreResponse", {}, terminate=True
        )
