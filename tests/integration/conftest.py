"""Print the fault-matrix recovery table at the end of the run (and write it as JSON when
``FAULT_RECOVERY_OUT`` names a file)."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.support.faults import RECOVERY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RECOVERY:
        return
    tr = terminalreporter
    tr.section("fault recovery (seconds from injection to every book live again)")
    width = max(len(r.fault) for r in RECOVERY)
    for r in RECOVERY:
        tr.write_line(f"{r.fault:<{width}}  {r.seconds:7.2f}  {r.detail}")
    out = os.environ.get("FAULT_RECOVERY_OUT")
    if out:
        rows = [{"fault": r.fault, "seconds": round(r.seconds, 2), "detail": r.detail}
                for r in RECOVERY]  # fmt: skip
        with open(out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
