"""Optional build: compile the pure analytics (``exporter/analytics/``) with mypyc, in place.

    .venv/bin/python scripts/compile_analytics.py [--clean]

Python imports a compiled module (``.so``) ahead of the ``.py`` beside it, so the exporter,
the tests and the benchmarks use the compiled analytics once this ran; ``--clean`` removes
the compiled files and the pure-Python modules are used again (``cryptoarb_build_info``
says which). Needs a C compiler and the Python headers (``make compiled`` installs them);
the default install needs neither. The C sources are built in a temporary directory, so
the repository's own packaging metadata plays no part.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter" / "analytics"
MODULES = ["book", "arbitrage", "history", "insights"]  # windows: subclassed by replay
GROUP = "exporter.analytics.native"  # the shared runtime library lands in the package too

SETUP = f"""
from setuptools import setup
from mypyc.build import mypycify

setup(
    name="cryptoarb-analytics-native",
    ext_modules=mypycify(
        {[f"exporter/analytics/{m}.py" for m in MODULES]!r},
        opt_level="3",
        group_name={GROUP!r},
    ),
)
"""


def compiled_files() -> list[Path]:
    return sorted(PACKAGE.glob("*.so"))


def clean() -> None:
    for path in compiled_files():
        path.unlink()


def build() -> None:
    clean()
    with tempfile.TemporaryDirectory(prefix="cryptoarb-mypyc-") as tmp:
        work = Path(tmp)
        # Only the package: mypyc type-checks the analytics against exporter's other modules.
        shutil.copytree(ROOT / "exporter", work / "exporter",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))  # fmt: skip
        (work / "setup.py").write_text(SETUP)
        proc = subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"],
            cwd=work, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"mypyc build failed (exit {proc.returncode})")
        built = sorted((work / "exporter" / "analytics").glob("*.so"))
        if not built:
            raise SystemExit("mypyc build produced no extension module")
        for path in built:
            shutil.copy2(path, PACKAGE / path.name)


def check() -> None:
    """Import the analytics in a fresh interpreter: each module must be the compiled one."""
    code = (
        "import importlib\n"
        f"for m in {MODULES!r}:\n"
        "    f = importlib.import_module('exporter.analytics.' + m).__file__\n"
        "    assert f.endswith('.so'), f\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clean", action="store_true", help="remove the compiled modules")
    args = p.parse_args()
    if args.clean:
        clean()
        print("analytics: pure Python")
        return
    build()
    check()
    names = ", ".join(p.name for p in compiled_files())
    print(f"analytics: compiled with mypyc ({names})")


if __name__ == "__main__":
    main()
