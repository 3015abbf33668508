"""containerd's ttrpc events service (served on TTRPC_ADDRESS)."""
