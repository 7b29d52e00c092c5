"""``hybrid-router models publish | set-desired | status``: edge models in the S3 store.

- ``publish FILE``: hash the file (sha256, size), upload it to
  ``<prefix>/<name>/<version>/<file>``, write the manifest beside it
  (greengrass/manifest.py) and, unless ``--no-desired``, point
  ``<prefix>/<name>/desired.json`` at the new version. Routers read the pointer
  (``edge.models``) and tell their devices, which download, verify and switch.
  Versions are immutable: publishing one that exists fails unless ``--force``.
- ``set-desired``: point the fleet at a published version (roll forward or back).
- ``status``: which devices run which version (from a router), and with ``--bucket``
  the published versions and the desired one.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_router_cli import aws, registry, render
from hybrid_router_cli.connect import client_setup
from hybrid_router_cli.errors import EXIT_USAGE, CliError
from hybrid_router_cli.options import add_connection_options
from hybrid_router_cli.registry import Command

if TYPE_CHECKING:
    from greengrass.manifest import Manifest

_NOTE = """
Devices download from the bucket with their own credentials (Greengrass: the token
exchange role, which needs s3:GetObject on <prefix>/*). See docs/edge.md.
"""
_PUBLISH_EXAMPLES = """\
  hybrid-router models publish gemma3-270m-v2.gguf --bucket my-models --name gemma3-270m \\
      --version v2 --context-window 2048 --model-family gemma3
  hybrid-router models publish gemma3-270m-v3.gguf --bucket my-models --name gemma3-270m \\
      --version v3 --context-window 2048 --no-desired --json   # upload now, roll out later
"""
_SET_DESIRED_EXAMPLES = """\
  hybrid-router models set-desired --bucket my-models --name gemma3-270m --version v1
"""
_STATUS_EXAMPLES = """\
  hybrid-router models status --address 127.0.0.1:50051 --bucket my-models
  hybrid-router models status --address 127.0.0.1:50051 --json
"""
_EXAMPLES = "examples:\n" + _PUBLISH_EXAMPLES + _SET_DESIRED_EXAMPLES + _STATUS_EXAMPLES + _NOTE

#: llama.cpp's n_ctx is a C int; the contract's context_window fields are uint32.
MAX_CONTEXT_WINDOW = 2**31 - 1
GGUF_MAGIC = b"GGUF"


def _store_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    g = p.add_argument_group("model store")
    g.add_argument("--bucket", required=required, help="S3 bucket of the model store")
    g.add_argument("--prefix", default="models", help="key prefix (default: %(default)s)")
    g.add_argument("--region", default="", help="AWS region (default: the AWS chain's)")
    g.add_argument("--endpoint-url", default="", help="S3 endpoint override")


def _action(msub: Any, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    return msub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog="examples:\n" + examples + _NOTE,
        formatter_class=registry.FORMATTER,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    msub = p.add_subparsers(dest="models_command", metavar="COMMAND", required=True)

    pub = _action(msub, "publish", "upload a model file and write its manifest", _PUBLISH_EXAMPLES)
    pub.add_argument("file", help="the model file (a GGUF for llama.cpp devices)")
    pub.add_argument("--name", required=True, help="model name, e.g. gemma3-270m")
    pub.add_argument("--version", required=True, help="version label, e.g. v2 or 2025-06-01")
    pub.add_argument("--context-window", type=int, required=True, help="tokens the device runs")
    pub.add_argument("--model-family", default="", help="model family, e.g. gemma3")
    pub.add_argument(
        "--format", choices=["gguf", "scripted"], default="gguf", help="artifact format"
    )
    pub.add_argument("--min-agent-version", default="0.1.0", help="oldest agent that may load it")
    pub.add_argument(
        "--no-desired", action="store_true", help="do not point the fleet at this version"
    )
    pub.add_argument("--force", action="store_true", help="overwrite an existing version")
    pub.add_argument("--json", action="store_true", help="print the manifest as JSON")
    _store_options(pub, required=True)

    des = _action(
        msub, "set-desired", "point the fleet at a published version", _SET_DESIRED_EXAMPLES
    )
    des.add_argument("--name", required=True)
    des.add_argument("--version", required=True)
    des.add_argument("--json", action="store_true")
    _store_options(des, required=True)

    st = _action(msub, "status", "which devices run which version", _STATUS_EXAMPLES)
    _store_options(st, required=False)
    add_connection_options(st)


def run(args: argparse.Namespace) -> int:
    aws.check_endpoint_url(args.endpoint_url)
    action = {"publish": _cmd_publish, "set-desired": _cmd_set_desired, "status": _cmd_status}
    return action[args.models_command](args)


# --- S3 -------------------------------------------------------------------------------------


def _s3(args: argparse.Namespace) -> Any:
    return aws.client(
        "s3", region=args.region, endpoint_url=args.endpoint_url, what=f"s3://{args.bucket}"
    )


def _aws_error(exc: Exception, what: str) -> CliError:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return CliError(f"{what}: no AWS credentials (set a profile or AWS_* variables)")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return CliError(f"{what}: {err.get('Code', '')}: {err.get('Message', '')}".rstrip(": "))
    return CliError(f"{what}: {exc}")


def _exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def _hash(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _check_artifact(path: Path, fmt: str) -> None:
    """A non-empty file; a ``gguf`` one starts with the GGUF magic."""
    with path.open("rb") as f:
        head = f.read(len(GGUF_MAGIC))
    if not head:
        raise CliError(f"{path}: empty file; pass the model file", exit_code=EXIT_USAGE)
    if fmt == "gguf" and head != GGUF_MAGIC:
        raise CliError(
            f"{path} is not a GGUF model (first bytes {head!r}, expected {GGUF_MAGIC!r}); "
            "pass a .gguf file (llama.cpp's format), or --format scripted for a scripted "
            "engine's options",
            exit_code=EXIT_USAGE,
        )


def _segments(args: argparse.Namespace) -> None:
    from greengrass.manifest import ManifestError, check_segment

    try:
        check_segment(args.name, "--name")
        check_segment(args.version, "--version")
    except ManifestError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from None


def publish(args: argparse.Namespace) -> Manifest:
    from greengrass.manifest import (
        Manifest,
        ManifestError,
        manifest_key,
        parse_manifest,
        version_prefix,
    )

    _segments(args)
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{args.file}: no such file", exit_code=EXIT_USAGE)
    if not 16 <= args.context_window <= MAX_CONTEXT_WINDOW:
        raise CliError(
            f"--context-window: must be >= 16 and <= {MAX_CONTEXT_WINDOW}, got "
            f"{args.context_window}; pass the context the device runs, e.g. 2048",
            exit_code=EXIT_USAGE,
        )
    _check_artifact(path, args.format)
    sha, size = _hash(path)
    key = version_prefix(args.prefix, args.name, args.version) + path.name
    manifest = Manifest(
        name=args.name,
        version=args.version,
        artifact_key=key,
        sha256=sha,
        size=size,
        context_window=args.context_window,
        min_agent_version=args.min_agent_version,
        model_family=args.model_family,
        format=args.format,
        published_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    try:
        parse_manifest(manifest.to_json())
    except ManifestError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from None
    s3 = _s3(args)
    mkey = manifest_key(args.prefix, args.name, args.version)
    try:
        if not args.force and _exists(s3, args.bucket, mkey):
            raise CliError(
                f"s3://{args.bucket}/{mkey} exists: versions are immutable; publish a new "
                "version (or pass --force)"
            )
        s3.upload_file(str(path), args.bucket, key)
        s3.put_object(
            Bucket=args.bucket,
            Key=mkey,
            Body=manifest.to_json().encode(),
            ContentType="application/json",
        )
        if not args.no_desired:
            _put_desired(s3, args.bucket, args.prefix, args.name, args.version)
    except CliError:
        raise
    except Exception as exc:
        raise _aws_error(exc, f"s3://{args.bucket}") from None
    return manifest


def _put_desired(s3: Any, bucket: str, prefix: str, name: str, version: str) -> None:
    from greengrass.manifest import desired_key

    body = {"version": version, "updated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    s3.put_object(
        Bucket=bucket,
        Key=desired_key(prefix, name),
        Body=json.dumps(body).encode(),
        ContentType="application/json",
    )


def _cmd_publish(args: argparse.Namespace) -> int:
    manifest = publish(args)
    if args.json:
        print(manifest.to_json(), end="")
        return 0
    print(
        f"published {manifest.name} {manifest.version}: s3://{args.bucket}/"
        f"{manifest.artifact_key} ({manifest.size} bytes, sha256 {manifest.sha256})"
    )
    if not args.no_desired:
        print(f"desired version of {manifest.name} is now {manifest.version}")
    return 0


def _cmd_set_desired(args: argparse.Namespace) -> int:
    from greengrass.manifest import manifest_key

    _segments(args)
    s3 = _s3(args)
    mkey = manifest_key(args.prefix, args.name, args.version)
    try:
        if not _exists(s3, args.bucket, mkey):
            raise CliError(f"s3://{args.bucket}/{mkey} not found: publish the version first")
        _put_desired(s3, args.bucket, args.prefix, args.name, args.version)
    except CliError:
        raise
    except Exception as exc:
        raise _aws_error(exc, f"s3://{args.bucket}") from None
    if args.json:
        print(render.to_json({"name": args.name, "desired": args.version}, indent=None))
    else:
        print(f"desired version of {args.name} is now {args.version}")
    return 0


def store_listing(args: argparse.Namespace, s3: Any = None) -> dict[str, dict[str, Any]]:
    """{model: {"versions": [...], "desired": v}} from the bucket."""
    from greengrass.manifest import desired_key

    s3 = s3 or _s3(args)
    base = args.prefix.strip("/") + "/" if args.prefix.strip("/") else ""
    out: dict[str, dict[str, Any]] = {}
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=args.bucket, Prefix=base)
        for page in pages:
            for obj in page.get("Contents", ()):
                rest = obj["Key"][len(base) :].split("/")
                if len(rest) == 3 and rest[2] == "manifest.json":
                    out.setdefault(rest[0], {"versions": [], "desired": ""})["versions"].append(
                        rest[1]
                    )
        for name, info in out.items():
            try:
                body = s3.get_object(Bucket=args.bucket, Key=desired_key(args.prefix, name))
                info["desired"] = str(json.loads(body["Body"].read()).get("version", ""))
            except Exception:
                info["desired"] = ""
    except Exception as exc:
        raise _aws_error(exc, f"s3://{args.bucket}") from None
    return out


def _cmd_status(args: argparse.Namespace) -> int:
    from hybrid_router_cli.commands.devices import list_devices

    address, metadata = client_setup(args)
    s3 = _s3(args) if args.bucket else None  # its flags are checked before the router call
    resp = asyncio.run(list_devices(address, metadata, args))
    store = store_listing(args, s3) if args.bucket else {}
    rows: dict[tuple[str, str], list[tuple[str, bool]]] = {}
    for d in resp.devices:
        for m in d.models:
            rows.setdefault((m.name, m.version), []).append((d.device_id, d.online))
    for name, info in store.items():
        for v in info["versions"]:
            rows.setdefault((name, v), [])
    models = [
        {
            "name": n,
            "version": v,
            "devices": [d for d, _ in devs],
            "online": sum(1 for _, on in devs if on),
            "published": v in store.get(n, {}).get("versions", ()),
            "desired": store.get(n, {}).get("desired", "") == v,
        }
        for (n, v), devs in sorted(rows.items())
    ]
    if args.json:
        print(render.to_json({"router_id": resp.router_id, "models": models}))
        return 0
    table = render.model_versions_table(models, address=address, store_read=bool(store))
    render.make_console().print(table)
    return 0


COMMAND = Command(
    name="models",
    help="publish edge models to S3 and see which devices run which version",
    description=(
        "Edge models in the S3 model store: publish uploads a model file and writes its "
        "manifest (and by default makes it the fleet's desired version); set-desired "
        "points the fleet at a published version; status shows which devices run which "
        "version."
    ),
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
