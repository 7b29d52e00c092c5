"""Prompt templates: named, versioned, immutable once published; rendered with typed
variables. Pure: no I/O (stores: router/templates/store.py).

A template version is a list of messages whose contents hold ``{{name}}`` placeholders,
and the variables it declares, each with a type (``string``, ``integer``, ``number``,
``boolean``) and, optionally, a default::

    name: support-answer
    version: "3"
    description: Answer a support question in the product's voice
    variables:
      product: {type: string}
      max_words: {type: integer, default: "120"}
    messages:
      - role: system
        content: "You answer questions about {{product}} in at most {{max_words}} words."

A request names the template and a version ("" = the version pinned for it) and gives the
variables as text; :func:`render` checks each against its type. A missing variable (no
default), an unknown one, or a value of the wrong type is an InvalidRequest naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from router.errors import InvalidRequest, RouterError
from router.types import Message, Role

TYPES = ("string", "integer", "number", "boolean")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]*)\s*\}\}")
_ROLES = {"system": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
#: The longest rendered variable value, characters.
MAX_VALUE_CHARS = 65_536


class TemplateError(RouterError, ValueError):
    """A template that cannot be published (INVALID_ARGUMENT): names the field."""

    grpc_code = "INVALID_ARGUMENT"


@dataclass(frozen=True, slots=True)
class Variable:
    type: str = "string"
    #: Used when the request gives none (None: the request must give it).
    default: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    version: str
    messages: tuple[tuple[str, str], ...]
    variables: Mapping[str, Variable] = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict[str, object]:
        variables: dict[str, dict[str, str]] = {}
        for name, v in self.variables.items():
            spec = {"type": v.type}
            if v.default is not None:
                spec["default"] = v.default
            if v.description:
                spec["description"] = v.description
            variables[name] = spec
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "variables": variables,
            "messages": [{"role": r, "content": c} for r, c in self.messages],
        }


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def valid_version(version: str) -> bool:
    return bool(_VERSION.fullmatch(version))


def parse(data: object, where: str = "template") -> Template:
    """A template from its document (YAML/JSON mapping); TemplateError naming the field."""
    if not isinstance(data, Mapping):
        raise TemplateError(f"{where}: must be a mapping with name, version, messages")
    unknown = set(data) - {"name", "version", "description", "variables", "messages"}
    if unknown:
        raise TemplateError(f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    name, version = str(data.get("name", "")), str(data.get("version", ""))
    if not valid_name(name):
        raise TemplateError(f"{where}.name: 1-64 of letters, digits, '.', '_', '-', got {name!r}")
    if not valid_version(version):
        raise TemplateError(
            f"{where}.version: 1-32 of letters, digits, '.', '_', '-', got {version!r}"
        )
    where = f"{where} {name}@{version}"
    variables: dict[str, Variable] = {}
    raw_vars = data.get("variables") or {}
    if not isinstance(raw_vars, Mapping):
        raise TemplateError(f"{where}: variables must be a mapping of name -> {{type, default}}")
    for var, spec in raw_vars.items():
        if not _VAR.fullmatch(str(var)):
            raise TemplateError(f"{where}: variable name {var!r} must be an identifier")
        spec = spec or {}
        if not isinstance(spec, Mapping) or set(spec) - {"type", "default", "description"}:
            raise TemplateError(f"{where}: variables.{var}: keys are type, default, description")
        kind = str(spec.get("type", "string"))
        if kind not in TYPES:
            raise TemplateError(f"{where}: variables.{var}.type must be one of {', '.join(TYPES)}")
        default = spec.get("default")
        variable = Variable(
            kind, None if default is None else _text(default), str(spec.get("description", ""))
        )
        if variable.default is not None:
            _typed(var, variable, variable.default, f"{where}: variables.{var}.default")
        variables[str(var)] = variable
    raw_messages = data.get("messages") or []
    if not isinstance(raw_messages, list) or not raw_messages:
        raise TemplateError(f"{where}: messages must be a non-empty list of {{role, content}}")
    messages = []
    used: set[str] = set()
    for i, m in enumerate(raw_messages):
        if not isinstance(m, Mapping) or set(m) != {"role", "content"}:
            raise TemplateError(f"{where}: messages[{i}] must have role and content")
        role, content = str(m["role"]), str(m["content"])
        if role not in _ROLES:
            raise TemplateError(f"{where}: messages[{i}].role must be system, user or assistant")
        for placeholder in _PLACEHOLDER.findall(content):
            if placeholder not in variables:
                raise TemplateError(
                    f"{where}: messages[{i}] uses {{{{{placeholder}}}}}, which variables does "
                    "not declare"
                )
            used.add(placeholder)
        messages.append((role, content))
    unused = sorted(set(variables) - used)
    if unused:
        raise TemplateError(f"{where}: variables {', '.join(unused)} are declared but not used")
    return Template(name, version, tuple(messages), variables, str(data.get("description", "")))


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _typed(name: str, var: Variable, value: str, where: str) -> str:
    """``value`` checked against ``var``'s type, as it is rendered."""
    kind = var.type
    if kind == "integer":
        try:
            return str(int(value.strip()))
        except ValueError:
            raise InvalidRequest(where, f"must be a whole number, got {value!r}") from None
    if kind == "number":
        try:
            number = float(value.strip())
        except ValueError:
            raise InvalidRequest(where, f"must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise InvalidRequest(where, f"must be a finite number, got {value!r}")
        return value.strip()
    if kind == "boolean":
        low = value.strip().lower()
        if low in _TRUE:
            return "true"
        if low in _FALSE:
            return "false"
        raise InvalidRequest(where, f"must be true or false, got {value!r}")
    if len(value) > MAX_VALUE_CHARS:
        raise InvalidRequest(where, f"at most {MAX_VALUE_CHARS} characters")
    return value


def render(template: Template, values: Mapping[str, str]) -> tuple[Message, ...]:
    """The template's messages with ``values`` in place. InvalidRequest names a missing,
    unknown or mistyped variable (``template_variables.NAME``)."""
    unknown = sorted(set(values) - set(template.variables))
    if unknown:
        raise InvalidRequest(
            f"template_variables.{unknown[0]}",
            f"{template.name}@{template.version} has no variable {unknown[0]!r} "
            f"(it has: {', '.join(sorted(template.variables)) or 'none'})",
        )
    resolved: dict[str, str] = {}
    for name, var in template.variables.items():
        where = f"template_variables.{name}"
        if name in values:
            resolved[name] = _typed(name, var, values[name], where)
        elif var.default is not None:
            resolved[name] = var.default
        else:
            raise InvalidRequest(
                where, f"{template.name}@{template.version} needs it ({var.type}); give a value"
            )
    return tuple(
        Message(
            _ROLES[role],
            _PLACEHOLDER.sub(lambda m: resolved[m.group(1)], content),
        )
        for role, content in template.messages
    )
