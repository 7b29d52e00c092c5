"""Request text helpers shared by the engines: the Gemma 3 prompt, checks, stop strings.

Gemma 3 turn format: Gemma has two roles, ``user`` and ``model``, and no system role.
``render_gemma`` follows the official Gemma 3 chat template:

- system texts are joined with a blank line and put at the start of the first user turn
  (followed by a blank line); when the conversation does not start with a user turn they
  form a user turn of their own;
- ``assistant`` becomes ``model``;
- contents are stripped of surrounding whitespace (the template's ``| trim``);
- every turn is closed with ``<end_of_turn>`` and the prompt ends with the open model turn.

The text carries no ``<bos>``: tokenizers add it (llama.cpp: ``add_bos=True``). Tokenize
with special tokens enabled (llama.cpp: ``special=True``) so that the turn markers are
single tokens. The router counts prompt tokens with a copy of this function
(``router.tokenizers.render_gemma``: the router may not import ``serving``), so its output
must stay stable: change both together (tests/unit/test_tokenizers.py compares them).
"""

from __future__ import annotations

from serving.engines.base import EngineError, EngineRequest

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
#: Strings that end a model answer (a base model may go on to write the next turn).
STOP_STRINGS: tuple[str, ...] = (END_OF_TURN, START_OF_TURN)

_ROLES = {"user": "user", "assistant": "model"}


def render_gemma(messages: tuple[tuple[str, str], ...]) -> str:
    """Render (role, content) pairs as a Gemma 3 prompt ending with an open model turn.

    Raises ValueError naming the field for empty ``messages`` or an unknown role.
    """
    if not messages:
        raise ValueError("messages: must not be empty")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for index, (role, content) in enumerate(messages):
        if role == "system":
            system.append(content.strip())
        elif role in _ROLES:
            turns.append((_ROLES[role], content.strip()))
        else:
            raise ValueError(
                f"messages[{index}].role: unknown role {role!r} "
                "(expected 'system', 'user' or 'assistant')"
            )
    if system:
        preamble = "\n\n".join(system)
        if turns and turns[0][0] == "user":
            turns[0] = ("user", f"{preamble}\n\n{turns[0][1]}")
        else:
            turns.insert(0, ("user", preamble))
    parts = [f"{START_OF_TURN}{role}\n{text}{END_OF_TURN}\n" for role, text in turns]
    parts.append(f"{START_OF_TURN}model\n")
    return "".join(parts)


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
