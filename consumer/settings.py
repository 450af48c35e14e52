"""Service settings: CLI flags > ``TRIAGE_*`` environment variables > defaults (pydantic-settings).

Settings are frozen and read only when :class:`Settings` is instantiated, never at import time. They map
onto librdkafka configuration; any librdkafka property can be passed through ``kafka_properties``
(``TRIAGE_KAFKA_PROPERTIES='{"socket.keepalive.enable": "true"}'`` or ``--kafka-property KEY=VALUE``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIAGE_", frozen=True, extra="ignore")

    # Kafka endpoints and topics
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "inquiry-triage"
    input_topic: str = "inquiries"
    auto_topic: str = "inquiries.auto_response"
    human_topic: str = "inquiries.human_agent"
    dlq_topic: str = "inquiries.dlq"
    create_topics: bool = Field(default=True, description="create missing topics at start")
    topic_partitions: int = Field(default=3, ge=1)
    topic_replication: int = Field(default=1, ge=1)

    # Model and policy
    model_dir: Path = Path("artifacts")
    policy_file: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: the artifacts' int8 ONNX export through ONNX Runtime on CPU when present, else torch
    backend: Literal["auto", "torch", "onnx"] = "auto"
    top_k: int = Field(default=3, ge=3)
    # the most texts per forward pass; unset: 16 on CPU (less padding), 256 on a GPU
    inference_batch_size: int | None = Field(default=None, ge=1)

    # Micro-batching: a batch takes what is queued (up to batch_size) and, once it has a first message,
    # waits at most batch_max_wait_ms more to fill its first forward pass (inference_batch_size); a lone
    # inquiry is answered without waiting longer
    batch_size: int = Field(default=256, ge=1, le=10_000)
    batch_max_wait_ms: int = Field(default=10, ge=0, le=60_000)
    max_text_chars: int = Field(default=10_000, ge=1)

    # Consumer group behaviour
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    assignment_strategy: str = "cooperative-sticky"
    # how long a fetch may wait at the broker for data; brokers that hold every fetch for the full wait
    # (the embedded one does) add this to every inquiry's latency
    fetch_wait_max_ms: int = Field(default=20, ge=1, le=10_000)
    delivery_timeout_ms: int = Field(default=30_000, ge=1_000)
    # at_least_once: commit input offsets after the outputs are acknowledged (duplicates possible after a
    # crash). exactly_once: outputs and offsets in one Kafka transaction (read_committed readers see each
    # inquiry once); needs a broker with transactions, see README "Guarantees".
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    transactional_id_prefix: str = "inquiry-triage"
    retry_backoff_ms: int = Field(default=1_000, ge=0)

    # Security (mapped onto librdkafka keys; secrets are never logged)
    security_protocol: SecurityProtocol | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    # passthrough librdkafka properties may hold credentials: kept out of repr(), masked in redacted()
    kafka_properties: dict[str, str] = Field(default_factory=dict, repr=False)
    consumer_properties: dict[str, str] = Field(default_factory=dict, repr=False)
    producer_properties: dict[str, str] = Field(default_factory=dict, repr=False)

    # Operations
    metrics_port: int = Field(default=9464, ge=-1, le=65535, description="-1 disables, 0 picks a free port")
    reload_interval_s: float = Field(default=10.0, ge=0, description="how often to look for new models; 0: never")

    # Logging
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("kafka_properties", "consumer_properties", "producer_properties", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    @property
    def output_topics(self) -> list[str]:
        return [self.auto_topic, self.human_topic, self.dlq_topic]

    def common_config(self) -> dict[str, str]:
        """librdkafka properties shared by consumer, producer and admin client."""
        config: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": "inquiry-triage",
            # back off exponentially while a broker is away instead of logging a failure every 100 ms
            "reconnect.backoff.ms": "500",
            "reconnect.backoff.max.ms": "10000",
            "log.connection.close": "false",
        }
        optional = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": _reveal(self.sasl_password),
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": _reveal(self.ssl_key_password),
        }
        config.update({k: v for k, v in optional.items() if v is not None})
        config.update(self.kafka_properties)
        return config

    def consumer_config(self) -> dict[str, str | int | bool]:
        config: dict[str, str | int | bool] = {
            **self.common_config(),
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.auto_offset_reset,
            "session.timeout.ms": self.session_timeout_ms,
            "max.poll.interval.ms": self.max_poll_interval_ms,
            "partition.assignment.strategy": self.assignment_strategy,
            "fetch.wait.max.ms": self.fetch_wait_max_ms,
            "isolation.level": "read_committed",
        }
        config.update(self.consumer_properties)
        return config

    def producer_config(self) -> dict[str, str | int | bool]:
        config: dict[str, str | int | bool] = {
            **self.common_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": self.delivery_timeout_ms,
        }
        if self.exactly_once:
            # unique per process; zombie fencing comes from the consumer group metadata (KIP-447)
            # call once per process and reuse the result: each call draws a new transactional.id
            config["transactional.id"] = f"{self.transactional_id_prefix}-{uuid.uuid4().hex[:12]}"
            config["transaction.timeout.ms"] = max(60_000, self.delivery_timeout_ms * 2)
        config.update(self.producer_properties)
        return config

    def admin_config(self) -> dict[str, str]:
        return self.common_config()

    def redacted(self) -> dict[str, Any]:
        """Settings safe to log: secrets masked, passthrough values that look secret masked."""
        data = self.model_dump(mode="json")
        for key in ("sasl_password", "ssl_key_password"):
            if data.get(key) is not None:
                data[key] = "**********"
        for group in ("kafka_properties", "consumer_properties", "producer_properties"):
            data[group] = {k: ("**********" if _looks_secret(k) else v) for k, v in data[group].items()}
        return data


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _looks_secret(key: str) -> bool:
    return any(word in key.lower() for word in ("password", "secret", "token", "jaas", "key.pem", "credentials"))
