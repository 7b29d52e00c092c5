"""Request text helpers shared by the engines: the prompt, checks, stop strings.

The Gemma 3 prompt itself (``render_gemma``, the turn markers) lives in
``hybrid_router.prompt``, shared with the router's exact token counts.
"""

from __future__ import annotations

from hybrid_router.prompt import END_OF_TURN, START_OF_TURN, render_gemma

from serving.engines.base import EngineError, EngineRequest

__all__ = ["END_OF_TURN", "START_OF_TURN", "STOP_STRINGS", "render_gemma"]

#: Strings that end a model answer (a base model may go on to write the next turn).
STOP_STRINGS: tuple[str, ...] = (END_OF_TURN, START_OF_TURN)


class StopMatcher:
    """Finds stop strings in streamed text without emitting a partial match.

    ``feed`` returns the text that is safe to emit and whether a stop string was found
    (the output ends before it). Text that could be the start of a stop string is held
    back until the next piece decides; ``flush`` returns it at the end of the stream.
    """

    __slots__ = ("_held", "_stops")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buffer = self._held + text
        found = [index for stop in self._stops if (index := buffer.find(stop)) >= 0]
        if found:
            self._held = ""
            return buffer[: min(found)], True
        keep = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:size]):
                    keep = size
                    break
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def validate_request(request: EngineRequest) -> None:
    """Checks shared by engines; raises EngineError("field: problem", "invalid")."""
    if not request.messages:
        raise EngineError("messages: must not be empty", "invalid")
    if request.max_output_tokens <= 0:
        raise EngineError("max_output_tokens: must be > 0", "invalid")
    for index, (role, _) in enumerate(request.messages):
        if role not in ("system", "user", "assistant"):
            raise EngineError(
                f"messages[{index}].role: unknown role {role!r} "
                "(expected 'system', 'user' or 'assistant')",
                "invalid",
            )
    if request.temperature is not None and request.temperature < 0:
        raise EngineError("sampling.temperature: must be >= 0", "invalid")
    if request.top_p is not None and not 0 < request.top_p <= 1:
        raise EngineError("sampling.top_p: must be in (0, 1]", "invalid")


def check_fits(prompt_tokens: int, max_output_tokens: int, context_window: int) -> None:
    """Raise EngineError(..., "too_large") when prompt + max output exceed the window."""
    if prompt_tokens + max_output_tokens > context_window:
        raise EngineError(
            f"prompt {prompt_tokens} tokens + max_output_tokens {max_output_tokens} "
            f"exceed the context window of {context_window} tokens",
            "too_large",
        )
