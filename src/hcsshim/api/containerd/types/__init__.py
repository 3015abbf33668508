"""Shared containerd types: containerd.types.Mount and containerd.v1.types (Status, ProcessInfo)."""
