"""Validate rendered Kubernetes objects against ../shared/schemas (import as a test helper).

- Built-in kinds: ``kubernetes-v1.32-strict/<kind>-<group>-<version>.json`` (core group:
  ``<kind>-<version>.json``; the group is its first DNS label: ``rbac`` for
  ``rbac.authorization.k8s.io``). Those schemas reject unknown fields.
- ``RayService``: the KubeRay CRD's ``v1`` ``openAPIV3Schema``, made strict the same way
  (an object schema with ``properties`` and no ``x-kubernetes-preserve-unknown-fields``
  rejects unknown fields, as the API server's pruning would silently drop them).
- ``ServiceMonitor``: ``crds/servicemonitor-monitoring-v1.json``.

A kind with no schema is an error: every rendered object must be checked.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

K8S_DIR = "kubernetes-v1.32-strict"
CRD_FILES = {
    ("ray.io/v1", "RayService"): "crds/ray.io_rayservices.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "crds/servicemonitor-monitoring-v1.json",
}


def schema_file(shared: Path, api_version: str, kind: str) -> Path:
    if (api_version, kind) in CRD_FILES:
        return shared / CRD_FILES[(api_version, kind)]
    group, _, version = api_version.rpartition("/")
    stem = kind.lower() + (f"-{group.split('.')[0]}" if group else "") + f"-{version}"
    return shared / K8S_DIR / f"{stem}.json"


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def _validator(path: Path) -> jsonschema.protocols.Validator:
    if path.suffix == ".yaml":
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = _strict(copy.deepcopy(v1["schema"]["openAPIV3Schema"]))
    else:
        schema = json.loads(path.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def validation_errors(shared: Path, obj: dict[str, Any]) -> list[str]:
    """Readable errors of one object ("" path = top level); raises if no schema exists."""
    path = schema_file(shared, obj["apiVersion"], obj["kind"])
    if not path.is_file():
        raise AssertionError(
            f"no schema for {obj['apiVersion']} {obj['kind']}: expected {path}; every "
            "rendered object must be validated"
        )
    errors = sorted(_validator(path).iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [
        f"{obj['kind']}/{obj['metadata'].get('name')}: "
        f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in errors
    ]
