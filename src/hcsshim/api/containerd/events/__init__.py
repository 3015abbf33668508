"""Task lifecycle event messages (package containerd.events) published by the shim."""
