"""Service settings: CLI flags > ``TRIAGE_*`` environment variables > defaults (pydantic-settings).

Settings are frozen and read only when :class:`Settings` is instantiated, never at import time. They map
onto librdkafka configuration; any librdkafka property can be passed through ``kafka_properties``
(``TRIAGE_KAFKA_PROPERTIES='{"socket.keepalive.enable": "true"}'`` or ``--kafka-property KEY=VALUE``).
"""

from __future__ import annotations

import tempfile
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
    #: where agents' tools publish corrections (`triage feedback collect` reads it; the service never does)
    feedback_topic: str = "inquiries.feedback"
    create_topics: bool = Field(default=True, description="create missing topics at start")
    topic_partitions: int = Field(default=3, ge=1)
    topic_replication: int = Field(default=1, ge=1)

    # Model and policy
    model_dir: Path = Path("artifacts")
    #: a candidate model (intent/ and sentiment/) run beside the serving one for comparison only
    shadow_model_dir: Path | None = None
    policy_file: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: the artifacts' int8 ONNX export through ONNX Runtime on CPU when present, else torch
    backend: Literal["auto", "torch", "onnx"] = "auto"
    top_k: int = Field(default=3, ge=3)
    # the most texts per forward pass; unset: 16 on CPU (less padding), 256 on a GPU
    inference_batch_size: int | None = Field(default=None, ge=1)
    # CPU: torch threads per model, and whether the intent and sentiment models run side by side; unset, two or
    # more cores run them side by side with half the cores each (measured with `triage bench`)
    torch_threads: int | None = Field(default=None, ge=1)
    parallel_models: bool | None = None
    # CPU: bf16 on AVX-512/AMX cores for the torch path (false keeps float32)
    cpu_bf16: bool = True

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
    # exactly-once: a fixed transactional.id for this member (unique in the cluster); unset, each process
    # claims the lowest free slot on this host: "<prefix>-<group>-<host>-<slot>", the same after a restart
    transactional_id: str | None = None
    # the largest record the output topics take (message.max.bytes); larger outputs step to their dead letter,
    # then to a pointer to the input, before they are sent
    max_message_bytes: int = Field(default=1_000_000, ge=1_024)

    # Failure handling
    # a batch whose outputs could not be delivered is retried after retry_backoff_ms, doubling up to the max
    retry_backoff_ms: int = Field(default=1_000, ge=0)
    retry_backoff_max_ms: int = Field(default=30_000, ge=0)
    # /readyz turns red when records have waited this long without a batch finishing
    stall_timeout_s: float = Field(default=300.0, gt=0)
    # a batch's inference taking longer counts as a model failure (the batch is retried)
    inference_timeout_s: float = Field(default=600.0, gt=0)
    # after this many batches in a row that the model failed or timed out, consuming stops (partitions kept,
    # /readyz red) and one batch is tried every breaker_cooldown_s
    model_failure_limit: int = Field(default=3, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, ge=0)
    # a record the service died on this many times (out of memory, a native crash) goes to the DLQ unprocessed
    crash_limit: int = Field(default=3, ge=1)
    # small local state: crash counts where the broker drops commit metadata, exactly-once instance slots
    state_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "inquiry-triage")

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
    # loopback unless set: /metrics names intents and topics; a container sets 0.0.0.0 to be scraped
    metrics_host: str = "127.0.0.1"
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

    def producer_config(self, transactional_id: str | None = None) -> dict[str, str | int | bool]:
        """Producer properties; exactly-once needs ``transactional_id`` (see :mod:`consumer.instance`)."""
        config: dict[str, str | int | bool] = {
            **self.common_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": self.delivery_timeout_ms,
        }
        if self.exactly_once and transactional_id:
            # stable across restarts: the new producer fences the one it replaces and aborts what that one left
            # open; fencing between members of the group comes from the group metadata (KIP-447)
            config["transactional.id"] = transactional_id
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
    key = key.lower()
    # every sasl.* value but the mechanism and username may carry a credential (sasl.oauthbearer.config does)
    if key.startswith("sasl.") and key not in ("sasl.mechanism", "sasl.mechanisms", "sasl.username"):
        return True
    return any(word in key for word in ("password", "secret", "token", "jaas", "key.pem", "credentials", "oauthbearer"))
