"""The schema helper itself: a missing schema fails naming the file and the fix, and the
strict checks (unknown fields, null required fields, names over 63 characters) hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from k8s_schemas import K8S_PACKAGE, validation_errors


def test_a_kind_without_a_schema_fails_naming_the_expected_file_and_the_fix() -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}

    with pytest.raises(AssertionError) as raised:
        validation_errors(widget)

    text = str(raised.value)
    assert "no schema for example.com/v1 Widget" in text
    assert "v1.32.0-local-strict/widget-example-v1.json" in text
    assert K8S_PACKAGE in text and "tests/deploy/schemas/crds/" in text


def test_a_missing_crd_schema_fails_naming_the_expected_file(tmp_path: Path) -> None:
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m"},
    }

    with pytest.raises(AssertionError) as raised:
        validation_errors(monitor, schemas=tmp_path)

    text = str(raised.value)
    assert str(tmp_path / "crds" / "servicemonitor-monitoring-v1.json") in text
    assert "tests/deploy/schemas/README.md" in text


def test_unknown_fields_null_required_fields_and_long_names_are_errors() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s" * 64},
        "spec": {"ports": [{"port": 80, "portt": 81}]},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"selector": None, "template": {"spec": {"containers": [{"name": "c" * 64}]}}},
    }

    errors = validation_errors(service) + validation_errors(deployment)

    assert [e.split(": ")[1] for e in errors] == [
        "metadata/name",
        "spec/ports/0",
        "spec/selector",
        "spec/template/spec/containers/0/name",
    ], errors
    assert "'portt' was unexpected" in errors[1]
