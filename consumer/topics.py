"""Topic administration: create what is missing, leave what exists."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import structlog
from confluent_kafka import KafkaError, KafkaException

# confluent-kafka re-exports NewTopic here (its documented place) without marking it as exported
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.errors import AuthenticationError, BrokerError
from consumer.logs import kafka_client_logger

#: client errors that mean the credentials or the TLS set-up are wrong: reconnecting only repeats them
AUTHENTICATION_ERRORS = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL})


def authentication_failure(error: KafkaError) -> AuthenticationError | None:
    """The error to stop with when ``error`` says the broker will never let this client in."""
    if error.code() not in AUTHENTICATION_ERRORS:
        return None
    return AuthenticationError(
        f"the broker refused the connection: {error.str()} (check the security protocol, "
        "SASL mechanism, username, TRIAGE_SASL_PASSWORD and the CA certificate)"
    )


def ensure_topics(
    admin_config: Mapping[str, str],
    topics: Iterable[str],
    partitions: int,
    replication: int,
    timeout_s: float = 15.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    log = structlog.get_logger("triage.topics")
    refused: list[AuthenticationError] = []

    def on_error(error: KafkaError) -> None:
        failure = authentication_failure(error)
        if failure is not None:
            refused.append(failure)

    # no raw librdkafka lines on stderr; an authentication failure ends the wait at once instead of at timeout_s
    config = {**admin_config, "logger": kafka_client_logger(), "error_cb": on_error}
    # the stub allows only scalar config values; librdkafka's config also takes a logger and callbacks
    admin = AdminClient(config)  # type: ignore[arg-type]
    try:
        existing = _list_topics(admin, timeout_s, refused)
        wanted = [t for t in dict.fromkeys(topics) if t not in existing]
        if not wanted:
            return []
        new = [NewTopic(t, partitions, replication, config=dict((configs or {}).get(t, {}))) for t in wanted]
        created = []
        for topic, future in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                created.append(topic)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BrokerError(f"cannot create topic {topic}: {exc.args[0].str()}") from exc
        log.info("topics_created", topics=created, partitions=partitions, replication=replication)
        return created
    finally:
        admin.poll(0)  # librdkafka's lines wait in a queue until a poll hands them to the logger


def _list_topics(admin: AdminClient, timeout_s: float, refused: list[AuthenticationError]) -> set[str]:
    """The broker's topic names, asked in short steps so that a refused login stops the wait."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return set(admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic()))).topics)
        except KafkaException as exc:
            admin.poll(0)  # runs error_cb for what librdkafka has seen meanwhile
            if refused:
                raise refused[0] from exc
            if time.monotonic() >= deadline:
                raise BrokerError(f"cannot reach the broker to list topics: {exc.args[0].str()}") from exc
