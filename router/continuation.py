"""Continuing an answer on another backend after a failure mid-stream (pure).

With ``continue_on_failure`` (the request's, or its tenant's), when the answering backend
fails after tokens were streamed, dispatch sends the next candidate of the plan the
prompt plus the text already streamed, and relays what follows, so the caller receives
one answer (docs/reliability.md):

- ``prefill``, for a backend with the ``prefill`` capability (Anthropic, Bedrock, the
  ModelService engines): the text so far is an open assistant turn that the model goes
  on writing. Anthropic and Bedrock refuse a final assistant turn ending in whitespace:
  that whitespace is held back and the continuation's own leading whitespace takes its
  place (:func:`join`).
- ``instruction``, for the others (an OpenAI-compatible API has no prefill): the text so
  far as the assistant's turn, then a user turn asking to continue from exactly there.
  The seam is then up to the model.
"""

from __future__ import annotations

from dataclasses import replace

from router.types import BackendSpec, InferenceRequest, Message, Role

PREFILL = "prefill"
INSTRUCTION = "instruction"
#: The capability of a backend that continues an open assistant turn.
CAPABILITY = "prefill"
#: Adapters whose provider refuses a final assistant turn that ends in whitespace.
_NO_TRAILING_SPACE = frozenset({"anthropic", "bedrock"})

INSTRUCTION_TEXT = (
    "Your previous answer, above, was cut off. Continue it from exactly where it stops: "
    "do not repeat any of it and do not add anything before the continuation."
)


def continuation_request(
    request: InferenceRequest, so_far: str, tokens_so_far: int, spec: BackendSpec
) -> tuple[InferenceRequest, str, str]:
    """``(request for spec, method, held)``: ``held`` is trailing whitespace of ``so_far``
    not sent (the caller has it already; see :func:`join`)."""
    max_out = max(1, request.max_output_tokens - tokens_so_far)
    if CAPABILITY in spec.capabilities:
        sent = so_far.rstrip() if spec.kind in _NO_TRAILING_SPACE else so_far
        messages = (*request.messages, Message(Role.ASSISTANT, sent))
        out = replace(request, messages=messages, prefill=True, max_output_tokens=max_out)
        return out, PREFILL, so_far[len(sent) :]
    messages = (
        *request.messages,
        Message(Role.ASSISTANT, so_far),
        Message(Role.USER, INSTRUCTION_TEXT),
    )
    return (
        replace(request, messages=messages, prefill=False, max_output_tokens=max_out),
        (INSTRUCTION),
        "",
    )


def join(held: str, text: str) -> str:
    """The continuation's first text as the caller should get it, when ``held`` trailing
    whitespace of the text so far was not sent: the caller already has it, so a
    continuation starting with it (or with other whitespace) loses its leading
    whitespace."""
    if not held:
        return text
    if text.startswith(held):
        return text[len(held) :]
    return text.lstrip() if text[:1].isspace() else text
