"""containerd's events services."""
