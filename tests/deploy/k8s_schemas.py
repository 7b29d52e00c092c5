"""Validate rendered Kubernetes objects against their schemas (import as a test helper).

- Built-in kinds: the strict Kubernetes v1.32 schemas that the ``kubernetes-validate``
  package bundles (dev extra), read from the installed package with importlib.resources:
  ``kubernetes_validate/kubernetes-json-schema/v1.32.0-local-strict/<kind>-<group>-<version>.json``
  (core group: ``<kind>-<version>.json``; the group is its first DNS label: ``rbac`` for
  ``rbac.authorization.k8s.io``), each ``$ref``-ing that folder's ``_definitions.json``.
  They reject unknown fields. Two additions keep them as strict as the standalone strict
  schemas the tests used before: a required property may not be null (the API server
  treats it as missing), and object, pod-template and container names are at most 63
  characters (DNS labels; the chart truncates its names to 63).
- ``RayService``: ``schemas/crds/ray.io_rayservices.yaml`` (the KubeRay CRD), its ``v1``
  ``openAPIV3Schema`` made strict the same way (an object schema with ``properties`` and no
  ``x-kubernetes-preserve-unknown-fields`` rejects unknown fields, as the API server's
  pruning would silently drop them).
- ``ServiceMonitor``: ``schemas/crds/servicemonitor-monitoring-v1.json``.

``schemas/`` is tests/deploy/schemas/; its README.md names each file's source, version and
licence. A kind with no schema is an error: every rendered object must be checked.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

#: The Kubernetes version the objects are checked against, and where its strict schemas
#: live inside the kubernetes-validate package.
K8S_VERSION = "v1.32.0"
K8S_PACKAGE = "kubernetes-validate==1.37.0"
K8S_DIR = ("kubernetes-json-schema", f"{K8S_VERSION}-local-strict")
#: Schemas with no package, kept in the repository (see schemas/README.md).
SCHEMAS = Path(__file__).resolve().parent / "schemas"
CRD_FILES = {
    ("ray.io/v1", "RayService"): "crds/ray.io_rayservices.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "crds/servicemonitor-monitoring-v1.json",
}
#: Names that must be DNS labels (the earlier standalone schemas capped these at 63).
NAME_MAX = 63
DNS_LABEL_NAMES = (
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    "io.k8s.api.core.v1.Container",
)
INSTALL_HINT = f"install the dev dependencies with `make install` (dev extra: {K8S_PACKAGE})"


def _k8s_dir() -> Traversable:
    try:
        root = resources.files("kubernetes_validate")
    except ModuleNotFoundError:
        raise AssertionError(
            f"the kubernetes-validate package is not installed: {INSTALL_HINT}"
        ) from None
    return root.joinpath(*K8S_DIR)


def schema_file(api_version: str, kind: str, schemas: Path = SCHEMAS) -> Traversable:
    """A CRD's file under ``schemas``, else the built-in kind's file in kubernetes-validate."""
    if (api_version, kind) in CRD_FILES:
        return schemas / CRD_FILES[(api_version, kind)]
    return _k8s_dir() / _k8s_name(api_version, kind)


def _k8s_name(api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    return kind.lower() + (f"-{group.split('.')[0]}" if group else "") + f"-{version}.json"


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


def _required_not_null(schema: Any) -> Any:
    """A copy of ``schema`` where every required property also rejects null.

    Walks schema keywords only (``properties`` is a map of names, one of which may well
    be called ``required``).
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(schema.get("properties"), dict):
        props = {k: _required_not_null(v) for k, v in schema["properties"].items()}
        for name in schema.get("required", []):
            if name in props:
                assert "not" not in props[name], f"unexpected 'not' on {name}"
                props[name] = {**props[name], "not": {"type": "null"}}
        out["properties"] = props
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out[key] = _required_not_null(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [_required_not_null(v) for v in schema[key]]
    if "$defs" in schema:
        out["$defs"] = {k: _required_not_null(v) for k, v in schema["$defs"].items()}
    return out


@cache
def _k8s_registry() -> Registry:
    """The version's shared ``_definitions.json`` (``$id`` .../api/_definitions.json)."""
    definitions = json.loads(_k8s_dir().joinpath("_definitions.json").read_text("utf-8"))
    definitions = _required_not_null(definitions)
    for name in DNS_LABEL_NAMES:
        definitions["$defs"][name]["properties"]["name"]["maxLength"] = NAME_MAX
    return Resource.from_contents(definitions) @ Registry()


@cache
def _k8s_validator(path: Traversable) -> jsonschema.protocols.Validator:
    """A kubernetes-validate schema: JSON Schema 2020-12, ``$ref``-ing _definitions.json."""
    schema = _required_not_null(json.loads(path.read_text(encoding="utf-8")))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=_k8s_registry())


@cache
def _crd_validator(path: Path) -> jsonschema.protocols.Validator:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".yaml":
        crd = yaml.safe_load(text)
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = _strict(copy.deepcopy(v1["schema"]["openAPIV3Schema"]))
    else:
        schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def validation_errors(obj: dict[str, Any], schemas: Path = SCHEMAS) -> list[str]:
    """Readable errors of one object ("" path = top level); raises if no schema exists."""
    key = (obj["apiVersion"], obj["kind"])
    path = schema_file(*key, schemas)
    if not path.is_file():
        if key in CRD_FILES:
            how = (
                "it is part of the repository: restore it from git, or fetch it again from "
                "the source named in tests/deploy/schemas/README.md"
            )
        else:
            how = (
                f"a built-in kind's schema comes from the kubernetes-validate package "
                f"(Kubernetes {K8S_VERSION}, strict): {INSTALL_HINT}; a custom resource "
                "needs its CRD schema in tests/deploy/schemas/crds/ (with its source in that "
                "folder's README.md) and an entry in CRD_FILES of tests/deploy/k8s_schemas.py"
            )
        raise AssertionError(
            f"no schema for {obj['apiVersion']} {obj['kind']}: expected {path}; {how}. "
            "Every rendered object must be validated."
        )
    if key in CRD_FILES:
        validator = _crd_validator(schemas / CRD_FILES[key])
    else:
        validator = _k8s_validator(path)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [
        f"{obj['kind']}/{obj['metadata'].get('name')}: "
        f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in errors
    ]
