"""containerd.runhcs.v1.diag.ShimDiag: the shim's diagnostics service and its messages."""
