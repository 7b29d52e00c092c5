"""Prompt templates through a real router (issue 13 item 5): a templates file, versions
that never change, the pinned default, typed variables, Usage naming the version used."""

from __future__ import annotations

import grpc
import pytest
import yaml
from rtutil import collect, ms_backend, stub_for, text_of, user_request

from router.templates.model import parse
from router.templates.store import FileTemplateStore
from serving.engines.scripted import ScriptedEngine


def _version(version: str, greeting: str) -> dict:
    return {
        "name": "greet",
        "version": version,
        "variables": {"who": {"type": "string"}, "times": {"type": "integer", "default": 1}},
        "messages": [{"role": "user", "content": greeting + " {{who}} x{{times}}"}],
    }


@pytest.fixture
async def router(tmp_path, model_server, start_router):
    path = tmp_path / "templates.yaml"
    path.write_text(
        yaml.safe_dump(
            {"templates": [_version("1", "hello"), _version("2", "howdy")], "pins": {"greet": "1"}}
        )
    )
    address = await model_server(ScriptedEngine(reply_tokens=4))
    r = await start_router(
        [ms_backend("gpu-1", "gpu", address)],
        templates={"file": str(path), "pin_ttl_s": 0.01},
    )
    r.test_templates_file = path  # type: ignore[attr-defined]
    return r


def _request(**fields):
    request = user_request("", **fields)
    del request.messages[:]
    return request


async def test_the_pinned_version_is_rendered_and_reported(router, channel_to):
    stub = stub_for(channel_to(router))
    events = await collect(
        stub.Generate(_request(template="greet", template_variables={"who": "Ada"}))
    )
    usage = events[-1].usage
    assert (usage.template, usage.template_version) == ("greet", "1")
    assert text_of(events).startswith("hello Ada x1")  # the scripted engine echoes the prompt


async def test_a_named_version_and_a_new_pin(router, channel_to):
    stub = stub_for(channel_to(router))
    events = await collect(
        stub.Generate(
            _request(
                template="greet",
                template_version="2",
                template_variables={"who": "Bo", "times": "3"},
            )
        )
    )
    assert events[-1].usage.template_version == "2"
    assert text_of(events).startswith("howdy Bo x3")
    await FileTemplateStore(str(router.test_templates_file)).pin("greet", "2")
    events = await collect(
        stub.Generate(_request(template="greet", template_variables={"who": "Cy"}))
    )
    assert events[-1].usage.template_version == "2"


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"template": "greet"}, grpc.StatusCode.INVALID_ARGUMENT, "template_variables.who"),
        (
            {"template": "greet", "template_variables": {"who": "x", "extra": "1"}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "template_variables.extra",
        ),
        (
            {"template": "greet", "template_variables": {"who": "x", "times": "two"}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "whole number",
        ),
        ({"template": "nope"}, grpc.StatusCode.NOT_FOUND, "'nope' is not published"),
        (
            {"template": "greet", "template_version": "9", "template_variables": {"who": "x"}},
            grpc.StatusCode.NOT_FOUND,
            "versions: 1, 2",
        ),
        ({"template_version": "1"}, grpc.StatusCode.INVALID_ARGUMENT, "need template"),
    ],  # fmt: skip
)
async def test_bad_template_requests_are_named(router, channel_to, fields, code, words):
    stub = stub_for(channel_to(router))
    request = _request(**fields) if "template" in fields else user_request("hi", **fields)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(stub.Generate(request))
    assert err.value.code() is code and words in (err.value.details() or "")


async def test_a_published_version_never_changes(tmp_path):
    store = FileTemplateStore(str(tmp_path / "t.yaml"))
    assert await store.publish(parse(_version("1", "hello")))
    assert not await store.publish(parse(_version("1", "hello")))  # the same: a no-op
    with pytest.raises(Exception) as err:
        await store.publish(parse(_version("1", "changed")))
    assert type(err.value).__name__ == "AlreadyExists"
    assert (await store.get("greet", "1")).messages[0][1].startswith("hello")


def test_the_cli_publishes_pins_lists_and_shows(tmp_path, capsys):
    import json

    from hybrid_router_cli.main import main

    store = str(tmp_path / "templates.yaml")
    for version, greeting in (("1", "hello"), ("2", "howdy")):
        doc = tmp_path / f"v{version}.yaml"
        doc.write_text(yaml.safe_dump(_version(version, greeting)))
        assert main(["templates", "publish", str(doc), "--file", store]) == 0
    assert main(["templates", "pin", "greet", "1", "--file", store]) == 0
    capsys.readouterr()
    assert main(["templates", "list", "--file", store, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == {"templates": [{"name": "greet", "versions": ["1", "2"], "pinned": "1"}]}
    assert main(["templates", "show", "greet", "--file", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "1"
    # A changed version 1 is refused; a bad file names the field.
    changed = tmp_path / "v1-changed.yaml"
    changed.write_text(yaml.safe_dump(_version("1", "changed")))
    assert main(["templates", "publish", str(changed), "--file", store]) == 1
    assert "publish a new version" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**_version("3", "x"), "variables": {}}))
    assert main(["templates", "publish", str(bad), "--file", store]) == 2
    assert "does not declare" in capsys.readouterr().err
