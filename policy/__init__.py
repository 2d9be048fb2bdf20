"""The stack's policy pack: policies in `policy.rules` (importable anywhere), the CLI entry point
in `policy/__main__.py`, and the offline runner in `policy.offline`."""
