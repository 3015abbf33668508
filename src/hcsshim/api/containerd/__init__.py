"""containerd protobuf APIs used by the shim (wire-compatible with containerd v1.6.20's .proto files)."""
