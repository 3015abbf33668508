"""containerd.runhcs.stats.v1.Statistics: the Stats answer of containerd-shim-runhcs-v1."""
