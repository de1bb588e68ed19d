"""Command line: run, check-config, demo, simulate, status."""
