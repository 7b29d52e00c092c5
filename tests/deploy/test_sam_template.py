"""deploy/sam/template.yaml: cfn-lint on the SAM template and on its translation, the SAM
translator's own validation, and the properties the Lambda issue asks of it (tracing,
reserved concurrency, VPC, least-privilege roles, DLQ redrive, alarms), and the streaming
function's Lambda Web Adapter wiring (layer, exec wrapper, port, readiness path, Function
URL in RESPONSE_STREAM mode)."""

from __future__ import annotations

import ast
import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint
from cfnlint.decode import cfn_yaml
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform

from lambda_edge import settings, stream_server

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "sam" / "template.yaml"
FUNCTIONS = ("HttpFunction", "WebSocketFunction", "JobsFunction", "StreamFunction")
#: The Lambda Web Adapter's own variables (the streaming function), with what they must be.
ADAPTER_ENV = {
    "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
    "AWS_LWA_INVOKE_MODE": "response_stream",
    stream_server.ENV_LWA_PORT: str(stream_server.DEFAULT_PORT),
    "AWS_LWA_READINESS_CHECK_PATH": stream_server.HEALTH_PATH,
}
PARAMETERS = {
    "RouterAddress": "router.internal.example:50051",
    "RouterCidr": "10.20.0.0/16",
    "RouterApiKeySecretArn": (
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:router-key-AbCdEf"
    ),
    "VpcId": "vpc-0123456789abcdef0",
    "SubnetIds": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
    "PowertoolsLayerArn": (
        "arn:aws:lambda:eu-west-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-x86_64:1"
    ),
    "WebAdapterLayerArn": "arn:aws:lambda:eu-west-1:753240598075:layer:LambdaAdapterLayerX86:26",
}
#: The AWS-managed policies SAM may attach: logging, X-Ray and VPC networking, no more.
ALLOWED_MANAGED = {
    "service-role/AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
    "service-role/AWSLambdaVPCAccessExecutionRole",
}


class NoLookups(ManagedPolicyLoader):
    """The template names no managed policy by name; a lookup would be a mistake."""

    def __init__(self) -> None:
        pass

    def load(self) -> dict[str, str]:
        raise AssertionError("the template must not need IAM managed-policy name lookups")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return dict(cfn_yaml.load(str(TEMPLATE)))


@pytest.fixture(scope="module")
def translated(template: dict[str, Any]) -> dict[str, Any]:
    """What `sam package` + the SAM transform produce (local artifact paths -> S3)."""
    t = json.loads(json.dumps(template))
    t["Globals"]["Function"]["CodeUri"] = "s3://artifacts-bucket/lambda-functions.zip"
    t["Resources"]["RouterClientLayer"]["Properties"]["ContentUri"] = (
        "s3://artifacts-bucket/lambda-layer.zip"
    )
    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = "eu-west-1"
    try:
        return transform(t, copy.deepcopy(PARAMETERS), NoLookups())
    finally:
        if saved is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved


def _lint(text: str) -> list[str]:
    matches = lint(text, config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
    return [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches]


def test_cfn_lint_passes_on_the_sam_template() -> None:
    assert _lint(TEMPLATE.read_text()) == []


def test_cfn_lint_passes_on_the_translated_template(translated: dict[str, Any]) -> None:
    assert _lint(json.dumps(translated)) == []


def test_artifacts_are_the_build_outputs(template: dict[str, Any]) -> None:
    g = template["Globals"]["Function"]
    assert (TEMPLATE.parent / g["CodeUri"]).resolve() == REPO / "build" / "lambda-functions.zip"
    layer = template["Resources"]["RouterClientLayer"]["Properties"]
    assert (TEMPLATE.parent / layer["ContentUri"]).resolve() == REPO / "build" / "lambda-layer.zip"
    assert layer["CompatibleRuntimes"] == [g["Runtime"]]


def test_handlers_exist_and_env_vars_are_ours(template: dict[str, Any]) -> None:
    known = {v for k, v in vars(settings).items() if k.startswith("ENV_") and isinstance(v, str)}
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    for name in FUNCTIONS:
        props = template["Resources"][name]["Properties"]
        env.update(props.get("Environment", {}).get("Variables", {}))
        if props["Handler"].endswith(".sh"):
            # Behind the Lambda Web Adapter the handler is a script that /opt/bootstrap
            # executes from the package root; it starts the streaming server.
            script = REPO / props["Handler"]
            assert script.is_file() and script.stat().st_mode & 0o111, script
            assert "exec python3 -m lambda_edge.stream_server" in script.read_text()
            continue
        module, _, attr = props["Handler"].rpartition(".")
        path = REPO / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        assigned = {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        assert attr in assigned, f"{props['Handler']}: {path} defines no {attr}"
    known |= set(ADAPTER_ENV)
    unknown = {k for k in env if k not in known and k != "POWERTOOLS_LOG_LEVEL"}
    assert unknown == set(), f"variables the code does not read: {unknown}"


def test_functions_traced_in_vpc_with_reserved_concurrency(translated: dict[str, Any]) -> None:
    res = translated["Resources"]
    for name in FUNCTIONS:
        fn = res[name]
        assert fn["Type"] == "AWS::Lambda::Function"
        p = fn["Properties"]
        assert p["TracingConfig"] == {"Mode": "Active"}
        assert "Ref" in p["ReservedConcurrentExecutions"]
        assert p["VpcConfig"]["SecurityGroupIds"] == [{"Ref": "FunctionSecurityGroup"}]
        variables = p["Environment"]["Variables"]
        assert variables["HYBRID_ROUTER_ADDRESS"] == {"Ref": "RouterAddress"}
        assert variables["HYBRID_ROUTER_API_KEY_SECRET"] == {"Ref": "RouterApiKeySecretArn"}
    # The job function keeps the globals and adds its own.
    jobs_env = res["JobsFunction"]["Properties"]["Environment"]["Variables"]
    assert jobs_env["HYBRID_ROUTER_JOBS_BUCKET"] == {"Ref": "ResultsBucket"}
    assert jobs_env["HYBRID_ROUTER_IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    assert jobs_env["HYBRID_ROUTER_JOBS_DLQ_URL"] == {"Ref": "JobsDeadLetterQueue"}
    # Egress: the router's port to its CIDR, HTTPS for AWS APIs; nothing else.
    egress = res["FunctionSecurityGroup"]["Properties"]["SecurityGroupEgress"]
    assert {(e["IpProtocol"], json.dumps(e["FromPort"])) for e in egress} == {
        ("tcp", json.dumps({"Ref": "RouterPort"})),
        ("tcp", "443"),
    }


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for policy in role["Properties"].get("Policies", []):
        out.extend(policy["PolicyDocument"]["Statement"])
    return out


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    acts: set[str] = set()
    for s in statements:
        a = s["Action"]
        acts.update([a] if isinstance(a, str) else a)
    return acts


def test_each_function_role_is_least_privilege(translated: dict[str, Any]) -> None:
    res = translated["Resources"]
    roles = {name: res[f"{name}Role"] for name in FUNCTIONS}
    for name, role in roles.items():
        managed = {
            re.sub(
                r"^arn:[^:]+:iam::aws:policy/",
                "",
                m if isinstance(m, str) else m["Fn::Sub"].split(":policy/")[-1],
            )
            for m in role["Properties"]["ManagedPolicyArns"]
        }
        assert managed <= ALLOWED_MANAGED, f"{name}: {managed - ALLOWED_MANAGED}"
        for s in _statements(role):
            actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
            assert all("*" not in a for a in actions), f"{name}: wildcard action in {s}"
            assert s["Resource"] != "*", f"{name}: statement on every resource: {s}"

    http = _actions(_statements(roles["HttpFunction"]))
    assert http == {"secretsmanager:GetSecretValue"}
    assert _actions(_statements(roles["StreamFunction"])) == {"secretsmanager:GetSecretValue"}
    ws = _actions(_statements(roles["WebSocketFunction"]))
    assert ws == {"secretsmanager:GetSecretValue", "execute-api:ManageConnections"}
    manage = next(
        s
        for s in _statements(roles["WebSocketFunction"])
        if s["Action"] == "execute-api:ManageConnections"
    )
    assert manage["Resource"]["Fn::Sub"].endswith("${WebSocketApi}/prod/POST/@connections/*")
    jobs = _actions(_statements(roles["JobsFunction"]))
    assert jobs == {
        "secretsmanager:GetSecretValue",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        "sqs:SendMessage",
        "s3:PutObject",
        "s3:DeleteObject",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }
    send = next(s for s in _statements(roles["JobsFunction"]) if s["Action"] == "sqs:SendMessage")
    assert send["Resource"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}
    puts = next(s for s in _statements(roles["JobsFunction"]) if s["Action"] == "s3:PutObject")
    assert [r["Fn::Sub"] for r in puts["Resource"]] == [
        "${ResultsBucket.Arn}/results/*",
        "${ResultsBucket.Arn}/failures/*",
    ]


def test_sqs_jobs_report_batch_item_failures_and_redrive_to_the_dlq(
    translated: dict[str, Any],
) -> None:
    res = translated["Resources"]
    q = res["JobsQueue"]["Properties"]
    assert q["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]
    }
    assert q["RedrivePolicy"]["maxReceiveCount"] >= 2
    assert q["VisibilityTimeout"] >= 6 * res["JobsFunction"]["Properties"]["Timeout"]
    mappings = [r for r in res.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert len(mappings) == 1
    m = mappings[0]["Properties"]
    assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert m["EventSourceArn"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    table = res["IdempotencyTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_apis_and_alarms(translated: dict[str, Any]) -> None:
    res = translated["Resources"]
    types = [r["Type"] for r in res.values()]
    assert types.count("AWS::ApiGatewayV2::Api") == 2  # the HTTP API and the WebSocket API
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in res.values()
        if r["Type"] == "AWS::ApiGatewayV2::Route"
    }
    assert set(routes) == {"$connect", "$disconnect", "$default"}
    # SAM writes the HTTP API's routes as OpenAPI, each with the IAM authorizer.
    paths = res["HttpApi"]["Properties"]["Body"]["paths"]
    assert set(paths) == {"/v1/generate", "/v1/route", "/v1/chat/completions"}
    for path in paths.values():
        assert set(path) == {"post"}
        assert path["post"]["security"] == [{"AWS_IAM": []}]
    assert routes["$connect"]["AuthorizationType"] == "AWS_IAM"
    assert res["HttpFunctionUrl"]["Properties"]["AuthType"] == "AWS_IAM"

    alarms = [r["Properties"] for r in res.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    throttles = {
        a["Dimensions"][0]["Value"]["Ref"] for a in alarms if a.get("MetricName") == "Throttles"
    }
    assert throttles == set(FUNCTIONS)
    error_rates = {
        a["Metrics"][0]["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
        for a in alarms
        if "Metrics" in a
    }
    assert error_rates == set(FUNCTIONS)
    dlq = [a for a in alarms if a.get("Namespace") == "AWS/SQS"]
    assert len(dlq) == 1
    assert dlq[0]["Threshold"] == 0 and dlq[0]["ComparisonOperator"] == "GreaterThanThreshold"
    assert dlq[0]["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]}


def test_stream_function_runs_behind_the_web_adapter_with_a_streaming_url(
    template: dict[str, Any], translated: dict[str, Any]
) -> None:
    res = translated["Resources"]
    fn = res["StreamFunction"]["Properties"]
    assert fn["Handler"] == "lambda_edge/run_stream.sh"
    assert fn["Runtime"] == template["Globals"]["Function"]["Runtime"]
    # The adapter's layer joins the globals' (client and Powertools, which the server uses).
    # (SAM names the layer version RouterClientLayer<hash>.)
    layers = [layer["Ref"] for layer in fn["Layers"]]
    assert layers[0].startswith("RouterClientLayer")
    assert layers[1:] == ["PowertoolsLayerArn", "WebAdapterLayerArn"]
    variables = fn["Environment"]["Variables"]
    assert {k: variables[k] for k in ADAPTER_ENV} == ADAPTER_ENV
    assert variables["HYBRID_ROUTER_ADDRESS"] == {"Ref": "RouterAddress"}
    # A Function URL streams for at most 15 minutes: the timeout parameter stays within.
    assert fn["Timeout"] == {"Ref": "StreamTimeout"}
    assert template["Parameters"]["StreamTimeout"]["MaxValue"] == 900
    url = res["StreamFunctionUrl"]["Properties"]
    assert url["AuthType"] == "AWS_IAM" and url["InvokeMode"] == "RESPONSE_STREAM"
    assert url["TargetFunctionArn"] == {"Ref": "StreamFunction"}
    # The buffered HTTP function's URL keeps the default (buffered) invoke mode.
    assert res["HttpFunctionUrl"]["Properties"].get("InvokeMode", "BUFFERED") == "BUFFERED"
    assert "StreamFunctionUrl" in translated["Outputs"]
