import json

import pytest
from pydantic import ValidationError

from consumer.settings import Settings
from triage.cli import build_parser, settings_from_args


def test_defaults_match_the_documented_cli():
    s = Settings()
    assert (s.bootstrap_servers, s.group_id, str(s.model_dir)) == ("127.0.0.1:9092", "inquiry-triage", "artifacts")
    assert (s.input_topic, s.auto_topic, s.human_topic, s.dlq_topic) == (
        "inquiries",
        "inquiries.auto_response",
        "inquiries.human_agent",
        "inquiries.dlq",
    )
    consumer = s.consumer_config()
    assert consumer["enable.auto.commit"] is False and consumer["enable.auto.offset.store"] is False
    assert s.producer_config()["enable.idempotence"] is True


def test_environment_then_flags(monkeypatch):
    monkeypatch.setenv("TRIAGE_GROUP_ID", "from-env")
    monkeypatch.setenv("TRIAGE_BATCH_SIZE", "17")
    monkeypatch.setenv("TRIAGE_KAFKA_PROPERTIES", json.dumps({"socket.keepalive.enable": True, "client.rack": "r1"}))
    args = build_parser().parse_args(["run", "--group-id", "from-flag", "--kafka-property", "client.rack=r2"])
    s = settings_from_args(args)
    assert s.group_id == "from-flag" and s.batch_size == 17
    assert s.kafka_properties == {"socket.keepalive.enable": "true", "client.rack": "r2"}
    assert s.consumer_config()["client.rack"] == "r2"
    assert s.producer_config()["socket.keepalive.enable"] == "true"


def test_sasl_ssl_reach_librdkafka_and_secrets_stay_hidden(monkeypatch):
    monkeypatch.setenv("TRIAGE_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv(
        "TRIAGE_KAFKA_PROPERTIES",
        json.dumps(
            {
                "sasl.oauthbearer.client.secret": "s3cr3t",
                "sasl.oauthbearer.config": "principal=triage clientSecret=opaque-1",  # unsecured-jwt style
                "sasl.kerberos.keytab": "/etc/triage.keytab-x9",
            }
        ),
    )
    s = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="triage",
        ssl_ca_location="/etc/ca.pem",
    )
    for config in (s.consumer_config(), s.producer_config(), s.admin_config()):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.mechanism"] == "SCRAM-SHA-512"
        assert config["sasl.username"] == "triage" and config["sasl.password"] == "hunter2"
        assert config["ssl.ca.location"] == "/etc/ca.pem"
    shown = json.dumps(s.redacted()) + repr(s) + str(s)
    assert "hunter2" not in shown and "s3cr3t" not in shown
    assert "opaque-1" not in shown and "keytab-x9" not in shown
    assert "SCRAM-SHA-512" in shown and "triage" in shown, "mechanism and username stay readable"


def test_metrics_listen_on_loopback_unless_told_otherwise(monkeypatch):
    assert Settings().metrics_host == "127.0.0.1"
    monkeypatch.setenv("TRIAGE_METRICS_HOST", "0.0.0.0")
    assert Settings().metrics_host == "0.0.0.0"


def test_settings_are_frozen_and_validated():
    s = Settings()
    with pytest.raises(ValidationError):
        s.batch_size = 5
    with pytest.raises(ValidationError):
        Settings(batch_size=0)
    with pytest.raises(ValidationError):
        Settings(security_protocol="CARRIER_PIGEON")
