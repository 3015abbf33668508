"""containerd runtime options (runtimeoptions.v1)."""
