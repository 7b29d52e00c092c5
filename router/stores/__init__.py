"""State stores shared by router replicas: each module reads and writes one kind of record
in one external store, and knows nothing of the gRPC servers or the registry.

- ``device_directory``: the edge device directory in Redis (``edge.directory``)

Store clients (redis-py, ...) are imported only when a store is configured.
"""
