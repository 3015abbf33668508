"""containerd.runc.v1: runc shim Options and ProcessDetails (the Pids info type ctr can print)."""
