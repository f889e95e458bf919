"""Named crash points for fault-injection tests: kill this process at an exact moment.

Where it sits: beside the sink hop. `sink.py` calls `hit("before_commit")` inside the SQL
transaction (everything written, nothing committed) and `hit("after_commit")` right after the
commit (events durable, Kafka never told). A random SIGKILL rarely lands in those few
microseconds; the exactly-once promise is made or broken exactly there, so the suite
(tests/faults/) aims at them.

`FW_FAULT_POINTS="before_commit=3,after_commit=5"` SIGKILLs the process at the 3rd hit of
`before_commit` (the first listed point whose count is reached wins). `NAME=N:stop` sends SIGSTOP
instead: the process freezes right there (a zombie-to-be: the test lets its session time out,
then SIGCONTs it). `NAME=N:sleep8` holds the calling thread for 8 s at that point (a batch held
inside its transaction while the group rebalances). The variable is read once, at import; when it is unset, `hit` is one dictionary
lookup on an empty dict. Never set it in production: a SIGKILL is exactly what it promises.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from schemas.errors import ConfigError

ENV = "FW_FAULT_POINTS"
ACTIONS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


def _sleep_s(action: str) -> float | None:
    """'sleep8' -> 8.0; None for anything else."""
    if not action.startswith("sleep"):
        return None
    try:
        return float(action[5:])
    except ValueError:
        return None


def parse(spec: str) -> dict[str, tuple[int, str]]:
    """'before_commit=3, after_commit=5:stop' -> {'before_commit': (3, 'kill'), 'after_commit': (5, 'stop')}."""
    points: dict[str, tuple[int, str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, rest = part.partition("=")
        n, _, action = rest.partition(":")
        try:
            count = int(n) if n else 1
        except ValueError:
            count = 0
        action = action or "kill"
        if not name.strip() or count < 1 or not (action in ACTIONS or _sleep_s(action) is not None):
            raise ConfigError(f"{ENV}={spec!r}: each entry must be NAME, NAME=N, NAME=N:stop or NAME=N:sleepSECONDS "
                              "with N >= 1 "
                              "(e.g. before_commit=3); unset the variable outside fault tests")
        points[name.strip()] = (count, action)
    return points


_targets: dict[str, tuple[int, str]] = parse(os.environ.get(ENV, ""))
_hits: dict[str, int] = {}
_before_action: list = []  # callables run just before the action (a test harness saves its counters)


def on_reached(callback) -> None:
    """Run `callback()` right before an armed point acts: what a test reads of a SIGKILLed process
    must be as of the moment of death, not of the last periodic snapshot."""
    _before_action.append(callback)


def hit(name: str) -> None:
    """Count one pass through the point `name`; SIGKILL (or SIGSTOP) this process at the armed count."""
    if name not in _targets:  # the only cost when no fault is armed
        return
    _hits[name] = _hits.get(name, 0) + 1
    count, action = _targets[name]
    if _hits[name] == count:
        # Say it on stderr first, so a test can tell an injected death from a real crash.
        sys.stderr.write(f"fault point {name} reached ({count}): {action}\n")
        sys.stderr.flush()
        for callback in _before_action:
            callback()
        if action in ACTIONS:
            os.kill(os.getpid(), ACTIONS[action])
        else:
            time.sleep(_sleep_s(action) or 0.0)  # arm() accepts only kill actions and sleepN


def armed() -> dict[str, tuple[int, str]]:
    """The points armed in this process (for a log line at start-up)."""
    return dict(_targets)
