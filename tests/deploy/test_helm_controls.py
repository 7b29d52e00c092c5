"""The Helm chart and the tenant controls' stores (spend budgets, the cost ledger), rendered
by the real Helm engine: the Redis URL comes from a Secret, every ``config.controls``
section on ``store: redis`` reads it, the ConfigMap is a router.yaml the router accepts, and
values that would lose spend or records across replicas or pods are refused."""

from __future__ import annotations

import copy
from typing import Any

import helm_python as helm
import pytest
from k8s_schemas import validation_errors
from test_helm_chart import CHART, NAMESPACE, RELEASE, one, render, router_config

REDIS_SECRET = {"controls": {"redisUrlSecret": {"name": "router-redis", "key": "url"}}}
FLEET: dict[str, Any] = {
    **REDIS_SECRET,
    "config": {
        "controls": {
            "budgets": {"store": "redis", "default": {"usd_per_day": 5}},
            "ledger": {"enabled": True, "store": "redis", "retention_days": 400},
        }
    },
}
DYNAMODB_LEDGER: dict[str, Any] = {
    "replicaCount": 1,
    "config": {
        "controls": {
            "budgets": {"tenants": {"acme": {"usd_per_month": 100}}},
            "ledger": {"enabled": True, "store": "dynamodb",
                       "dynamodb": {"table": "hybrid-router-ledger", "region": "eu-west-1"}},
        }
    },
    "serviceAccount": {"roleArn": "arn:aws:iam::123456789012:role/hybrid-router"},
}  # fmt: skip


@pytest.fixture(scope="module")
def chart() -> Any:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.mark.parametrize("values", [FLEET, DYNAMODB_LEDGER], ids=["redis-fleet", "dynamodb"])
def test_controls_values_lint_render_and_validate(chart: Any, values: dict[str, Any]) -> None:
    report = helm.lint(CHART, copy.deepcopy(values), strict=True, namespace=NAMESPACE)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
    objects = render(chart, values)["objects"]
    assert [err for obj in objects for err in validation_errors(obj)] == []
    config = router_config(objects)
    assert config.controls.budgets.enabled and config.controls.ledger.enabled


def test_the_redis_url_comes_from_the_secret_into_every_redis_section(chart: Any) -> None:
    values = copy.deepcopy(FLEET)
    values["config"]["controls"]["ledger"]["redis"] = {"key_prefix": "acme-ledger:"}
    objects = render(chart, values)["objects"]
    config = router_config(objects)
    assert config.controls.budgets.redis.url == "env:CONTROLS_REDIS_URL"
    assert config.controls.ledger.redis.url == "env:CONTROLS_REDIS_URL"
    assert config.controls.ledger.redis.key_prefix == "acme-ledger:"
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CONTROLS_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "router-redis",
        "key": "url",
    }


def test_an_explicit_url_is_kept_and_no_secret_means_no_variable(chart: Any) -> None:
    values = copy.deepcopy(FLEET)
    del values["controls"]
    values["config"]["controls"]["budgets"]["redis"] = {"url": "env:MY_REDIS"}
    values["config"]["controls"]["ledger"]["redis"] = {"url": "env:MY_REDIS"}
    objects = render(chart, values)["objects"]
    config = router_config(objects)
    assert config.controls.budgets.redis.url == "env:MY_REDIS"
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "CONTROLS_REDIS_URL" not in {e["name"] for e in container["env"]}


def test_one_replica_may_keep_budgets_in_memory(chart: Any) -> None:
    budgets = {"default": {"usd_per_day": 1}}
    values = {"replicaCount": 1, "config": {"controls": {"budgets": budgets}}}
    config = router_config(render(chart, values)["objects"])
    assert config.controls.budgets.store == "memory"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"config": {"controls": {"budgets": {"default": {"usd_per_day": 1}}}}},
            "config.controls.budgets: with more than one replica set store: redis",
        ),
        (
            {"replicaCount": 1, "autoscaling": {"enabled": True},
             "config": {"controls": {"budgets": {"store": "memory"}}}},
            "budgets kept in each pod's memory",
        ),
        (
            {"replicaCount": 1, "config": {"controls": {"ledger": {"enabled": True}}}},
            "config.controls.ledger: set store: redis or dynamodb",
        ),
        (
            {"config": {"controls": {"ledger": {"enabled": True, "store": "redis"}}}},
            "config.controls.ledger: store redis needs redis.url, or controls.redisUrlSecret.name",
        ),
    ],
    ids=["budgets-in-memory-2-replicas", "budgets-in-memory-autoscaled", "ledger-sqlite",
         "redis-without-url"],
)  # fmt: skip
def test_values_that_would_lose_spend_or_records_are_refused(
    chart: Any, values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(helm.HelmError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert expected in str(err.value)
