"""``hybrid-router models``: what ``publish`` refuses before it uploads anything (S3 is a
real moto server process), the ``--endpoint-url`` / ``--region`` flags, and help."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from awsenv import aws_env, moto_server  # noqa: F401 - fixtures

from hybrid_router_cli.main import main

REGION = "us-east-1"
PUBLISH = ["models", "publish", "--name", "gemma3-270m", "--version", "v2"]


@pytest.fixture
def bucket(moto_server: str, aws_env: None, request: pytest.FixtureRequest) -> str:  # noqa: F811
    name = f"cli-{request.node.name[:40].replace('_', '-').replace('[', '-').lower()}"
    name = "".join(c for c in name if c.isalnum() or c == "-").strip("-")
    boto3.client("s3", endpoint_url=moto_server, region_name=REGION).create_bucket(Bucket=name)
    return name


def _keys(moto_server: str, bucket: str) -> list[str]:  # noqa: F811
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _publish(path: Path, window: str, moto_server: str, bucket: str, *extra: str) -> int:  # noqa: F811
    return main(
        [
            *PUBLISH, str(path), "--context-window", window, "--bucket", bucket,
            "--endpoint-url", moto_server, "--region", REGION, *extra,
        ]
    )  # fmt: skip


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in captured.err
    return line


@pytest.mark.parametrize("window", ["99999999999999", str(2**31), "15", "0", "-1"])
def test_publish_refuses_a_context_window_out_of_range_and_uploads_nothing(
    window,
    bucket,
    moto_server,  # noqa: F811
    tmp_path,
    capsys,
):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(64))

    assert _publish(model, window, moto_server, bucket) == 2

    line = _one_error_line(capsys)
    assert line.startswith(f"error: --context-window: must be >= 16 and <= {2**31 - 1}, got ")
    assert _keys(moto_server, bucket) == []


@pytest.mark.parametrize("content", [b"PK\x03\x04 a zip, not a model", b"{}", b"GGU"])
def test_publish_refuses_a_file_that_is_not_gguf_and_uploads_nothing(
    content,
    bucket,
    moto_server,  # noqa: F811
    tmp_path,
    capsys,
):
    model = tmp_path / "model.gguf"
    model.write_bytes(content)

    assert _publish(model, "2048", moto_server, bucket) == 2

    line = _one_error_line(capsys)
    assert line.startswith(f"error: {model} is not a GGUF model (first bytes {content[:4]!r}")
    assert "--format scripted" in line
    assert _keys(moto_server, bucket) == []


def test_publish_takes_a_gguf_file_and_the_largest_window(bucket, moto_server, tmp_path, capsys):  # noqa: F811
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(64))

    assert _publish(model, str(2**31 - 1), moto_server, bucket, "--json") == 0

    manifest = json.loads(capsys.readouterr().out)
    assert manifest["context_window"] == 2**31 - 1 and manifest["format"] == "gguf"
    assert sorted(_keys(moto_server, bucket)) == [
        "models/gemma3-270m/desired.json",
        "models/gemma3-270m/v2/m.gguf",
        "models/gemma3-270m/v2/manifest.json",
    ]


def test_a_scripted_artifact_needs_no_gguf_magic(bucket, moto_server, tmp_path, capsys):  # noqa: F811
    artifact = tmp_path / "scripted.json"
    artifact.write_text("{}")

    assert _publish(artifact, "4096", moto_server, bucket, "--format", "scripted") == 0
    assert "published gemma3-270m v2" in capsys.readouterr().out


ACTIONS = {
    "publish": [*PUBLISH, "m.gguf", "--context-window", "2048", "--bucket", "b"],
    "set-desired": ["models", "set-desired", "--name", "m", "--version", "v1", "--bucket", "b"],
    "status": ["models", "status", "--address", "127.0.0.1:1", "--bucket", "b"],
}


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--endpoint-url", "notaurl"], "--endpoint-url 'notaurl' is not an http(s) URL; "),
        (["--endpoint-url", "127.0.0.1:9000"], "--endpoint-url '127.0.0.1:9000' is not an "),
        (["--region", "eu west 1"], "s3://b: --region 'eu west 1' is not an AWS region name; "),
    ],
    ids=["not-a-url", "no-scheme", "bad-region"],
)
def test_aws_flags_boto3_cannot_use_are_one_usage_error_line(
    action, flags, needle, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + bytes(8))

    assert main([*ACTIONS[action], *flags]) == 2

    assert needle in _one_error_line(capsys)


@pytest.mark.parametrize("action", list(ACTIONS))
def test_every_models_action_has_help_with_examples(action, capsys):
    assert main(["models", action, "--help"]) == 0

    out = capsys.readouterr().out
    assert out.startswith(f"usage: hybrid-router models {action}")
    examples = out.split("\nexamples:\n", 1)[1]
    assert f"  hybrid-router models {action} " in examples
