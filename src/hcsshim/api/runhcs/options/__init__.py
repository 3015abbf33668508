"""containerd.runhcs.v1: runtime Options and the Pids ProcessDetails of containerd-shim-runhcs-v1."""
