"""Entry points: parse arguments, call the parts, map errors to exit codes."""
