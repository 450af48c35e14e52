"""docker-compose.yml and the Dockerfile cannot run here (no Docker): check them against the code."""

from pathlib import Path

import yaml

from consumer.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_settings_are_valid_service_settings(monkeypatch):
    env = compose()["services"]["triage"]["environment"]
    fields = set(Settings.model_fields)
    unknown = [key for key in env if key.removeprefix("TRIAGE_").lower() not in fields]
    assert not unknown, f"compose sets variables the service does not read: {unknown}"
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    defaults = Settings.model_construct()
    assert [settings.input_topic, *settings.output_topics] == [defaults.input_topic, *defaults.output_topics]
    assert settings.bootstrap_servers == "kafka:29092" and settings.metrics_port == 9464


def test_compose_creates_every_topic_the_service_uses_with_kafka_in_kraft_mode():
    services = compose()["services"]
    script = "\n".join(services["topics"]["command"])
    defaults = Settings.model_construct()
    for topic in [defaults.input_topic, *defaults.output_topics]:
        assert topic in script
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["triage"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    prometheus = (ROOT / "deploy" / "prometheus.yml").read_text()
    assert "9464" in prometheus and services["prometheus"]["profiles"] == ["monitoring"]


def test_dockerfile_installs_the_packages_and_runs_the_service():
    import tomllib

    text = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert "triage" in packages  # the image's entry point
    for package in packages:  # `pip install .` fails on a package the build context lacks
        assert f"COPY {package} ./{package}" in text
    assert "torch==${TORCH_VERSION}" in text and "ARG TORCH_INDEX" in text
    assert 'ENTRYPOINT ["triage"]' in text and 'CMD ["run"]' in text
    assert "HF_HUB_OFFLINE=1" in text


def _exported_series() -> set[str]:
    """Every series name the service's metrics can produce (counters as _total, histograms as _bucket/_sum/_count)."""
    from consumer.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "info":
            names.add(family.name + "_info")
        else:
            names.add(family.name)
    return names


def test_every_metric_the_dashboard_and_alerts_query_is_one_the_service_exports():
    import json
    import re

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "triage.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    expressions += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    queried = {name for expr in expressions for name in re.findall(r"\b(triage_[a-z_]+)", expr)}
    assert len(queried) >= 10
    assert queried <= _exported_series(), f"not exported: {sorted(queried - _exported_series())}"
    wanted = {
        "triage_consumer_lag",
        "triage_dead_letters_total",
        "triage_model_info",
        "triage_oldest_unfinished_seconds",
    }
    assert wanted <= queried
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("throughput", "lag", "batch size", "latency", "routes", "dead letters", "abstain", "model version"):
        assert topic in titles
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"TriageLagGrowing", "TriageDeadLetterRate", "TriageNoProgress", "TriageNotReady"} <= alerts


def test_the_monitoring_profile_loads_the_rules_and_the_dashboard():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in services["prometheus"]["volumes"]
    assert "/etc/prometheus/alerts.yml" in (ROOT / "deploy" / "prometheus.yml").read_text()
    assert services["grafana"]["profiles"] == ["monitoring"]
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    assert (provisioning / "dashboards" / "triage.yml").is_file() and (
        provisioning / "datasources" / "prometheus.yml"
    ).is_file()
