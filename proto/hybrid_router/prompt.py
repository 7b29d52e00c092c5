"""Prompt formats shared by the engines and the router's exact token counts.

The llama.cpp engine (``serving.engines``) feeds the model this text, and the router
(``router.tokenizers``) tokenizes this very text for an exact prompt count: one function,
so the two can never drift. Standard library only (this package ships with every
deployable).

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
single tokens.
"""

from __future__ import annotations

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"

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
