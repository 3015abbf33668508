"""hcsshim for Python: the HCS/HNS library, the Linux guest agent, containerd-shim-runhcs-v1 and tools.

Kept empty of imports on purpose: the shim's `start` path imports this package and must stay fast.
"""

__version__ = "0.1.0"
