"""containerd's runtime shim task API."""
