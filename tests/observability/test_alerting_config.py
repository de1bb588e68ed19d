"""Static checks of the observability code: promtool on the Prometheus config and rules (and
the rule unit tests), amtool on the Alertmanager config and every route, and the contract
between rules, routes and the runbooks in docs/alerts.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "prometheus"
AM = ROOT / "alertmanager"

# alert -> receivers Alertmanager must resolve (in route order)
EXPECTED_RECEIVERS = {
    "CryptoArbWindowOpen": "alert-log,arbitrage-slack",
    "CryptoArbLargeWindow": "alert-log,arbitrage-slack",
    "CryptoArbFeedDown": "ops-critical",
    "CryptoArbBookStale": "ops-slack",
    "CryptoArbLatencyHigh": "ops-slack",
    "CryptoArbResyncStorm": "ops-slack",
    "CryptoArbClockSkew": "ops-slack",
    "CryptoArbRedisDown": "ops-critical",
    "CryptoArbExporterDown": "ops-critical",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is installed by scripts/setup.sh"
    return path


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)


def alert_rules() -> list[dict[str, Any]]:
    out = []
    for path in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [r for r in group["rules"] if "alert" in r]
    return out


def recording_rules() -> list[dict[str, Any]]:
    out = []
    for path in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [r for r in group["rules"] if "record" in r]
    return out


def test_promtool_check_config_and_rules() -> None:
    res = run(tool("promtool"), "check", "config", "prometheus.yml", cwd=PROM)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 rule files found" in res.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    tests = sorted(str(p.relative_to(PROM)) for p in (PROM / "tests").glob("*.yml"))
    res = run(tool("promtool"), "test", "rules", *tests, cwd=PROM)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(tests)


def test_every_alert_fires_and_stays_silent_in_the_unit_tests() -> None:
    tests = [yaml.safe_load(p.read_text()) for p in (PROM / "tests").glob("*.yml")]
    cases = [c for t in tests for g in t["tests"] for c in g.get("alert_rule_test", [])]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} never fires in a test"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} never checked silent"
        for case in mine:
            for exp in case["exp_alerts"]:  # annotations checked in full
                assert set(exp["exp_annotations"]) == set(rule["annotations"])


def test_every_recording_rule_has_a_unit_test() -> None:
    tests = [yaml.safe_load(p.read_text()) for p in (PROM / "tests").glob("*.yml")]
    exprs = {c["expr"] for t in tests for g in t["tests"] for c in g.get("promql_expr_test", [])}
    for rule in recording_rules():
        assert rule["record"] in exprs, f"{rule['record']} has no promql_expr_test"
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_alert_contract() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert names == set(EXPECTED_RECEIVERS)
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["labels"]["category"] in {"arbitrage", "feed", "infra"}
        for key in ("title", "summary", "description", "runbook_url"):
            assert rule["annotations"].get(key), (rule["alert"], key)
        assert "\n" not in rule["annotations"]["title"]  # one line on a phone
        if rule["labels"]["category"] == "arbitrage":
            for key in ("roi", "profit", "notional"):
                assert key in rule["annotations"], (rule["alert"], key)
    # the stale/down feed alerts carry the labels the inhibit rules compare
    for rule in alert_rules():
        if rule["alert"] in {"CryptoArbFeedDown", "CryptoArbBookStale"}:
            assert rule["labels"]["buy_exchange"] == "{{ $labels.exchange }}"
            assert rule["labels"]["sell_exchange"] == "{{ $labels.exchange }}"
    # the window alert follows the exporter's window state at the reference notional
    window = next(r for r in alert_rules() if r["alert"] == "CryptoArbWindowOpen")
    assert "cryptoarb_window_open == 1" in window["expr"]
    assert "cryptoarb_reference_info" in window["expr"]


def test_docs_have_a_runbook_per_alert() -> None:
    """Every alert links to its own section of docs/alerts.md (tests/unit/test_docs_links.py
    checks the base URL and GitHub's anchor rules in full)."""
    runbooks = (ROOT / "docs" / "alerts.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbooks, re.M)
    }
    for rule in alert_rules():
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path.endswith("/docs/alerts.md"), (rule["alert"], path)
        assert anchor == rule["alert"].lower(), (rule["alert"], anchor)
        assert anchor in headings, f"docs/alerts.md has no section for {rule['alert']}"


def test_amtool_check_config() -> None:
    res = run(tool("amtool"), "check-config", "alertmanager.yml", cwd=AM)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_secrets_only_through_files() -> None:
    config = yaml.safe_load((AM / "alertmanager.yml").read_text())
    text = (AM / "alertmanager.yml").read_text()
    assert "slack_api_url:" not in text and "auth_password:" not in text
    assert config["global"]["slack_api_url_file"].startswith("/run/secrets/")
    assert config["global"]["smtp_auth_password_file"].startswith("/run/secrets/")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            auth = hook["http_config"]["authorization"]
            assert "credentials" not in auth and auth["credentials_file"].startswith("/run/")


def _labels(rule: dict[str, Any]) -> list[str]:
    labels = {"alertname": rule["alert"], "symbol": "BTC/USD", "exchange": "kraken"}
    labels.update({k: v for k, v in rule["labels"].items() if "{{" not in v})
    return [f"{k}={v}" for k, v in labels.items()]


@pytest.mark.parametrize("alert", sorted(EXPECTED_RECEIVERS))
def test_amtool_routes_every_alert(alert: str) -> None:
    rule = next(r for r in alert_rules() if r["alert"] == alert)
    expected = EXPECTED_RECEIVERS[alert]
    res = run(
        tool("amtool"), "config", "routes", "test", "--config.file=alertmanager.yml",
        f"--verify.receivers={expected}", *_labels(rule), cwd=AM,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == expected


def test_every_route_and_receiver_is_exercised() -> None:
    config = yaml.safe_load((AM / "alertmanager.yml").read_text())
    receivers = {r["name"] for r in config["receivers"]}
    used = {name for v in EXPECTED_RECEIVERS.values() for name in v.split(",")}
    assert used == receivers
    assert {r["receiver"] for r in config["route"]["routes"]} | {
        config["route"]["receiver"]
    } == receivers


def test_amtool_routes_test_fails_on_a_wrong_receiver() -> None:
    """The verification above can fail: a window alert does not page ops."""
    rule = next(r for r in alert_rules() if r["alert"] == "CryptoArbWindowOpen")
    res = run(
        tool("amtool"), "config", "routes", "test", "--config.file=alertmanager.yml",
        "--verify.receivers=ops-critical", *_labels(rule), cwd=AM,
    )  # fmt: skip
    assert res.returncode != 0
