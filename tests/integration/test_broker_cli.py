import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient

from devtools.broker import free_port

pytestmark = pytest.mark.integration


def test_triage_broker_serves_kafka_in_the_foreground_until_stopped():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "triage", "broker", "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        deadline = time.monotonic() + 20
        while True:
            try:
                metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=5)
                break
            except Exception:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert metadata.brokers
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
    assert code == 0


def test_triage_broker_on_s3_storage_keeps_records_across_a_restart(tmp_path):
    import os

    from confluent_kafka import Consumer

    from tests.brokers import loopback_s3
    from tests.kafka_client import read_values, write_values

    with loopback_s3() as env:
        port = free_port()
        command = [sys.executable, "-m", "triage", "broker", "--port", str(port), "--storage", "s3://tansu/"]
        bootstrap = f"127.0.0.1:{port}"
        for run in range(2):
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
            try:
                assert "storage s3://tansu/" in process.stdout.readline()
                if run == 0:
                    write_values(bootstrap, "kept", 5)
                else:
                    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "r", "enable.auto.commit": False})
                    values = read_values(reader, "kept", 5)
                    assert values == [f"m{i}".encode() for i in range(5)], "records outlive the broker process"
            finally:
                process.send_signal(signal.SIGTERM)
                assert process.wait(20) == 0


def test_triage_broker_refuses_a_storage_it_does_not_know():
    result = subprocess.run(
        [sys.executable, "-m", "triage", "broker", "--storage", "file:///tmp/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not a storage URL the broker knows" in result.stderr
