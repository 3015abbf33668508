"""runtimeoptions.v1: the Options wrapper naming a runtime config file."""
