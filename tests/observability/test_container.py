"""Container stack (validated, not run: no Docker engine here): the compose file against the
compose-spec JSON schema, bind mounts and COPY sources exist, every exporter flag in compose is
accepted by ``arb-exporter ... --help``, hadolint on the Dockerfile, pinned images, required
Grafana password, secrets by file only."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def tool(name: str) -> str:
    path = shutil.which(name) or str(VENV_BIN / name)
    assert Path(path).exists(), f"{name} is installed by scripts/setup.sh (dev extra)"
    return path


def test_compose_matches_the_compose_spec_schema() -> None:
    res = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_schema_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  x:\n    image: 3\n    ports: {a: b}\n")
    res = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode != 0


def test_bind_mounts_exist() -> None:
    mounts = 0
    for name, svc in compose()["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith((".", "/")):
                mounts += 1
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    assert mounts >= 5


def test_dockerfile_copy_sources_exist() -> None:
    text = DOCKERFILE.read_text()
    copies = re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
    assert copies
    for line in copies:
        *sources, _dest = line.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY source {src} does not exist"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "exporter" not in ignored and ".venv" in ignored


def _help(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "exporter.cli.main", *args, "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("service", ["exporter", "exporter-demo"])
def test_exporter_command_flags_are_accepted(service: str) -> None:
    command = compose()["services"][service]["command"]
    help_text = _help(command[0])
    flags = [a for a in command if a.startswith("--")]
    assert flags
    for flag in flags:
        assert re.search(rf"(^|\s|\[){re.escape(flag)}(\s|$|\]|,)", help_text), (service, flag)


def test_dockerfile_cmd_flags_are_accepted() -> None:
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE.read_text(), re.M)
    assert cmd
    argv = yaml.safe_load(cmd.group(1))
    help_text = _help(argv[0])
    for flag in (a for a in argv if a.startswith("--")):
        assert flag in help_text


def test_hadolint() -> None:
    res = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_structure() -> None:
    text = DOCKERFILE.read_text()
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^FROM python:3\.\d+-slim$", final, re.M)
    assert re.search(r"^USER 10001$", final, re.M)  # non-root
    health = re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"python\"", final, re.M)
    assert health and "/healthz" in final  # Python, slim images have no curl


def test_images_pinned_and_password_required() -> None:
    services = compose()["services"]
    assert services["prometheus"]["image"] == "prom/prometheus:v2.42.0"
    assert services["alertmanager"]["image"] == "prom/alertmanager:v0.25.0"
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", services["grafana"]["image"])
    assert re.fullmatch(r"redis:\d+\.\d+-alpine", services["redis"]["image"])
    env = services["grafana"]["environment"]
    assert re.fullmatch(r"\$\{GF_ADMIN_PASSWORD:\?[^}]*\}", env["GF_SECURITY_ADMIN_PASSWORD"])
    assert re.search(r"yesoreyeram-infinity-datasource@\d+\.\d+\.\d+",
                     env["GF_PLUGINS_PREINSTALL_SYNC"])  # fmt: skip
    for svc in services.values():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:")


def test_demo_profile_runs_on_the_simulator() -> None:
    services = compose()["services"]
    demo = services["exporter-demo"]
    assert demo["profiles"] == ["demo"] and demo["command"][0] == "demo"
    assert "exporter" in demo["networks"]["default"]["aliases"]
    assert services["exporter"]["profiles"] == ["live"]
    # every other service runs in both profiles
    assert all("profiles" not in s for n, s in services.items() if not n.startswith("exporter"))


def test_secrets_are_files() -> None:
    data = compose()
    am = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    referenced = set(re.findall(r"/run/secrets/(\w+)", yaml.safe_dump(am)))
    assert referenced == set(data["services"]["alertmanager"]["secrets"])
    assert referenced <= set(data["secrets"])
    exporter_env = data["services"]["exporter"]["environment"]
    assert exporter_env["CRYPTOARB_WEBHOOK_TOKEN_FILE"] == "/run/secrets/webhook_token"


def test_shards_profile_runs_every_shard_once_and_prometheus_finds_them() -> None:
    from exporter.config import load
    from exporter.sharding import apply_shard

    services = compose()["services"]
    shards = {n: s for n, s in services.items() if "shards" in s.get("profiles", [])}
    indexes = sorted(int(s["environment"]["CRYPTOARB_SHARD_INDEX"]) for s in shards.values())
    counts = {int(s["environment"]["CRYPTOARB_SHARD_COUNT"]) for s in shards.values()}
    assert len(shards) >= 2 and counts == {len(shards)} and indexes == list(range(len(shards)))
    aliases = {tuple(s["networks"]["default"]["aliases"]) for s in shards.values()}
    assert len(aliases) == 1
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "cryptoarb")
    assert [n for sd in job["dns_sd_configs"] for n in sd["names"]] == list(next(iter(aliases)))
    # The shards' environment applied to the mounted config splits its symbols exactly.
    owned: list[str] = []
    for s in shards.values():
        env = {k: str(v) for k, v in s["environment"].items() if k.startswith("CRYPTOARB_SHARD")}
        owned += list(apply_shard(load(ROOT / "config.example.yaml", environ=env)).symbols)
    assert sorted(owned) == sorted(load(ROOT / "config.example.yaml", environ={}).symbols)
