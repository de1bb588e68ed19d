"""``python -m exporter.simulator``: run the exchange simulator."""

import sys

from exporter.simulator.server import main

if __name__ == "__main__":
    sys.exit(main())
