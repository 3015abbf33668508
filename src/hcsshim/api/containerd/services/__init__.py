"""containerd services the shim calls as a client."""
