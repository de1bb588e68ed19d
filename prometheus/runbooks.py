"""Runbook links of the alerting rules: the one place their base URL is set.

Every alert in ``prometheus/rules/alerts.yml`` carries an absolute ``runbook_url`` annotation,
``RUNBOOK_BASE + "docs/alerts.md#<section>"``, so the link is clickable from Slack, email,
Alertmanager and Grafana. To point the links at another copy of the repository (a fork, an
internal mirror, another branch), change ``RUNBOOK_BASE`` and run

    .venv/bin/python prometheus/runbooks.py

which rewrites the base in every file that spells a runbook URL: the rules, their promtool
unit tests and the Alertmanager golden files. ``--check`` writes nothing and exits 1 when a
file holds another base (``tests/unit/test_docs_links.py`` runs the same check).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

RUNBOOK_BASE = "https://github.com/cryptoarb/cryptoarb-exporter/blob/main/"
RUNBOOK_PATH = "docs/alerts.md"

ROOT = Path(__file__).resolve().parents[1]
FILES = (
    "prometheus/rules/alerts.yml",
    "prometheus/tests/alerts_test.yml",
    "alertmanager/tests/golden/*.txt",
)
# Whatever absolute base precedes docs/alerts.md#<section>.
_URL = re.compile(r"https?://[^\s\"']*?(?=" + re.escape(RUNBOOK_PATH) + "#)")


def files() -> list[Path]:
    return [p for pattern in FILES for p in sorted(ROOT.glob(pattern))]


def rewrite(text: str, base: str = RUNBOOK_BASE) -> str:
    """``text`` with every runbook URL's base replaced by ``base``."""
    return _URL.sub(base, text)


def stale_files(base: str = RUNBOOK_BASE) -> list[Path]:
    """Files that spell a runbook URL with another base."""
    return [
        p
        for p in files()
        if rewrite(p.read_text(encoding="utf-8"), base) != p.read_text(encoding="utf-8")
    ]


def main(argv: list[str]) -> int:
    if not RUNBOOK_BASE.endswith("/"):
        print(f"RUNBOOK_BASE must end with '/': {RUNBOOK_BASE!r}", file=sys.stderr)
        return 2
    stale = stale_files()
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)}: runbook URLs do not start with {RUNBOOK_BASE}")
        return 1 if stale else 0
    for path in stale:
        path.write_text(rewrite(path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
