"""Documentation links: every relative link and anchor in README.md, docs/*.md and
bench/README.md resolves, and every alert's ``runbook_url`` points at an existing section of
docs/alerts.md under the one runbook base (``RUNBOOK_BASE`` in prometheus/runbooks.py).

Anchors follow GitHub's heading slugs (github-slugger): link markup, inline code backticks and
HTML tags are removed from the heading text, which is lowercased; every character that is not
a letter, digit, space, hyphen or underscore is dropped; spaces become hyphens; a repeated
slug gets ``-1``, ``-2``, ... appended.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = ROOT / "prometheus" / "rules" / "alerts.yml"


def _load_runbooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runbooks", ROOT / "prometheus" / "runbooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runbooks = _load_runbooks()


# -- the checker ---------------------------------------------------------------------------
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"(`+).*?\1")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is None:
            yield number, line


def slugify(heading: str) -> str:
    """GitHub's slug of one heading's text (without the duplicate suffix)."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", heading)  # links -> text
    text = re.sub(r"<[^>]*>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def unique_slugs(headings: Iterable[str]) -> list[str]:
    """Slugs of headings in document order, duplicates suffixed as GitHub does."""
    seen: dict[str, int] = {}
    out = []
    for heading in headings:
        slug = original = slugify(heading)
        while slug in seen:
            seen[original] += 1
            slug = f"{original}-{seen[original]}"
        seen[slug] = 0
        out.append(slug)
    return out


def anchors(text: str) -> set[str]:
    headings = [m.group(2) for _, line in prose_lines(text) if (m := _HEADING.match(line))]
    return set(unique_slugs(headings))


def links(text: str) -> Iterator[tuple[int, str]]:
    """(line number, target) of every inline link outside code."""
    for number, line in prose_lines(text):
        for m in _LINK.finditer(_INLINE_CODE.sub("", line)):
            yield number, m.group(1)


def check_file(path: Path, root: Path = ROOT) -> list[str]:
    """Broken relative links and anchors of one markdown file, as readable problems."""
    problems = []
    where = path.relative_to(root) if path.is_relative_to(root) else path
    for number, target in links(path.read_text(encoding="utf-8")):
        if not target or _SCHEME.match(target):
            continue  # absolute URLs are not checked (no network in tests)
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{where}:{number}: {target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text("utf-8")):
            problems.append(f"{where}:{number}: {target}: no heading with anchor #{anchor}")
    return problems


def check_runbooks(rules: Iterable[dict[str, Any]], base: str, root: Path = ROOT) -> list[str]:
    """Alerts whose runbook_url is not ``base + docs/alerts.md#<existing anchor>``."""
    known = anchors((root / runbooks.RUNBOOK_PATH).read_text(encoding="utf-8"))
    problems = []
    for rule in rules:
        url = rule.get("annotations", {}).get("runbook_url", "")
        if not url.startswith(base):
            problems.append(f"{rule['alert']}: runbook_url {url!r} does not start with {base}")
            continue
        path, _, anchor = url[len(base) :].partition("#")
        if path != runbooks.RUNBOOK_PATH:
            problems.append(f"{rule['alert']}: runbook_url points at {path!r}, not docs/alerts.md")
        elif anchor not in known:
            problems.append(f"{rule['alert']}: docs/alerts.md has no section #{anchor}")
    return problems


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench/README.md"]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


# -- the repository's documents ------------------------------------------------------------
@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path: Path) -> None:
    assert path.exists(), path
    assert check_file(path) == []


def test_every_alert_has_a_runbook_url_that_resolves() -> None:
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert "runbook_url" in rule["annotations"], rule["alert"]
        assert "runbook" not in rule["annotations"], rule["alert"]
    assert check_runbooks(rules, runbooks.RUNBOOK_BASE) == []


def test_runbook_base_is_absolute_and_every_copy_uses_it() -> None:
    base = runbooks.RUNBOOK_BASE
    assert re.match(r"^https://[^/]+/.*/$", base), base
    assert runbooks.stale_files() == []  # rules, promtool tests and golden files agree


def test_readme_stays_short() -> None:
    assert (ROOT / "README.md").stat().st_size <= 15_000


# -- the slug function ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("CryptoArbFeedDown", "cryptoarbfeeddown"),
        ("Redis down -> /metrics keeps serving", "redis-down---metrics-keeps-serving"),
        ("Terminal view (`arb-exporter status`)", "terminal-view-arb-exporter-status"),
        ("Redis schema (for bots and scripts)", "redis-schema-for-bots-and-scripts"),
        ("Soak: memory over time", "soak-memory-over-time"),
        ("What is `feeds.depth`?", "what-is-feedsdepth"),
        ("See [the docs](docs/alerts.md) now", "see-the-docs-now"),
        ("snake_case and CamelCase", "snake_case-and-camelcase"),
        ("Spread ▲/–/▼ trend", "spread--trend"),
        ("  Padded heading  ", "padded-heading"),
        ("Où est l'arbitrage ?", "où-est-larbitrage-"),
        ("<code>html</code> tags", "html-tags"),
    ],
)
def test_slugify_follows_github(heading: str, slug: str) -> None:
    assert slugify(heading) == slug


def test_duplicate_headings_get_numbered_suffixes() -> None:
    assert unique_slugs(["Runbooks", "Runbooks", "Runbooks-1", "Runbooks"]) == [
        "runbooks",
        "runbooks-1",
        "runbooks-1-1",
        "runbooks-2",
    ]
    text = "# Notes\n\n## Notes\n\n```sh\n# Notes in a code block\n```\n### Notes\n"
    assert anchors(text) == {"notes", "notes-1", "notes-2"}


# -- the checker finds what is broken ------------------------------------------------------
def test_checker_reports_broken_anchor_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Real section\n", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n"
        "Good: [same page](#title), [other](other.md), [section](other.md#real-section).\n"
        "Bad anchor: [x](other.md#missing-section).\n"
        "Bad local anchor: [y](#nowhere).\n"
        "Missing file: [z](gone.md).\n"
        "Ignored: [web](https://example.org/#x), `[code](nope.md)`.\n"
        "```md\n[in a fence](also-gone.md)\n```\n",
        encoding="utf-8",
    )
    problems = check_file(doc, tmp_path)
    assert problems == [
        "doc.md:4: other.md#missing-section: no heading with anchor #missing-section",
        "doc.md:5: #nowhere: no heading with anchor #nowhere",
        "doc.md:6: gone.md: no such file",
    ]


def test_checker_reports_runbook_urls_that_do_not_resolve() -> None:
    base = runbooks.RUNBOOK_BASE
    rules = [
        {
            "alert": "Good",
            "annotations": {"runbook_url": f"{base}docs/alerts.md#cryptoarbfeeddown"},
        },
        {"alert": "NoSection", "annotations": {"runbook_url": f"{base}docs/alerts.md#nope"}},
        {"alert": "OtherBase", "annotations": {"runbook_url": "https://x.org/docs/alerts.md#a"}},
        {
            "alert": "OtherPath",
            "annotations": {"runbook_url": f"{base}README.md#cryptoarbfeeddown"},
        },
        {"alert": "Missing", "annotations": {}},
    ]
    problems = check_runbooks(rules, base)
    assert [p.split(":")[0] for p in problems] == ["NoSection", "OtherBase", "OtherPath", "Missing"]


def test_runbook_base_rewrite() -> None:
    text = (
        'runbook_url: "https://old.example/a/b/docs/alerts.md#cryptoarbfeeddown"\n'
        "Runbook: https://old.example/docs/alerts.md#cryptoarbwindowopen\n"
        "other: https://old.example/docs/metrics.md#x\n"
    )
    assert runbooks.rewrite(text, "https://new.example/fork/blob/main/") == (
        'runbook_url: "https://new.example/fork/blob/main/docs/alerts.md#cryptoarbfeeddown"\n'
        "Runbook: https://new.example/fork/blob/main/docs/alerts.md#cryptoarbwindowopen\n"
        "other: https://old.example/docs/metrics.md#x\n"
    )
