"""ExtendedTask (no proto package, as upstream): the shim's ComputeProcessorInfo service."""
