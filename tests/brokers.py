"""Brokers for the tests beyond the default in-memory embedded one.

Real Apache Kafka where Docker exists (TRIAGE_TEST_BROKER=testcontainers): the apache/kafka image in KRaft
mode, configured like docker-compose.yml; the host port is fixed up front so the advertised listener is the
address the tests connect to. And the embedded broker on durable storage: Tansu's ``s3://`` engine against
moto's S3 server on loopback, which honours the conditional writes Tansu relies on (If-Match,
If-None-Match), so records, committed offsets and producer state survive a ``kill -9`` of the broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

KAFKA_IMAGE = "apache/kafka:3.9.1"


@contextmanager
def apache_kafka() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    from devtools.broker import free_port

    port = free_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{port}",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        )
    )
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=120)
        yield f"127.0.0.1:{port}"


@contextmanager
def loopback_s3(bucket: str = "tansu") -> Iterator[dict[str, str]]:
    """moto's S3 server on a free loopback port with ``bucket`` created; yields the environment Tansu reads."""
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from devtools.broker import await_port, free_port

    port = free_port()
    # its own process: serving the broker's many small requests must not compete with the test for the GIL
    store = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await_port(store, port, 30, "the S3 server")
        endpoint = f"http://127.0.0.1:{port}"
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=10)
        yield {
            "AWS_ACCESS_KEY_ID": "triage-test",
            "AWS_SECRET_ACCESS_KEY": "triage-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
    finally:
        store.kill()
        store.wait()


@contextmanager
def durable_embedded_broker(log_file=None) -> Iterator:
    """An :class:`EmbeddedBroker` whose data outlives its process (``kill()`` then ``start()``)."""
    from devtools.broker import EmbeddedBroker

    with loopback_s3() as env, EmbeddedBroker(log_file=log_file, storage="s3://tansu/", storage_env=env) as broker:
        yield broker


def self_signed_certificate(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and localhost and its key, as PEM files in ``directory``: (cert, key)."""
    import datetime
    import ipaddress
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = Path(directory) / "broker.pem", Path(directory) / "broker.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@contextmanager
def tls_embedded_broker(directory, authentication: bool = False) -> Iterator[tuple[str, str]]:
    """The embedded broker behind TLS (tests/tls_proxy.py); yields (bootstrap servers, CA file).

    With ``authentication`` it requires SASL/SCRAM of every client. Tansu 0.6.0 offers no way to give it a user
    such a client could log in as (``tansu user create`` needs an open broker, and what it creates is gone when
    the broker restarts with authentication on), so that broker only shows how a refused login is handled.
    """
    import subprocess
    import sys

    from devtools.broker import EmbeddedBroker, await_port, free_port

    cert, key = self_signed_certificate(directory)
    port, tls_port = free_port(), free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "tests.tls_proxy", str(tls_port), str(port), cert, key],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await_port(proxy, tls_port, 30, "the TLS terminator")
        with EmbeddedBroker(
            port=port, authentication=authentication, advertised_port=tls_port, log_file=f"{directory}/tansu.log"
        ):
            yield f"127.0.0.1:{tls_port}", cert
    finally:
        proxy.kill()
        proxy.wait()


def hides_aborted_records(bootstrap: str, topic: str = "probe-aborted-records") -> bool:
    """Whether a read_committed reader on this broker skips the records of an aborted transaction.

    Kafka does; the embedded broker (Tansu 0.6.0) hands them out like committed ones. Exactly-once tests ask
    this first, so they demand no duplicate where the broker keeps its side of the bargain and bound the
    duplicates by what the killed member left open where it does not.
    """
    import uuid

    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from tests.kafka_client import read_values

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"probe-{uuid.uuid4()}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed")
    producer.commit_transaction(30)
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"probe-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    # the aborted record has the lower offset: a reader that does not hide it gets it first
    first = read_values(reader, topic, 1, timeout_s=30)
    if not first:
        raise TimeoutError("the probe's committed record never arrived")
    return first == [b"committed"]
