"""services/monitor/faultpoints.py: parsing, and a real SIGKILL/SIGSTOP at the armed hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from schemas.errors import ConfigError
from services.monitor import faultpoints
from tests.faults.procs import ROOT

pytestmark = pytest.mark.faults


def test_parse():
    assert faultpoints.parse("") == {}
    assert faultpoints.parse("before_commit=3, after_commit=5:stop,x,y=2:sleep1.5") == {
        "before_commit": (3, "kill"), "after_commit": (5, "stop"), "x": (1, "kill"), "y": (2, "sleep1.5")}
    for bad in ("=3", "a=0", "a=x", "a=1:explode", "a=1:sleepy"):
        with pytest.raises(ConfigError, match="FW_FAULT_POINTS"):
            faultpoints.parse(bad)


def _run(spec: str, hits: int) -> subprocess.CompletedProcess:
    code = ("from services.monitor import faultpoints as f\n"
            f"for _ in range({hits}): f.hit('p')\n"
            "print('survived')")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=os.environ | {"PYTHONPATH": str(ROOT), "FW_FAULT_POINTS": spec})


def test_kill_at_the_nth_hit_and_not_before():
    assert _run("p=3", 2).stdout.strip() == "survived"
    died = _run("p=3", 3)
    assert died.returncode == -signal.SIGKILL and "fault point p reached (3): kill" in died.stderr
    assert _run("q=1", 5).stdout.strip() == "survived"  # other points are untouched


def test_unarmed_points_cost_nothing_observable():
    if "p" not in faultpoints.armed():
        for _ in range(1000):
            faultpoints.hit("p")
