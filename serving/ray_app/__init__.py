"""The GPU tier: ``hybrid_router.v1.ModelService`` as a Ray Serve application.

Two Serve applications behind Serve's gRPC proxy; the caller picks one with the gRPC
metadata ``application: <name>``:

- ``<name>`` (ingress ``ModelServer``): ``Generate`` (server streaming, token by token) and
  ``Info`` (the replica that answered) over an engine from ``serving.engines``
  (``llamacpp`` on CPU, ``vllm`` on GPU, ``scripted`` for tests).
- ``<name>-load`` (ingress ``LoadBoard``, one replica): every ``ModelServer`` replica
  reports its queued and running requests to it as they change; its ``Info`` answers with
  the sums over all live replicas, the deployment-wide load the router routes on.

Modules: ``settings`` (validated application arguments), ``deployment`` (``ModelServer``),
``load`` (``LoadBoard`` and the replica-side ``LoadReporter``), ``app`` (the builders
``serve run`` / ``serve deploy`` import), ``local`` (Ray + Serve on this machine; also
``python -m serving.ray_app``). Ray is imported only inside this package:
``serving.engines`` and ``serving.model_server`` import without it.
"""
