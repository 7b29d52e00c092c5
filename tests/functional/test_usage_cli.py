"""``hybrid-router usage`` over real ledgers: an SQLite file a ledger wrote, and a real
``redis-server`` named by a router.yaml (its URL through an ``env:VAR`` reference)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from storeservers import RedisProcess, redis_process  # noqa: F401  (fixture)

from hybrid_router_cli.main import main
from router.controls.ledger_records import LedgerRecord
from router.controls.ledger_redis import RedisLedgerStore
from router.controls.ledger_sqlite import SqliteLedgerStore

DAY_MS = 86_400_000
T0 = 1_746_057_600_000  # 2025-05-01T00:00:00Z


def _records() -> list[LedgerRecord]:
    """acme (two keys) and beta over 2025-04-30..2025-05-02, hosted and gpu."""
    out = []
    specs = [
        # day offset, tenant, key, backend, tier, cost, complete, cached
        (-1, "acme", "aaaaaaaaaaaa", "hosted-1", "hosted", 1.0, True, False),
        (0, "acme", "aaaaaaaaaaaa", "hosted-1", "hosted", 0.5, True, False),
        (0, "acme", "bbbbbbbbbbbb", "gpu-1", "gpu", 0.25, False, False),
        (0, "beta", "cccccccccccc", "gpu-1", "gpu", 0.125, True, False),
        (1, "acme", "aaaaaaaaaaaa", "hosted-1", "hosted", 2.0, True, False),
        (1, "beta", "cccccccccccc", "hosted-1", "hosted", 0.0, True, True),
    ]
    for i, (day, tenant, key, backend, tier, cost, complete, cached) in enumerate(specs):
        out.append(
            LedgerRecord(
                f"id{i}",
                T0 + day * DAY_MS + 3_600_000,
                tenant,
                key,
                f"req-{i}",
                backend,
                tier,
                10,
                20 + i,
                cost,
                complete,
                cached,
            )  # fmt: skip
        )
    return out


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite3"

    async def write() -> None:
        store = SqliteLedgerStore(path)
        await store.write(_records())
        await store.close()

    asyncio.run(write())
    return path


def _json(capsys, *argv: str) -> dict:
    assert main(["usage", *argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_by_tenant_and_day_over_a_window(ledger_file: Path, capsys) -> None:
    doc = _json(capsys, "--file", str(ledger_file), "--by", "tenant,day",
                "--since", "2025-05-01", "--until", "2025-05-03")  # fmt: skip
    assert doc["by"] == ["tenant", "day"] and doc["since"] == "2025-05-01T00:00:00+00:00"
    assert [(r["tenant"], r["day"], r["requests"], r["cost_usd"]) for r in doc["rows"]] == [
        ("acme", "2025-05-01", 2, 0.75),
        ("acme", "2025-05-02", 1, 2.0),
        ("beta", "2025-05-01", 1, 0.125),
        ("beta", "2025-05-02", 1, 0.0),
    ]
    total = doc["total"]
    assert (total["requests"], total["cost_usd"], total["incomplete"], total["cached"]) == (
        5, 2.875, 1, 1)  # fmt: skip
    assert total["input_tokens"] == 50 and total["output_tokens"] == sum(range(21, 26))


def test_by_key_for_one_tenant_and_by_tier_backend(ledger_file: Path, capsys) -> None:
    doc = _json(capsys, "--file", str(ledger_file), "--by", "key", "--tenant", "acme",
                "--since", "2025-04-01")  # fmt: skip
    assert {r["key"]: r["cost_usd"] for r in doc["rows"]} == {
        "aaaaaaaaaaaa": 3.5, "bbbbbbbbbbbb": 0.25}  # fmt: skip
    doc = _json(capsys, "--file", str(ledger_file), "--by", "tier,backend", "--since",
                "2025-04-30T12:00:00Z", "--until", "2025-05-01T12:00:00")  # fmt: skip
    assert {(r["tier"], r["backend"]): r["requests"] for r in doc["rows"]} == {
        ("gpu", "gpu-1"): 2, ("hosted", "hosted-1"): 1}  # fmt: skip


def test_csv_and_table(ledger_file: Path, capsys) -> None:
    argv = ["usage", "--file", str(ledger_file), "--by", "month", "--since", "2025-01-01"]
    assert main([*argv, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["month"], r["requests"], r["cost_usd"]) for r in rows] == [
        ("2025-04", "1", "1.0"), ("2025-05", "5", "2.875")]  # fmt: skip
    assert main([*argv, "--by", "tenant"]) == 0
    out = capsys.readouterr().out
    assert "acme" in out and "$3.7500" in out and "total" in out and "$3.8750" in out


def test_empty_windows_and_bad_arguments(ledger_file: Path, tmp_path: Path, capsys) -> None:
    assert main(["usage", "--file", str(ledger_file), "--since", "2020-01-01",
                 "--until", "2020-02-01"]) == 0  # fmt: skip
    assert "no usage recorded" in capsys.readouterr().err
    assert main(["usage", "--file", str(tmp_path / "none.sqlite3")]) == 2
    assert "none.sqlite3: no such file" in capsys.readouterr().err
    assert main(["usage", "--file", str(ledger_file), "--by", "tenant,colour"]) == 2
    assert "expected a comma-separated list of tenant" in capsys.readouterr().err
    assert main(["usage", "--file", str(ledger_file), "--since", "2025-06-01",
                 "--until", "2025-05-01"]) == 2  # fmt: skip
    assert "must be after --since" in capsys.readouterr().err


def test_the_store_a_router_yaml_names(
    redis_process: RedisProcess,  # noqa: F811
    tmp_path: Path,
    capsys,
    monkeypatch,
) -> None:
    async def write() -> None:
        store = RedisLedgerStore(redis_process.url, key_prefix="usage-cli:", timeout_s=2)
        await store.write(_records())
        await store.close()

    asyncio.run(write())
    config = tmp_path / "router.yaml"
    ledger = {"enabled": True, "store": "redis",
              "redis": {"url": "env:LEDGER_REDIS_URL", "key_prefix": "usage-cli:"}}  # fmt: skip
    config.write_text(yaml.safe_dump({"controls": {"ledger": ledger}}))
    monkeypatch.setenv("LEDGER_REDIS_URL", redis_process.url)
    doc = _json(capsys, "--config", str(config), "--by", "tenant", "--since", "2025-04-01")
    assert doc["store"] == f"ledger store redis {redis_process.url}"
    assert {r["tenant"]: r["requests"] for r in doc["rows"]} == {"acme": 4, "beta": 2}
    monkeypatch.delenv("LEDGER_REDIS_URL")
    assert main(["usage", "--config", str(config)]) == 2
    assert "LEDGER_REDIS_URL" in capsys.readouterr().err
