"""containerd's runc shim protobuf APIs."""
