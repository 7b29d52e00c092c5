"""The model manifest and the model store's layout in S3.

For model ``<name>`` at version ``<version>`` under prefix ``<prefix>``::

    <prefix>/<name>/<version>/<artifact file>    the model file (a GGUF for llama.cpp)
    <prefix>/<name>/<version>/manifest.json      this manifest
    <prefix>/<name>/desired.json                 {"version": "<version>"}: the fleet's choice

``hybrid-router models publish`` writes all three; the router reads ``desired.json`` and
tells devices; the agent reads the manifest, then the artifact. Versions are immutable:
publish refuses to overwrite one.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

SCHEMA = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: Model names and versions: path segments, no surprises.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class ManifestError(ValueError):
    """A manifest that is not usable; the message names the field."""


def check_segment(value: str, what: str) -> str:
    if not _SEGMENT.match(value):
        raise ManifestError(
            f"{what}: 1-128 letters, digits or '._+-' starting with a letter or digit, "
            f"got {value!r}"
        )
    return value


def _base(prefix: str) -> str:
    p = prefix.strip("/")
    return f"{p}/" if p else ""


def version_prefix(prefix: str, name: str, version: str) -> str:
    return f"{_base(prefix)}{name}/{version}/"


def manifest_key(prefix: str, name: str, version: str) -> str:
    return version_prefix(prefix, name, version) + "manifest.json"


def desired_key(prefix: str, name: str) -> str:
    return f"{_base(prefix)}{name}/desired.json"


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.2.3"`` -> (1, 2, 3); a suffix after the digits is ignored (``1.2.3rc1``)."""
    parts = []
    for piece in text.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    if not parts:
        raise ManifestError(f"not a version: {text!r} (expected e.g. 0.1.0)")
    return tuple(parts)


def version_at_least(have: str, need: str) -> bool:
    a, b = parse_version(have), parse_version(need)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: str
    artifact_key: str
    sha256: str
    size: int
    context_window: int
    min_agent_version: str = "0.0.0"
    model_family: str = ""
    #: "gguf" (llama.cpp) or "scripted" (the test engine's JSON options).
    format: str = "gguf"
    published_at: str = ""
    schema: int = SCHEMA

    @property
    def file_name(self) -> str:
        return self.artifact_key.rsplit("/", 1)[-1]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def parse_manifest(data: bytes | str | dict[str, Any], *, where: str = "manifest") -> Manifest:
    """Validate a manifest. Raises ManifestError naming the field and the fix."""
    if not isinstance(data, dict):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ManifestError(f"{where}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: must be a JSON object")

    def need(key: str, kind: type) -> Any:
        if key not in data:
            raise ManifestError(f"{where}.{key}: missing")
        value = data[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ManifestError(f"{where}.{key}: must be a whole number, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise ManifestError(f"{where}.{key}: must be a string, got {value!r}")
        return value

    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise ManifestError(
            f"{where}.schema: {schema!r} is not supported by this agent (expects {SCHEMA}); "
            "update the agent"
        )
    name = check_segment(need("name", str), f"{where}.name")
    version = check_segment(need("version", str), f"{where}.version")
    key = need("artifact_key", str)
    if not key or key.endswith("/") or ".." in key.split("/"):
        raise ManifestError(f"{where}.artifact_key: must name an object, got {key!r}")
    sha = need("sha256", str).lower()
    if not _HEX64.match(sha):
        raise ManifestError(f"{where}.sha256: must be 64 hex digits")
    size = need("size", int)
    if size <= 0:
        raise ManifestError(f"{where}.size: must be > 0")
    window = need("context_window", int)
    if window < 16:
        raise ManifestError(f"{where}.context_window: must be >= 16")
    min_agent = str(data.get("min_agent_version", "0.0.0"))
    parse_version(min_agent)
    fmt = str(data.get("format", "gguf"))
    if fmt not in ("gguf", "scripted"):
        raise ManifestError(f"{where}.format: must be 'gguf' or 'scripted', got {fmt!r}")
    return Manifest(
        name=name,
        version=version,
        artifact_key=key,
        sha256=sha,
        size=size,
        context_window=window,
        min_agent_version=min_agent,
        model_family=str(data.get("model_family", "")),
        format=fmt,
        published_at=str(data.get("published_at", "")),
    )
