"""Prompt formats shared by the engines and the router's exact token counts.

The llama.cpp engine (``serving.engines``) feeds the model this text, and the router
(``router.tokenizers``) tokenizes this very text for an exact prompt count: one function,
:func:`render_chat`, so the two can never drift. Standard library only, plus ``jinja2``
imported when a model's own chat template is rendered (this package ships with every
deployable; the router and serving extras install jinja2).

Messages are plain dicts in the shape Hugging Face chat templates read (build them with
:func:`chat_message`; tools with :func:`tool_definition`)::

    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}
    {"role": "tool", "content": "4.5", "tool_call_id": "call_1", "name": "get_weather"}

**A model's own template** (:class:`ChatTemplate`, ``tokenizer.chat_template`` of a GGUF
file) is rendered the way Hugging Face and llama.cpp do: a sandboxed Jinja environment
(``ImmutableSandboxedEnvironment``, ``trim_blocks``, ``lstrip_blocks``, the
``loopcontrols`` extension), ``raise_exception``, ``strftime_now``, a ``tojson`` that
keeps non-ASCII text, and the variables ``messages``, ``tools`` (only when the request has
tools), ``add_generation_prompt=True``, ``bos_token`` and ``eos_token``. A rendered
leading ``bos_token`` is removed when the tokenizer adds BOS itself, so BOS is never
doubled.

**Without a template** the Gemma 3 turn format is used (``render_gemma``): Gemma has two
roles, ``user`` and ``model``, and no system role. ``render_gemma`` follows the official
Gemma 3 chat template:

- system texts are joined with a blank line and put at the start of the first user turn
  (followed by a blank line); when the conversation does not start with a user turn they
  form a user turn of their own;
- ``assistant`` becomes ``model``;
- contents are stripped of surrounding whitespace (the template's ``| trim``);
- every turn is closed with ``<end_of_turn>`` and the prompt ends with the open model turn.

Tools in that format: their definitions follow the system texts with an instruction to
answer with one JSON object ``{"name": ..., "arguments": {...}}``; an assistant turn's
calls are written in that form, and a tool's result is a user turn.

The text carries no ``<bos>``: tokenizers add it (llama.cpp: ``add_bos=True``). Tokenize
with special tokens enabled (llama.cpp: ``special=True``) so that the turn markers are
single tokens.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
#: The GGUF metadata key of a model's chat template.
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
ROLES = ("system", "user", "assistant", "tool")
#: How the Gemma format (no template of its own) asks for a tool call.
TOOLS_INSTRUCTION = (
    "You can call the tools below. To call one, answer with only a JSON object "
    '{"name": <the tool\'s name>, "arguments": <an object of its parameters>} and '
    "nothing else."
)

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


# --- messages and tools as templates read them -------------------------------------------


def chat_message(
    role: str,
    content: str,
    *,
    tool_calls: Iterable[tuple[str, str, str]] = (),
    tool_call_id: str = "",
    name: str = "",
) -> dict[str, Any]:
    """One message as chat templates read it. ``tool_calls``: (id, name, arguments JSON
    text) triples; the arguments become a dict (templates write them with ``tojson``)
    unless they are not a JSON object, when the text is kept."""
    message: dict[str, Any] = {"role": role, "content": content}
    calls = [
        {"id": cid, "type": "function", "function": {"name": cname, "arguments": _args(args)}}
        for cid, cname, args in tool_calls
    ]
    if calls:
        message["tool_calls"] = calls
    if tool_call_id:
        message["tool_call_id"] = tool_call_id
    if name:
        message["name"] = name
    return message


def tool_definition(name: str, description: str, parameters_json: str) -> dict[str, Any]:
    """A tool as chat templates read it (the OpenAI function shape). ``parameters_json``
    "" means no arguments (an empty object schema)."""
    parameters = json.loads(parameters_json) if parameters_json else None
    if not isinstance(parameters, dict):
        parameters = {"type": "object", "properties": {}}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def _args(text: str) -> Any:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


# --- the model's own template ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """A model's chat template and the special tokens it is rendered with.

    ``source`` "" means the model has none: :func:`render_chat` uses the Gemma 3 format.
    ``adds_bos``: the tokenizer adds BOS itself (a rendered leading ``bos_token`` is cut).
    """

    source: str = ""
    bos_token: str = ""
    eos_token: str = ""
    adds_bos: bool = True

    @classmethod
    def from_llama(cls, llm: Any) -> ChatTemplate:
        """The template of a loaded ``llama_cpp.Llama`` (``vocab_only`` is enough): its GGUF
        ``tokenizer.chat_template`` and BOS/EOS texts, read as llama-cpp-python does."""
        source = str((getattr(llm, "metadata", None) or {}).get(CHAT_TEMPLATE_KEY) or "")
        model = llm._model
        bos, eos = llm.token_bos(), llm.token_eos()
        return cls(
            source=source,
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            adds_bos=bool(model.add_bos_token()),
        )


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] = (),
    template: ChatTemplate | None = None,
    continue_final: bool = False,
) -> str:
    """The prompt for ``messages`` (and ``tools``, rendered only when given), ending with
    the open assistant turn: the model's own template, else the Gemma 3 format.

    ``continue_final``: the last message is an assistant turn to continue (a prefill):
    the prompt ends with its text, the turn left open (no end-of-turn marker).

    Raises ValueError naming the field: empty messages, an unknown role, a template that
    is not valid Jinja or that refuses the conversation (its ``raise_exception``).
    """
    if not messages:
        raise ValueError("messages: must not be empty")
    for index, message in enumerate(messages):
        if message.get("role") not in ROLES:
            raise ValueError(
                f"messages[{index}].role: unknown role {message.get('role')!r} "
                "(expected 'system', 'user', 'assistant' or 'tool')"
            )
    if continue_final:
        return _render_open(messages, tools, template)
    if template is None or not template.source:
        return render_gemma(gemma_pairs(messages, tools))
    return _render_template(template, messages, tools)


#: Stands in for the continued turn's text while the template renders it.
_PREFILL_MARK = "\x00hybrid-router-prefill\x00"


def _render_open(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Any], template: ChatTemplate | None
) -> str:
    last = messages[-1]
    if last.get("role") != "assistant" or len(messages) < 2:
        raise ValueError(
            "messages: continuing a turn needs an assistant message last, after the question"
        )
    text = str(last.get("content") or "")
    head = messages[:-1]
    if template is None or not template.source:
        return render_gemma(gemma_pairs(head, tools)) + text  # ends with the open model turn
    marked = [*head, {**last, "content": _PREFILL_MARK}]
    rendered = _render_template(template, marked, tools, generation_prompt=False)
    at = rendered.rfind(_PREFILL_MARK)
    if at < 0:
        raise ValueError("messages: the model's chat template drops the assistant's text")
    return rendered[:at] + text


def _render_template(
    template: ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any],
    *,
    generation_prompt: bool = True,
) -> str:
    compiled = _compile(template.source)
    variables: dict[str, Any] = {
        "messages": [dict(m) for m in messages],
        "add_generation_prompt": generation_prompt,
        "bos_token": template.bos_token,
        "eos_token": template.eos_token,
    }
    if tools:
        variables["tools"] = [dict(t) for t in tools]
    try:
        text = str(compiled.render(**variables))
    except Exception as exc:  # raise_exception's TemplateError, or the template's own bug
        raise ValueError(f"messages: the model's chat template refused them: {exc}") from None
    if template.adds_bos and template.bos_token and text.startswith(template.bos_token):
        text = text[len(template.bos_token) :]
    return text


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            value,
            ensure_ascii=ensure_ascii,
            indent=indent,
            separators=separators,
            sort_keys=sort_keys,
        )

    def strftime_now(fmt: str) -> str:
        import datetime

        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(
            f"{CHAT_TEMPLATE_KEY}: not a valid Jinja template (line {exc.lineno}: {exc.message})"
        ) from None


# --- the Gemma format's tools ------------------------------------------------------------


def gemma_pairs(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()
) -> tuple[tuple[str, str], ...]:
    """(role, content) pairs for ``render_gemma``: tool definitions as a system text after
    the others, calls as ``{"name", "arguments"}`` JSON lines, results as user turns."""
    pairs: list[tuple[str, str]] = []
    for message in messages:
        role, content = str(message["role"]), str(message.get("content") or "")
        if role == "tool":
            tool = message.get("name") or "the tool"
            call = f" ({message['tool_call_id']})" if message.get("tool_call_id") else ""
            pairs.append(("user", f"Result of {tool}{call}:\n{content}"))
            continue
        calls = [
            json.dumps(
                {"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
                ensure_ascii=False,
            )
            for c in message.get("tool_calls") or ()
        ]
        if calls:
            content = "\n".join([content.strip(), *calls]) if content.strip() else "\n".join(calls)
        pairs.append((role, content))
    if tools:
        lines = [json.dumps(t.get("function", t), ensure_ascii=False) for t in tools]
        pairs.append(("system", TOOLS_INSTRUCTION + "\n\n" + "\n".join(lines)))
    return tuple(pairs)
