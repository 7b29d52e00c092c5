"""The Greengrass v2 edge agent (docs/edge.md).

Runs a small model on the device through the engine interface of ``serving/``, dials
out to the router over EdgeLink (gRPC, mTLS), serves the requests the router sends,
and keeps the model at the version operators choose (S3 manifest, sha256, atomic
install, smoke test, rollback). Never imports ``router``: it shares only the generated
contract (``hybrid_router.v1``) and ``serving.engines``.

Modules: ``agent`` (entry point), ``config``, ``link`` (EdgeLink client), ``backoff``,
``runner`` (requests on the engine), ``slot`` (the engine in use, swapped without
dropping requests), ``engines`` (engine from an installed artifact), ``manifest``,
``store`` (local model files), ``s3``, ``sync`` (desired version -> installed and
serving), ``ipc`` (Greengrass IPC, optional), ``hardware``.
"""

#: Compared with a manifest's ``min_agent_version``; bump with changes devices must have.
AGENT_VERSION = "0.1.0"
