"""The Helm chart, rendered by the real Helm engine (helm-python-sdk binds Helm v4's Go SDK).

Every value set below must: lint clean with --strict; render objects that all validate
against their schemas (k8s_schemas.py: Kubernetes v1.32 strict from kubernetes-validate,
the RayService CRD and ServiceMonitor from tests/deploy/schemas/); carry a ConfigMap whose
router.yaml the router itself accepts. Bad values are refused by values.schema.json or by
the chart's own checks, with a message naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from k8s_schemas import validation_errors

from router.config import parse_config
from router.security.exposure import check_auth_exposure
from serving.ray_app.settings import ModelAppArgs

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "hybrid-router"
RELEASE, NAMESPACE = "hr", "router"
FULLNAME = "hr-hybrid-router"

CUSTOM_BACKENDS: dict[str, Any] = {
    "config": {
        "policy": {"objective": "fastest", "ttft_timeout_ms": 4000},
        "backends": [
            {
                "name": "openai-hosted",
                "tier": "hosted",
                "kind": "openai",
                "endpoint": "https://api.openai.com/v1",
                "model": "gpt-4o-mini",
                "context_window": 128000,
                "api_key_env": "OPENAI_API_KEY",
                "cost": {"input_per_mtok_usd": 0.15, "output_per_mtok_usd": 0.6},
            },
            {
                "name": "gpu-static",
                "tier": "gpu",
                "kind": "model_service",
                "endpoint": "llama.gpu.svc.cluster.local:9000",
                "model": "llama-3.1-8b-instruct",
                "context_window": 16384,
            },
        ],
        "discovery": {
            "kubernetes": {
                "sources": [
                    {
                        "name": "vllm",
                        "namespace": "inference",
                        "label_selector": "app.kubernetes.io/name=vllm",
                        "port_name": "http",
                        "backend": {
                            "kind": "openai",
                            "model": "qwen2.5-7b",
                            "context_window": 32768,
                        },
                    }
                ]
            }
        },
    },
    "secretEnv": [{"name": "OPENAI_API_KEY", "secretName": "provider-keys", "key": "openai"}],
    "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}],
    "serviceAccount": {"roleArn": "arn:aws:iam::123456789012:role/hybrid-router"},
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "autoscaling": {
        "autoscaling": {
            "enabled": True,
            "minReplicas": 3,
            "maxReplicas": 12,
            "inflightStreams": {"enabled": True, "averageValue": "150"},
        }
    },
    "autoscaling-off-no-pdb-no-netpol": {
        "replicaCount": 1,
        "pdb": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "metrics": {"enabled": False},
    },
    "rayservice": {"rayService": {"enabled": True}},
    "rayservice-no-discovery": {"rayService": {"enabled": True, "discovery": {"enabled": False}}},
    "servicemonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "custom-backends": CUSTOM_BACKENDS,
    "tls-nlb-edge": {
        "tls": {"secretName": "router-tls", "clientCaSecret": "edge-ca"},
        "nlb": {"enabled": True, "sourceRanges": ["10.0.32.0/20"], "idleTimeoutSeconds": 900},
        "edge": {"headlessService": {"enabled": True}},
        "auth": {
            "keysSecret": {"name": "", "key": "keys.yaml"},
            "secretsManager": {"secretId": "hybrid-router/keys", "region": "eu-west-1"},
        },
        "networkPolicy": {
            "grpcFrom": [{"ipBlock": {"cidr": "10.0.32.0/20"}}],
            "egress": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
        },
        "image": {"digest": "sha256:" + "ab" * 32},
    },
    "edge-relay": {
        "config": {"edge": {"enabled": True, "directory": {"redis_url": "env:REDIS_URL"}}},
        "secretEnv": [{"name": "REDIS_URL", "secretName": "edge-directory", "key": "url"}],
        "edge": {"relay": {"enabled": True}, "headlessService": {"enabled": True}},
        "tls": {"secretName": "router-tls", "clientCaSecret": "edge-ca"},
    },
    "edge-relay-mtls": {
        "config": {"edge": {"enabled": True, "directory": {"redis_url": "env:REDIS_URL"}}},
        "secretEnv": [{"name": "REDIS_URL", "secretName": "edge-directory", "key": "url"}],
        "edge": {"relay": {"enabled": True, "tls": {"secretName": "relay-tls"}}},
    },
    "everything": {
        **copy.deepcopy(CUSTOM_BACKENDS),
        "rayService": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "autoscaling": {"enabled": True, "inflightStreams": {"enabled": True}},
        "nlb": {"enabled": True},
        "edge": {"headlessService": {"enabled": True}},
    },
}


@pytest.fixture(scope="module")
def chart() -> Any:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Rendered manifests: {"objects": [...], "notes": str}."""
    out = chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)
    objects = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    notes = next(t for p, t in out.items() if p.endswith("NOTES.txt"))
    return {"objects": objects, "notes": notes}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str = FULLNAME) -> dict[str, Any]:
    (obj,) = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    return obj


def pod_environ(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The HYBRID_ROUTER__ overrides the pod gets, with $(POD_IP) as kubelet expands it."""
    (c,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {
        e["name"]: e["value"].replace("$(POD_IP)", "10.0.7.21")
        for e in c["env"]
        if e["name"].startswith("HYBRID_ROUTER__") and "value" in e
    }


def router_config(objects: list[dict[str, Any]]) -> Any:
    data = yaml.safe_load(one(objects, "ConfigMap")["data"]["router.yaml"])
    return parse_config(data, source="rendered ConfigMap router.yaml", environ=pod_environ(objects))


# --- every value set -------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_strict_is_clean(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, copy.deepcopy(values), strict=True, namespace=NAMESPACE)

    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_object_validates_against_its_schema(chart: Any, values: dict[str, Any]) -> None:
    objects = render(chart, values)["objects"]

    errors = [err for obj in objects for err in validation_errors(obj)]

    assert objects and errors == []
    elsewhere = {
        (o["kind"], o["metadata"]["name"])
        for o in objects
        if o["metadata"].get("namespace") != NAMESPACE
    }
    assert elsewhere <= {
        ("Role", f"{FULLNAME}-discovery"),
        ("RoleBinding", f"{FULLNAME}-discovery"),
    }


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_configmap_is_a_router_config_the_router_starts_with(
    chart: Any, values: dict[str, Any]
) -> None:
    objects = render(chart, values)["objects"]

    config = router_config(objects)

    check_auth_exposure(config)  # raises when a non-loopback router has no keys
    assert config.server.address == "0.0.0.0:50051"
    deployment = one(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == 50051
    if config.telemetry.metrics.address:
        assert config.telemetry.metrics.address == f"0.0.0.0:{ports['metrics']}"
    grace = config.server.grace_period_s
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > (
        grace + pre_stop
    )


# --- the Deployment ----------------------------------------------------------------------


def test_deployment_probes_drain_and_hardening(chart: Any) -> None:
    objects = render(chart, {})["objects"]
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    (c,) = spec["containers"]

    assert c["readinessProbe"]["grpc"] == {
        "port": 50051,
        "service": "hybrid_router.v1.InferenceRouter",
    }
    assert c["livenessProbe"]["grpc"] == {"port": 50051}
    assert c["startupProbe"]["grpc"] == {"port": 50051}
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > 60, "not restarted mid-drain"
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    assert spec["terminationGracePeriodSeconds"] == 10 + 60 + 10
    assert c["args"] == ["serve", "--config", "/etc/hybrid-router/router.yaml"]
    assert c["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
    assert c["resources"]["limits"]["memory"] == "1Gi"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    keys = {tc["topologyKey"] for tc in spec["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert spec["automountServiceAccountToken"] is False, "no API token without discovery"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["auth-keys"]["mountPath"] == "/etc/hybrid-router/auth"
    assert "subPath" not in mounts["auth-keys"], "a rotated Secret must reach the file"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["auth-keys"]["secret"]["secretName"] == "hybrid-router-keys"
    assert volumes["tmp"]["emptyDir"]["medium"] == "Memory"
    assert one(objects, "Deployment")["spec"]["replicas"] == 2
    assert not by_kind(objects, "Secret"), "the chart references Secrets, never creates them"


def test_config_change_rolls_the_pods(chart: Any) -> None:
    def checksum(values: dict[str, Any]) -> str:
        dep = one(render(chart, values)["objects"], "Deployment")
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) != checksum({"config": {"policy": {"objective": "fastest"}}})


def test_tls_switches_probes_to_tcp_and_mounts_certificates(chart: Any) -> None:
    objects = render(chart, VALUE_SETS["tls-nlb-edge"])["objects"]
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    config = router_config(objects)

    assert config.server.tls.cert_file == "/etc/hybrid-router/tls/tls.crt"
    assert config.server.tls.client_ca_file == "/etc/hybrid-router/client-ca/ca.crt"
    assert c["readinessProbe"] == {
        "tcpSocket": {"port": "grpc"},
        "periodSeconds": 5,
        "failureThreshold": 2,
    }
    assert config.auth.secrets_manager.secret_id == "hybrid-router/keys"
    assert not config.auth.keys_file
    assert c["image"] == "hybrid-router@sha256:" + "ab" * 32
    svc = one(objects, "Service")
    assert svc["spec"]["ports"][0]["appProtocol"] == "kubernetes.io/h2"


# --- Services --------------------------------------------------------------------------


def test_service_exposes_grpc_h2c_and_metrics(chart: Any) -> None:
    objects = render(chart, {})["objects"]
    ports = {p["name"]: p for p in one(objects, "Service")["spec"]["ports"]}

    assert ports["grpc"]["port"] == 50051 and ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert ports["metrics"]["port"] == 9464 and ports["metrics"]["targetPort"] == "metrics"
    names = {o["metadata"]["name"] for o in by_kind(objects, "Service")}
    assert names == {FULLNAME}, "NLB and headless Services are opt-in"


def test_internal_nlb_and_headless_service_for_edge_links(chart: Any) -> None:
    objects = render(chart, VALUE_SETS["tls-nlb-edge"])["objects"]

    nlb = one(objects, "Service", f"{FULLNAME}-nlb")
    ann = nlb["metadata"]["annotations"]
    assert nlb["spec"]["type"] == "LoadBalancer"
    assert nlb["spec"]["loadBalancerClass"] == "service.k8s.aws/nlb"
    assert ann["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert ann["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
    assert (
        "deregistration_delay.timeout_seconds=70"
        in ann["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"]
    )
    assert [p["name"] for p in nlb["spec"]["ports"]] == ["grpc"], "metrics stay private"
    assert nlb["spec"]["loadBalancerSourceRanges"] == ["10.0.32.0/20"]
    # Long-lived edge links and Lambda channels: the listener's idle timeout is raised.
    idle = "service.beta.kubernetes.io/aws-load-balancer-listener-attributes.TCP-50051"
    assert ann[idle] == "tcp.idle_timeout.seconds=900"
    default_nlb = one(
        render(chart, {"nlb": {"enabled": True}})["objects"], "Service", f"{FULLNAME}-nlb"
    )
    assert idle not in default_nlb["metadata"]["annotations"], "0 keeps AWS's default"
    headless = one(objects, "Service", f"{FULLNAME}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is False


# --- identity and RBAC ---------------------------------------------------------------------


def test_service_account_carries_the_irsa_role(chart: Any) -> None:
    objects = render(chart, CUSTOM_BACKENDS)["objects"]
    sa = one(objects, "ServiceAccount")

    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == (
        "arn:aws:iam::123456789012:role/hybrid-router"
    )
    assert sa["automountServiceAccountToken"] is True  # discovery is on here
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == FULLNAME
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "provider-keys",
        "key": "openai",
    }
    assert env["AWS_REGION"]["value"] == "eu-west-1"


def test_no_rbac_without_discovery(chart: Any) -> None:
    objects = render(chart, {})["objects"]

    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")


def test_rbac_grants_only_endpointslice_reads_where_discovery_looks(chart: Any) -> None:
    objects = render(chart, VALUE_SETS["everything"])["objects"]

    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["inference", NAMESPACE]
    for role in roles:
        assert role["rules"] == [
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["get", "list", "watch"],
            }
        ]
    for binding in by_kind(objects, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
        ]
        assert binding["roleRef"]["name"] == f"{FULLNAME}-discovery"
    config = router_config(objects)
    sources = {s.name: s for s in config.discovery.kubernetes.sources}
    assert sources["vllm"].namespace == "inference"
    assert sources["gpu-ray"].namespace == NAMESPACE


# --- scaling and availability ----------------------------------------------------------------


def test_hpa_cpu_and_inflight_streams(chart: Any) -> None:
    objects = render(chart, VALUE_SETS["autoscaling"])["objects"]
    hpa = one(objects, "HorizontalPodAutoscaler")

    assert "replicas" not in one(objects, "Deployment")["spec"], "the HPA owns replicas"
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 12
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    cpu, streams = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    assert cpu["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    assert streams["pods"]["metric"]["name"] == "hybrid_router_inflight_streams"
    assert streams["pods"]["target"] == {"type": "AverageValue", "averageValue": "150"}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert not by_kind(render(chart, {})["objects"], "HorizontalPodAutoscaler")


def test_pdb_and_network_policy(chart: Any) -> None:
    objects = render(chart, {})["objects"]
    pdb = one(objects, "PodDisruptionBudget")
    netpol = one(objects, "NetworkPolicy")
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]

    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert netpol["spec"]["podSelector"]["matchLabels"] == selector
    assert netpol["spec"]["policyTypes"] == ["Ingress"]
    grpc_rule, metrics_rule = netpol["spec"]["ingress"]
    assert grpc_rule == {"ports": [{"port": "grpc", "protocol": "TCP"}]}
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    off = render(chart, VALUE_SETS["autoscaling-off-no-pdb-no-netpol"])["objects"]
    assert not by_kind(off, "PodDisruptionBudget") and not by_kind(off, "NetworkPolicy")


def test_service_monitor_scrapes_the_metrics_port(chart: Any) -> None:
    objects = render(chart, VALUE_SETS["servicemonitor"])["objects"]
    sm = one(objects, "ServiceMonitor")

    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert (
        sm["spec"]["selector"]["matchLabels"]
        == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    )
    assert not by_kind(render(chart, {})["objects"], "ServiceMonitor")


# --- the GPU tier ------------------------------------------------------------------------------


def test_rayservice_gpu_tier_is_discovered_by_the_router(chart: Any) -> None:
    objects = render(chart, VALUE_SETS["rayservice"])["objects"]
    rs = one(objects, "RayService", f"{FULLNAME}-gpu")
    spec = rs["spec"]

    serve = yaml.safe_load(spec["serveConfigV2"])
    assert serve["grpc_options"]["port"] == 9000
    assert serve["grpc_options"]["grpc_servicer_functions"] == [
        "hybrid_router.v1.model_service_pb2_grpc.add_ModelServiceServicer_to_server"
    ]
    assert spec["serveService"]["metadata"]["name"] == f"{FULLNAME}-gpu-serve"
    assert spec["serveService"]["spec"]["ports"][0]["name"] == "grpc"
    (workers,) = spec["rayClusterConfig"]["workerGroupSpecs"]
    (worker,) = workers["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in workers[
        "template"
    ]["spec"]["tolerations"]
    assert spec["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"

    (source,) = router_config(objects).discovery.kubernetes.sources
    assert source.label_selector == f"kubernetes.io/service-name={FULLNAME}-gpu-serve"
    assert source.port_name == "grpc" and source.backend_per == "service"
    backend = source.backend_config("gpu-ray-x", "host:9000")
    assert backend.tier.value == "gpu" and backend.model == "meta-llama/Llama-3.1-8B-Instruct"
    apps = {a["name"]: a for a in serve["applications"]}
    assert apps["gpu"]["import_path"] == "serving.ray_app.app:build_app"
    assert all(a.get("route_prefix") for a in apps.values()), "Serve's gRPC proxy needs one"
    args = ModelAppArgs.model_validate(apps["gpu"]["args"])  # the app's own args model
    assert args.engine == "vllm" and args.deployment.ray_actor_options.num_gpus == 1
    assert by_kind(objects, "Role"), "discovery of the RayService needs its Role"
    assert not by_kind(render(chart, {})["objects"], "RayService")


# --- bad values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": 0}, "at '/replicaCount': minimum: got 0, want 1"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        (
            {"ports": {"grpc": "fifty", "metrics": 9464}},
            "at '/ports/grpc': got string, want integer",
        ),
        ({"image": {"repository": ""}}, "at '/image/repository'"),
        ({"serviceAccount": {"roleArn": "my-role"}}, "at '/serviceAccount/roleArn'"),
        (
            {"autoscaling": {"targetCPUUtilizationPercentage": 150}},
            "targetCPUUtilizationPercentage",
        ),
        (
            {"config": {"discovery": {"kubernetes": {"sources": [{"name": "gpu"}]}}}},
            "missing properties 'label_selector', 'backend'",
        ),
        ({"rayService": {"gpuWorkers": {"gpus": 0}}}, "at '/rayService/gpuWorkers/gpus'"),
        ({"drain": {"streamGraceSeconds": -1}}, "at '/drain/streamGraceSeconds': minimum: got -1"),
        ({"nlb": {"idleTimeoutSeconds": 30}}, "at '/nlb/idleTimeoutSeconds'"),
    ],
    ids=[
        "replicas-0",
        "typo-top-level",
        "port-string",
        "empty-repository",
        "irsa-not-an-arn",
        "cpu-over-100",
        "discovery-source-incomplete",
        "zero-gpus",
        "negative-grace",
        "nlb-idle-under-60",
    ],
)
def test_values_schema_rejects_bad_values_readably(
    chart: Any, values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)

    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"auth": {"keysSecret": {"name": "", "key": "keys.yaml"}}},
            "set auth.keysSecret.name",
        ),
        (
            {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
            "autoscaling.minReplicas (5) must not exceed autoscaling.maxReplicas (2)",
        ),
        (
            {"probes": {"liveness": {"periodSeconds": 5, "failureThreshold": 3}}},
            "must exceed drain.streamGraceSeconds (60 s)",
        ),
        ({"serviceMonitor": {"enabled": True}, "metrics": {"enabled": False}}, "needs metrics"),
    ],
    ids=["no-api-keys", "hpa-min-over-max", "liveness-shorter-than-drain", "monitor-no-metrics"],
)
def test_chart_refuses_values_that_cannot_run(
    chart: Any, values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(helm.HelmError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)

    assert expected in str(err.value)


def test_notes_say_how_to_call_it(chart: Any) -> None:
    notes = render(chart, VALUE_SETS["everything"])["notes"]

    assert f"kubectl -n {NAMESPACE} port-forward svc/{FULLNAME} 50051:50051" in notes
    assert "grpcurl -plaintext" in notes and "hybrid-router chat" in notes
    assert "create secret generic hybrid-router-keys" in notes
    assert f"{FULLNAME}-nlb" in notes and f"{FULLNAME}-gpu" in notes


def test_edge_relay_advertises_the_pod_ip_to_the_other_replicas(chart: Any) -> None:
    objects = render(chart, VALUE_SETS["edge-relay"])["objects"]
    (c,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    config = router_config(objects)

    assert config.edge.relay.address == "0.0.0.0:50061"
    assert config.edge.relay.advertise_address == "10.0.7.21:50061"
    assert {"name": "relay", "containerPort": 50061, "protocol": "TCP"} in c["ports"]
    env = [e["name"] for e in c["env"]]
    assert env.index("POD_IP") < env.index("HYBRID_ROUTER__EDGE__RELAY__ADVERTISE_ADDRESS")
    relay_rule = one(objects, "NetworkPolicy")["spec"]["ingress"][1]
    assert relay_rule["ports"] == [{"port": "relay", "protocol": "TCP"}]
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert relay_rule["from"] == [{"podSelector": {"matchLabels": selector}}]
    assert "relay" not in [p["name"] for p in one(objects, "Service")["spec"]["ports"]]


def test_edge_relay_mtls_mounts_the_secret_as_a_directory_and_configures_it(
    chart: Any,
) -> None:
    objects = render(chart, VALUE_SETS["edge-relay-mtls"])["objects"]
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    tls = router_config(objects).edge.relay.tls

    assert tls.enabled
    assert tls.cert_file == "/etc/hybrid-router/relay-tls/tls.crt"
    assert tls.key_file == "/etc/hybrid-router/relay-tls/tls.key"
    assert tls.ca_file == "/etc/hybrid-router/relay-tls/ca.crt"
    assert tls.server_name == "hybrid-router-relay"
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "relay-tls"]
    assert mount == {
        "name": "relay-tls",
        "mountPath": "/etc/hybrid-router/relay-tls",
        "readOnly": True,
    }
    assert "subPath" not in mount  # a renewed Secret must reach the files
    (volume,) = [v for v in spec["volumes"] if v["name"] == "relay-tls"]
    assert volume["secret"] == {"secretName": "relay-tls"}

    named = copy.deepcopy(VALUE_SETS["edge-relay-mtls"])
    named["edge"]["relay"]["tls"]["serverName"] = "relay.router.svc"
    assert router_config(render(chart, named)["objects"]).edge.relay.tls.server_name == (
        "relay.router.svc"
    )
    plain = router_config(render(chart, VALUE_SETS["edge-relay"])["objects"])
    assert not plain.edge.relay.tls.enabled
    with pytest.raises(helm.HelmError) as err:
        chart.render(
            {"edge": {"relay": {"tls": {"secretName": "relay-tls"}}}},
            name=RELEASE,
            namespace=NAMESPACE,
        )
    assert "edge.relay.tls.secretName needs edge.relay.enabled" in str(err.value)


def test_rayservice_discovery_targets_the_serve_application(chart: Any) -> None:
    """The discovered GPU backend must name its Serve application: the proxy routes a call
    without `application` metadata only when exactly one app exists, and the RayService
    deploys two (the model app and its load board)."""
    cfg = router_config(render(chart, VALUE_SETS["everything"])["objects"])
    (source,) = [s for s in cfg.discovery.kubernetes.sources if s.name == "gpu-ray"]
    assert source.backend["kind"] == "ray_serve"
    assert source.backend["serve_application"] == "gpu"
