"""The ModelService wire format to and from the engines' records.

One conversion for every place that serves an engine: the ModelService server
(``serving.model_server``), the Ray Serve replica (``serving.ray_app``) and the edge agent
(``greengrass.runner``, which wraps the same events in ``DeviceMessage``).
"""

from __future__ import annotations

import uuid

from hybrid_router.v1 import model_service_pb2 as mpb
from hybrid_router.v1 import types_pb2 as tpb

from serving.engines.base import EngineChunk, EngineError, EngineRequest

_ROLES = {tpb.ROLE_SYSTEM: "system", tpb.ROLE_USER: "user", tpb.ROLE_ASSISTANT: "assistant"}
_FINISH = {
    "stop": tpb.FINISH_REASON_STOP,
    "length": tpb.FINISH_REASON_LENGTH,
    "cancelled": tpb.FINISH_REASON_CANCELLED,
}


class BadRequest(EngineError):
    """A request field is invalid; the message names it (``error_class`` ``invalid``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "invalid")


def to_engine_request(request: mpb.ModelGenerateRequest) -> EngineRequest:
    """Proto -> EngineRequest; raises BadRequest naming the field."""
    messages = []
    for index, message in enumerate(request.messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise BadRequest(f"messages[{index}].role: must be system, user or assistant")
        messages.append((role, message.content))
    sampling = request.sampling
    return EngineRequest(
        request_id=request.request_id or uuid.uuid4().hex,
        messages=tuple(messages),
        max_output_tokens=request.max_output_tokens,
        temperature=sampling.temperature if sampling.HasField("temperature") else None,
        top_p=sampling.top_p if sampling.HasField("top_p") else None,
        top_k=sampling.top_k if sampling.HasField("top_k") else None,
        seed=sampling.seed if sampling.HasField("seed") else None,
        stop=tuple(sampling.stop),
    )


def event_for(chunk: EngineChunk) -> mpb.ModelGenerateEvent:
    """The ModelService event for an engine chunk (``delta``, or ``done`` with usage)."""
    if chunk.done:
        return mpb.ModelGenerateEvent(
            done=mpb.ModelDone(
                input_tokens=chunk.input_tokens,
                output_tokens=chunk.output_tokens,
                finish_reason=_FINISH.get(chunk.finish_reason, tpb.FINISH_REASON_UNSPECIFIED),
                queue_ms=chunk.queue_ms,
            )
        )
    return mpb.ModelGenerateEvent(delta=tpb.TextDelta(text=chunk.text, tokens=chunk.tokens))
