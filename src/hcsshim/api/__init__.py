"""Protocol buffer definitions (ours, wire-compatible with upstream) and their generated modules."""
