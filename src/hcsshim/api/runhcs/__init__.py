"""hcsshim's containerd-shim-runhcs-v1 protobuf APIs (wire-compatible with hcsshim's .proto files)."""
