"""The edge domain: devices that dial in over EdgeLink (docs/edge.md) and the hub that
turns them into backends.

- ``devices``: device records (``DeviceState``, the hub's ``DeviceEntry``), validation,
  backend spec and fleet-view conversions, the directory's JSON
- ``hub``: entries, backends in the registry, heartbeat timeout, directory sync, desired
  versions
- ``desired``: desired model versions (config and the S3 model store)

The other layers of the edge tier live with their kind:

- ``router.server.edge_link``: ``EdgeLink.Connect``, ``EdgeFleet.ListDevices`` and
  ``start_edge`` (what ``router.server.app`` calls when ``edge.enabled`` is on)
- ``router.server.relay``: the replica-to-replica relay port (ModelService protocol)
- ``router.backends.edge_device`` / ``edge_relay``: the ``edge`` and ``edge-relay``
  adapters; ``router.backends.device_link``: one device's stream (outbox, requests in
  flight, ``link_events``)
- ``router.stores.device_directory``: the shared device directory in Redis
"""
