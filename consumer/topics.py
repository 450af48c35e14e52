"""Topic administration: create what is missing, leave what exists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.errors import BrokerError
from consumer.logs import kafka_client_logger


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
    admin = AdminClient({**admin_config, "logger": kafka_client_logger()})  # no raw librdkafka lines on stderr
    try:
        try:
            existing = set(admin.list_topics(timeout=timeout_s).topics)
        except KafkaException as exc:
            raise BrokerError(f"cannot reach the broker to list topics: {exc.args[0].str()}") from exc
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
