"""deploy/kubernetes: valid against the Kubernetes API schemas, and consistent with the service's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.33.0"


def documents() -> list[dict[str, Any]]:
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
    return [doc for name in listed for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def test_core_manifests_validate_against_the_kubernetes_schemas():
    core = [doc for doc in documents() if not doc["apiVersion"].startswith("keda.sh/")]
    assert {doc["kind"] for doc in core} >= {"Deployment", "PodDisruptionBudget", "ConfigMap", "Secret"}
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_broken_manifest_is_caught():
    broken = of_kind("Deployment")[0]
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"not": "a port"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_probes_hit_the_health_endpoints_and_settings_are_real_ones():
    from consumer.settings import Settings

    fields = {f"TRIAGE_{name.upper()}" for name in Settings.model_fields}
    config = of_kind("ConfigMap")[0]["data"]
    assert set(config) <= fields, sorted(set(config) - fields)
    for deployment in of_kind("Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {p["containerPort"] for p in container["ports"]} == {int(config["TRIAGE_METRICS_PORT"])}
        assert {e["name"] for e in container.get("env", [])} <= fields
        assert container["resources"]["requests"]["cpu"]
    gpu = next(d for d in of_kind("Deployment") if d["metadata"]["name"].endswith("-gpu"))
    assert gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_keda_scales_the_deployment_on_the_groups_lag_up_to_the_partitions():
    config = of_kind("ConfigMap")[0]["data"]
    scaled = of_kind("ScaledObject")[0]["spec"]
    assert (
        scaled["scaleTargetRef"]["name"] == "inquiry-triage"
        and of_kind("Deployment")[0]["metadata"]["name"] == "inquiry-triage"
    )
    assert scaled["maxReplicaCount"] == int(config["TRIAGE_TOPIC_PARTITIONS"]), "members beyond partitions idle"
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["TRIAGE_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["TRIAGE_INPUT_TOPIC"]
    assert trigger["metadata"]["bootstrapServers"] == config["TRIAGE_BOOTSTRAP_SERVERS"]
    auth = of_kind("TriggerAuthentication")[0]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    secrets = {doc["metadata"]["name"]: doc["stringData"] for doc in of_kind("Secret")}
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in secrets[ref["name"]]
    pdb = of_kind("PodDisruptionBudget")[0]["spec"]
    assert pdb["selector"]["matchLabels"] == of_kind("Deployment")[0]["spec"]["selector"]["matchLabels"]
