"""hybrid-router contract: generated protobuf/gRPC stubs (see proto/)."""
