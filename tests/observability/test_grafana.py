"""Generated dashboards: regenerating reproduces the checked-in JSON; every query parses with
Prometheus 2.42 (promtool on a generated rule file); no vector()/absent() padding; fixed,
unique UIDs and panel ids; datasources match the provisioning; every metric a dashboard or
rule names is exported by the exporter in demo mode."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.observability import dashboards as dsh
from tests.support.exporter import running_exporter
from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHarness

ROOT = dsh.ROOT
PROVISIONING = ROOT / "grafana" / "provisioning"


def test_regenerating_reproduces_the_checked_in_json() -> None:
    res = subprocess.run(
        [sys.executable, "-W", "ignore", "grafana/generate.py", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    names = {p.name for p in dsh.DASHBOARDS.glob("*.json")}
    assert names == {"arbitrage-overview.json", "feed-health.json"}


def test_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    """The regeneration check can fail: a hand edit is reported."""
    code = (
        "import sys; sys.path.insert(0, 'grafana'); import generate, pathlib;"
        f"generate.OUT = pathlib.Path({str(tmp_path)!r});"
        "generate.main([]);"
        "p = generate.OUT / 'feed-health.json'; p.write_text(p.read_text().replace('Feed', 'Fed'));"
        "sys.exit(generate.main(['--check']))"
    )
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 1 and "feed-health.json" in res.stderr


def test_every_query_parses_with_prometheus_2_42(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool
    targets = dsh.prometheus_targets()
    assert len(targets) >= 30
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": dsh.substitute(t.expr)}
        for i, t in enumerate(targets)
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    res = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules)} rules found" in res.stdout


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool
    path = tmp_path / "bad.yml"
    rule = {"record": "dashboard:bad:check", "expr": "sum by (symbol (cryptoarb_feed_up)"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [rule]}]}))
    res = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True)
    assert res.returncode != 0


def test_no_padding_and_only_known_variables() -> None:
    for t in dsh.prometheus_targets():
        assert "vector(" not in t.expr and "absent(" not in t.expr, t
        dsh.substitute(t.expr)  # every variable is one the tests know
    for name, dash in dsh.dashboards().items():
        declared = {v["name"] for v in dash["templating"]["list"]}
        used = {
            v for t in dsh.prometheus_targets() if t.dashboard == name
            for v in dsh.VALUES if f"${v}" in t.expr
        }  # fmt: skip
        assert used <= declared, (name, used - declared)


def test_uids_ids_and_datasources() -> None:
    dashes = dsh.dashboards()
    uids = [d["uid"] for d in dashes.values()]
    assert sorted(uids) == ["cryptoarb-feed-health", "cryptoarb-overview"]
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "cryptoarb.yml").read_text())
    ds_uids = {d["uid"]: d["type"] for d in provisioned["datasources"]}
    for name, dash in dashes.items():
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
        for panel in dash["panels"]:
            refs = [panel.get("datasource")] + [t.get("datasource") for t in
                                                 panel.get("targets") or []]  # fmt: skip
            for ref in filter(None, refs):
                assert ds_uids.get(ref["uid"]) == ref["type"], (name, panel["title"], ref)
    overview = dashes["arbitrage-overview.json"]
    types = {p["type"] for p in overview["panels"]}
    assert {"stat", "timeseries", "table", "heatmap", "alertlist"} <= types
    titles = " ".join(p["title"] for p in overview["panels"])
    for word in ("correlation", "Liquidity", "imbalance", "Latency", "Insights", "Window log",
                 "fallback", "Top opportunities", "▲/▼"):  # fmt: skip
        assert word in titles, word
    corr = next(p for p in overview["panels"] if p["title"] == "Spread correlation")
    assert corr["transformations"][0]["id"] == "groupingToMatrix"
    assert {v["name"] for v in overview["templating"]["list"]} == {"symbol", "exchange",
                                                                   "notional"}  # fmt: skip


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "cryptoarb.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts


# ------------------------------------------------------------------ metrics exist in demo mode
@pytest.fixture(scope="module")
def demo_metrics() -> Iterator[set[str]]:
    """Sample names on /metrics of the exporter running the packaged demo config."""
    import asyncio

    import aiohttp

    from exporter.cli.main import demo_config
    from exporter.devstack.procs import free_port

    async def scrape() -> str:
        with RedisServer() as redis, SimulatorHarness(seed=5, rate=10) as sim:
            config = demo_config(sim.base_url, redis.url, f"127.0.0.1:{free_port()}")
            async with running_exporter(config) as exp:
                url = f"http://127.0.0.1:{exp.server.bound_port}/metrics"

                async def get() -> str:
                    async with aiohttp.ClientSession() as s, s.get(url) as resp:
                        return await resp.text()

                text = ""

                async def ready() -> bool:
                    nonlocal text
                    text = await get()
                    return "cryptoarb_net_roi_ratio{" in text

                deadline = asyncio.get_running_loop().time() + 30
                while not await ready():
                    assert asyncio.get_running_loop().time() < deadline, "no ROI in 30 s"
                    await asyncio.sleep(0.5)
                return text

    text = asyncio.run(scrape())
    names = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    names |= {fam.name for fam in text_string_to_metric_families(text)}
    yield names


@pytest.mark.integration
def test_every_metric_named_by_dashboards_and_rules_is_exported(demo_metrics: set[str]) -> None:
    exprs = [t.expr for t in dsh.prometheus_targets()] + dsh.rule_exprs()
    for query in dsh.variable_queries():
        exprs.append(query.removeprefix("label_values(").split(",")[0])
    named = set().union(*(dsh.metric_names(e) for e in exprs))
    recorded = dsh.recorded_names()
    assert {"cryptoarb_net_roi_ratio", "cryptoarb_feed_latency_seconds_bucket"} <= named
    missing_rules = {n for n in named if ":" in n} - recorded
    assert not missing_rules, f"recording rules not defined: {sorted(missing_rules)}"
    missing = {n for n in named if ":" not in n} - demo_metrics
    assert not missing, f"not on the demo exporter's /metrics: {sorted(missing)}"


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (symbol, side) (cryptoarb_orderbook_depth_quote{symbol=~"cryptoarb_x"} '
        "* on (band) group_left () cryptoarb_reference_info) + exchange:cryptoarb_feed_up:ratio"
        ' + up{job="cryptoarb"}'
    )
    assert dsh.metric_names(expr) == {
        "cryptoarb_orderbook_depth_quote", "cryptoarb_reference_info",
        "exchange:cryptoarb_feed_up:ratio",
    }  # fmt: skip
