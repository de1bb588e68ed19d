"""deploy/kubernetes: every overlay renders with `kubectl kustomize` and validates offline.

- Kubernetes objects: the schemas bundled by ``kubernetes-validate`` (pinned in the dev extra)
  in strict mode (unknown fields rejected), for the oldest Kubernetes the shard wiring needs
  (1.28, the pod-index label) and the newest the package ships.
- monitoring.coreos.com objects (PodMonitor, PrometheusRule): the models generated from the
  prometheus-operator v0.80.1 CRDs (``cloudcoil-models-prometheus-operator``, pinned): types,
  enums and patterns from the CRD schema; strict as the API server's field validation is,
  i.e. an object must round-trip through the model with no field dropped.
- Generated files (PrometheusRule, dashboard ConfigMaps, config copy) equal what
  deploy/kubernetes/generate.py renders now from their sources.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as promop
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("single", "sharded", "with-redis")
KUBECTL = shutil.which("kubectl")
# The pod-index label appeared in 1.28; the newest schemas kubernetes-validate 1.37.0 ships.
K8S_VERSIONS = ("1.28.0", "1.35.0")
CRD_MODELS: dict[str, type[BaseModel]] = {
    "PodMonitor": promop.PodMonitor,
    "ServiceMonitor": promop.ServiceMonitor,
    "PrometheusRule": promop.PrometheusRule,
}


def test_kubectl_is_installed() -> None:
    """kubectl comes with the machine image (apt cannot install it here): without it every
    test below fails rather than skips."""
    assert KUBECTL is not None, "kubectl not found on PATH: install it to render the manifests"


@cache
def render(directory: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(KUBE / directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_generate", KUBE / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dropped(given: Any, kept: Any, path: str = "") -> list[str]:
    """Paths present in ``given`` that a model dump ``kept`` no longer has (unknown fields)."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path or "."]
        found = []
        for key, value in given.items():
            if key not in kept:
                found.append(f"{path}.{key}")
            else:
                found += dropped(value, kept[key], f"{path}.{key}")
        return found
    if isinstance(given, list):
        if not isinstance(kept, list) or len(kept) != len(given):
            return [path]
        return [p for i, (g, k) in enumerate(zip(given, kept, strict=True)) for p in
                dropped(g, k, f"{path}[{i}]")]  # fmt: skip
    return []


def validate_crd(obj: dict[str, Any]) -> None:
    """Raise unless ``obj`` validates against its prometheus-operator CRD model, strictly."""
    model = CRD_MODELS[obj["kind"]]
    dump = model.model_validate(obj).model_dump(mode="json", by_alias=True, exclude_unset=True)
    unknown = dropped(obj, dump)
    if unknown:
        raise ValueError(f"{obj['kind']}/{obj['metadata']['name']}: unknown fields {unknown}")


def validate(obj: dict[str, Any]) -> None:
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        validate_crd(obj)
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def test_kubernetes_validate_ships_the_versions() -> None:
    shipped = kubernetes_validate.utils.all_versions()
    assert all(v in shipped for v in K8S_VERSIONS), shipped


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    kinds = {o["kind"] for o in objects}
    assert {
        "StatefulSet", "Service", "PodMonitor", "PrometheusRule", "ConfigMap", "Secret",
        "PodDisruptionBudget", "NetworkPolicy",
    } <= kinds  # fmt: skip
    for obj in objects:
        validate(obj)
    assert all(o["metadata"].get("namespace") == "cryptoarb" for o in objects)


def test_with_redis_adds_redis() -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in render("overlays/with-redis")}
    assert {("Deployment", "redis"), ("Service", "redis"), ("NetworkPolicy", "redis")} <= names
    exporter = _statefulset("with-redis")
    assert _env(exporter)["CRYPTOARB_REDIS_URL"]["value"] == "redis://redis:6379/0"


def _statefulset(overlay: str) -> dict[str, Any]:
    (sts,) = (o for o in render(f"overlays/{overlay}") if o["kind"] == "StatefulSet")
    return sts


def _env(sts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shard_wiring(overlay: str) -> None:
    sts = _statefulset(overlay)
    env = _env(sts)
    assert env["CRYPTOARB_SHARD_INDEX"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert env["CRYPTOARB_SHARD_COUNT"]["value"] == str(sts["spec"]["replicas"])
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_sharded_overlay_has_several_shards() -> None:
    sts = _statefulset("sharded")
    assert sts["spec"]["replicas"] == 3
    assert _env(sts)["CRYPTOARB_SHARD_COUNT"]["value"] == "3"
    # The headless Service governs the StatefulSet.
    (svc,) = (o for o in render("overlays/sharded") if o["kind"] == "Service")
    assert svc["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]


def test_security_probes_and_resources() -> None:
    pod = _statefulset("single")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert set(c["resources"]) == {"requests", "limits"}
    # The config files: ConfigMap (config) and Secret (web config), both mounted and passed.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"].startswith("arb-exporter-config-")
    assert volumes["web-config"]["secret"]["secretName"].startswith("arb-exporter-web-config-")
    assert "--web.config.file" in c["args"] and "--config.file" in c["args"]


def test_the_exporter_accepts_the_args_and_web_config(tmp_path: Path) -> None:
    from exporter.http import webconfig

    webconfig.load(KUBE / "base" / "web-config.yml")
    (c,) = _statefulset("single")["spec"]["template"]["spec"]["containers"]
    out = subprocess.run(
        [sys.executable, "-m", "exporter.cli", *c["args"][:1], "--help"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    for flag in (a for a in c["args"] if a.startswith("--")):
        assert flag in out, flag


def test_dashboards_are_labelled_for_the_sidecar() -> None:
    maps = [o for o in render("overlays/single") if o["kind"] == "ConfigMap"]
    dashboards = [m for m in maps if m["metadata"]["labels"].get("grafana_dashboard") == "1"]
    files = sorted(p.name for p in (ROOT / "grafana" / "dashboards").glob("*.json"))
    assert sorted(k for m in dashboards for k in m["data"]) == files
    for m in dashboards:
        for name, text in m["data"].items():
            assert json.loads(text) == json.loads(
                (ROOT / "grafana" / "dashboards" / name).read_text()
            )


def test_prometheusrule_has_every_rule_group() -> None:
    (rule,) = (o for o in render("overlays/single") if o["kind"] == "PrometheusRule")
    expected = []
    for name in ("recording.yml", "alerts.yml"):
        expected += yaml.safe_load((ROOT / "prometheus" / "rules" / name).read_text())["groups"]
    assert rule["spec"]["groups"] == expected


def test_generated_files_do_not_drift() -> None:
    rendered = generator().render()
    assert rendered, "nothing generated"
    for path, text in rendered.items():
        assert path.read_text() == text, (
            f"{path.relative_to(ROOT)} is stale: run python deploy/kubernetes/generate.py"
        )


def test_drift_is_detected(tmp_path: Path) -> None:
    gen = generator()
    shutil.copytree(ROOT / "prometheus" / "rules", tmp_path / "prometheus" / "rules")
    shutil.copytree(ROOT / "grafana" / "dashboards", tmp_path / "grafana" / "dashboards")
    shutil.copy(ROOT / "config.example.yaml", tmp_path / "config.example.yaml")
    assert gen.render(tmp_path) == gen.render()
    alerts = tmp_path / "prometheus" / "rules" / "alerts.yml"
    alerts.write_text(alerts.read_text().replace("for: ", "for: 1", 1))
    changed = gen.render(tmp_path)
    assert (
        changed[gen.GENERATED / "prometheusrule.yaml"]
        != gen.render()[gen.GENERATED / "prometheusrule.yaml"]
    )


# Negative tests: a misspelled field fails validation.


def test_misspelled_kubernetes_field_fails() -> None:
    sts = json.loads(json.dumps(_statefulset("single")))
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    c["readinesProbe"] = c.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate(sts)


def test_misspelled_kubernetes_value_type_fails() -> None:
    sts = json.loads(json.dumps(_statefulset("sharded")))
    sts["spec"]["replicas"] = "3"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(sts)


def test_misspelled_podmonitor_field_fails() -> None:
    (pm,) = (o for o in render("overlays/single") if o["kind"] == "PodMonitor")
    pm = json.loads(json.dumps(pm))
    validate(pm)
    pm["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    with pytest.raises(ValueError, match="intervall"):
        validate(pm)


def test_invalid_prometheusrule_duration_fails() -> None:
    (rule,) = (o for o in render("overlays/single") if o["kind"] == "PrometheusRule")
    rule = json.loads(json.dumps(rule))
    alert = next(r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r)
    alert["for"] = "five minutes"
    with pytest.raises(ValueError, match="pattern"):
        validate(rule)
    alert["for"] = "5m"
    alert["severity"] = "page"  # belongs under labels
    with pytest.raises(ValueError, match="severity"):
        validate(rule)
