"""Request traces for the simulator: one JSON object per line (docs/simulate.md).

    {"at_s": 0.125, "tenant": "acme", "prompt_tokens": 900, "output_tokens": 120,
     "data_class": "internal", "ttft_budget_ms": 800, "total_budget_ms": 6000}

``at_s`` (seconds from the trace's start) and the token counts are required; text may
stand in for counts (``prompt`` / ``output``: counted with the router's own estimate,
``router.tokenizers``). Everything else has the router's defaults. A line that cannot be
used is a :class:`~router.errors.ConfigError` naming the file, the line and the field.

:func:`from_request_log` turns the router's own request log (``serve --json``, one
``router.requests`` record per line, docs/telemetry.md) into a trace, so real traffic can
be replayed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from router.errors import ConfigError
from router.types import DataClass, Objective

_DATA_CLASSES = {d.value: d for d in DataClass}
_OBJECTIVES = {o.value: o for o in Objective}


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace: when it arrives, what it asks for, what it would produce."""

    #: Arrival, seconds from the trace's start.
    at_s: float
    #: Prompt tokens (as the router's estimate would count them).
    prompt_tokens: int
    #: Tokens the answer really has (the backend stops there).
    output_tokens: int
    #: What the caller asks for (the policy plans with it); 0: ``output_tokens``.
    max_output_tokens: int = 0
    tenant: str = ""
    data_class: DataClass = DataClass.INTERNAL
    ttft_budget_ms: float | None = None
    total_budget_ms: float | None = None
    objective: Objective | None = None
    max_cost_usd: float | None = None
    #: A conversation's id ("" none): long conversations grow their prompt turn by turn.
    session: str = ""

    @property
    def planned_output_tokens(self) -> int:
        return self.max_output_tokens or self.output_tokens

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None or value == "" or (key == "max_output_tokens" and value == 0):
                continue
            if key == "data_class" and value is DataClass.INTERNAL:
                continue
            out[key] = value.value if hasattr(value, "value") else value
        return out


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` by the router's default estimate (policy.token_estimate:
    ceil(chars / 3 * 1.15) + 4 for one message)."""
    return math.ceil(len(text) / 3.0 * 1.15) + 4


def _number(value: Any, where: str, key: str, *, integer: bool = False, low: float = 0.0) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value < low:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"must be {kind} >= {low:g} (got {value!r})", source=where, key=key)
    return value


def parse_request(obj: Any, where: str) -> TraceRequest:
    """One trace line's object as a TraceRequest (``where``: ``file:line`` for errors)."""
    if not isinstance(obj, dict):
        raise ConfigError(
            f"a trace line must be a JSON object, not {type(obj).__name__}", source=where
        )
    known = set(TraceRequest.__dataclass_fields__) | {"prompt", "output"}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ConfigError(
            f"unknown field (known: {', '.join(sorted(known))})", source=where, key=unknown[0]
        )
    if "at_s" not in obj:
        raise ConfigError("missing: seconds from the trace's start", source=where, key="at_s")
    at_s = float(_number(obj["at_s"], where, "at_s"))
    counts = {}
    for key, text_key in (("prompt_tokens", "prompt"), ("output_tokens", "output")):
        if key in obj:
            counts[key] = int(
                _number(obj[key], where, key, integer=True, low=1 if key == "output_tokens" else 0)
            )
        elif isinstance(obj.get(text_key), str):
            counts[key] = estimate_tokens(obj[text_key])
        else:
            raise ConfigError(f"missing: give {key} or the {text_key} text", source=where, key=key)
    kwargs: dict[str, Any] = {}
    if "max_output_tokens" in obj:
        kwargs["max_output_tokens"] = int(
            _number(obj["max_output_tokens"], where, "max_output_tokens", integer=True)
        )
    for key in ("ttft_budget_ms", "total_budget_ms", "max_cost_usd"):
        if obj.get(key) is not None:
            kwargs[key] = float(_number(obj[key], where, key))
    for key in ("tenant", "session"):
        if key in obj:
            if not isinstance(obj[key], str):
                raise ConfigError("must be a string", source=where, key=key)
            kwargs[key] = obj[key]
    if "data_class" in obj:
        dc = _DATA_CLASSES.get(str(obj["data_class"]))
        if dc is None:
            raise ConfigError(
                f"must be one of {', '.join(_DATA_CLASSES)}", source=where, key="data_class"
            )
        kwargs["data_class"] = dc
    if obj.get("objective") is not None:
        objective = _OBJECTIVES.get(str(obj["objective"]))
        if objective is None:
            raise ConfigError(
                f"must be one of {', '.join(_OBJECTIVES)}", source=where, key="objective"
            )
        kwargs["objective"] = objective
    return TraceRequest(at_s, counts["prompt_tokens"], counts["output_tokens"], **kwargs)


def read_trace(path: Path) -> list[TraceRequest]:
    """A JSONL trace, sorted by arrival (stable). Blank lines and ``#`` comments skip."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the trace ({exc.strerror})", source=str(path)) from None
    with handle:
        return sorted(_parse_lines(handle, str(path)), key=lambda r: r.at_s)


def _parse_lines(lines: Iterable[str], name: str) -> Iterator[TraceRequest]:
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{name}:{number}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not JSON ({exc.msg} at column {exc.colno})", source=where) from None
        yield parse_request(obj, where)


def write_trace(requests: Iterable[TraceRequest], out: TextIO) -> int:
    """Write ``requests`` as JSONL; returns how many."""
    n = 0
    for r in requests:
        out.write(json.dumps(r.to_json(), separators=(",", ":")) + "\n")
        n += 1
    return n


def _log_time(entry: dict[str, Any]) -> float | None:
    raw = entry.get("time")
    if not isinstance(raw, str):
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S,%f", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(raw, fmt).timestamp()
        except ValueError:
            continue
    return None


def from_request_log(
    lines: Iterable[str], name: str = "request log"
) -> tuple[list[TraceRequest], dict[str, int]]:
    """The Generate requests of a router request log (JSON lines) as a trace.

    Arrival: the line's ``time`` minus its ``duration_ms`` (the line is written when the
    request ends). Tokens: ``input_tokens`` / ``output_tokens`` of requests that got an
    answer; refused requests (no usage) carry ``prompt_chars`` and ``max_output_tokens``
    only and are replayed with the estimate of their prompt. Budgets and the cost cap come
    from the line when the router logged them (the request gave them); the objective does
    not (the log holds the one the router used, often its default, which the fleet's own
    configuration sets in a replay). Returns the trace and counts of the lines skipped, by
    reason.
    """
    skipped: dict[str, int] = {}
    rows: list[tuple[float, dict[str, Any]]] = []

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:
            skip("not JSON")
            continue
        if not isinstance(entry, dict) or entry.get("logger") != "router.requests":
            skip("not a request line")
            continue
        if entry.get("method") != "Generate":
            skip(f"method {entry.get('method')}")
            continue
        ended = _log_time(entry)
        if ended is None:
            raise ConfigError(
                "no readable time (serve --json writes one)", source=f"{name}:{number}", key="time"
            )
        started = ended - float(entry.get("duration_ms") or 0.0) / 1000.0
        rows.append((started, entry))
    rows.sort(key=lambda r: r[0])
    if not rows:
        return [], skipped
    t0 = rows[0][0]
    out = []
    for started, entry in rows:
        prompt = entry.get("input_tokens")
        if not isinstance(prompt, int):
            prompt = estimate_tokens("x" * int(entry.get("prompt_chars") or 0))
        output = entry.get("output_tokens")
        max_out = int(entry.get("max_output_tokens") or 0)
        if not isinstance(output, int) or output <= 0:
            output = max_out or 1
        out.append(
            TraceRequest(
                at_s=round(started - t0, 6),
                prompt_tokens=prompt,
                output_tokens=output,
                max_output_tokens=max_out if max_out > output else 0,
                tenant=str(entry.get("tenant") or ""),
                data_class=_DATA_CLASSES.get(str(entry.get("data_class")), DataClass.INTERNAL),
                ttft_budget_ms=_opt_float(entry.get("ttft_budget_ms")),
                total_budget_ms=_opt_float(entry.get("total_budget_ms")),
                max_cost_usd=_opt_float(entry.get("max_cost_usd")),
                session=str(entry.get("session_id") or ""),
            )
        )
    return out, skipped


def _opt_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
