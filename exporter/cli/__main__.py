"""`python -m exporter.cli`: the arb-exporter command."""

from exporter.cli.main import main

raise SystemExit(main())
