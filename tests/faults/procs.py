"""Real monitor processes for the fault suite: start, signal, wait, read their counters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


STARTED: list["MonitorProc"] = []  # every process of the running test: a failed test's leftovers are killed


class MonitorProc:
    """`python -m tests.faults.monitor_proc` with its stderr in a file and a stats snapshot file."""

    def __init__(self, workdir: Path, name: str, bootstrap: str, url: str, prefix: str, group: str,
                 env: dict[str, str] | None = None):
        self.name = name
        self.stats_path = workdir / f"{name}.stats.json"
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        clean = {k: v for k, v in os.environ.items() if k != "FW_FAULT_POINTS"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.monitor_proc", bootstrap, url, prefix, group, str(self.stats_path)],
            cwd=ROOT, env=clean | {"PYTHONPATH": str(ROOT)} | (env or {}),
            stdout=self._log, stderr=subprocess.STDOUT)
        STARTED.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stats(self) -> dict:
        try:
            return json.loads(self.stats_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def state(self) -> str:
        """Linux process state letter: R/S running or sleeping, T stopped, Z zombie, '' gone."""
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return ""

    def wait_state(self, letter: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.state() != letter:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before reaching state {letter}:\n"
                                     + self.log()[-3000:])
            assert time.monotonic() < deadline, f"{self.name} never reached state {letter}"
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, wait: the clean shutdown path (commit what is scored, leave the group)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout_s)
        finally:
            self.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.close()

    def wait_exit(self, timeout_s: float = 90.0) -> int:
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout_s:.0f} s:\n{self.log()[-3000:]}") from None
        self.close()
        return rc

    def close(self) -> None:
        if not self._log.closed:
            self._log.close()


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.25, procs: list[MonitorProc] = ()):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.proc.poll() not in (None, 0, -signal.SIGKILL):
                raise AssertionError(f"{p.name} died with {p.proc.returncode} while waiting for {what}:\n"
                                     + p.log()[-4000:])
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in procs)
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")
        time.sleep(interval_s)
