import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient

from consumer.broker import free_port

pytestmark = pytest.mark.integration


def test_triage_broker_serves_kafka_in_the_foreground_until_stopped():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "consumer", "broker", "--port", str(port)],
                               stdout=subprocess.PIPE, text=True)
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
