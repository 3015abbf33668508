"""containerd/cgroups statistics messages."""
