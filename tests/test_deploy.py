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
