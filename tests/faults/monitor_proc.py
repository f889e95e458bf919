"""One monitor process for the fault suite: the test scorer, plus a stats file the ledger reads.

python -m tests.faults.monitor_proc BOOTSTRAP DB_URL TOPIC_PREFIX GROUP STATS_JSON [PARTITIONS]

Like tests/support/run_monitor.py, but it rewrites STATS_JSON (atomically, every 0.3 s, at exit and
right before an armed fault point acts) with the monitor's counters, so a test can read how many records a process fetched, aligned,
dead-lettered, re-read after a restart, and how often it was fenced — even for a process that is
SIGKILLed later (the last snapshot survives). Fault points come from FW_FAULT_POINTS; other
settings from FW_* (e.g. FW_MONITOR__PER_ASSET_MAX_RECORDS_PER_S).
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from services import db
from services.kafka import Topics
from services.lifecycle import install_stop_handlers
from services.monitor import faultpoints
from services.monitor.service import Monitor
from services.settings import Settings
from tests.support.scorers import BrightnessScorer, PoisonableScorer

_stats_lock = threading.Lock()  # the sampler and a fault point's callback both write the file


def write_stats(monitor: Monitor, path: Path) -> None:
    data = {k: v for k, v in asdict(monitor.stats).items() if k != "latencies"}
    data["pid"] = os.getpid()
    data["assigned"] = [f"{t}:{p}" for t, p in monitor.gauges().assigned]
    with _stats_lock:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def dump_state(monitor: Monitor) -> None:
    """What a stalled consumer looks like from inside: assignment, pauses, positions, buffers."""
    c = monitor.consumer
    try:
        tps = sorted(c.assignment())
        state = {"assignment": [f"{tp.topic}[{tp.partition}]" for tp in tps],
                 "paused": [f"{tp.topic}[{tp.partition}]" for tp in c.paused()],
                 "positions": {f"{tp.topic}[{tp.partition}]": (c.position(tp, timeout_ms=0), c.highwater(tp))
                               for tp in tps},
                 "monitor": asdict(monitor.gauges())}
    except Exception as e:  # a diagnostic must not kill the process
        state = {"error": repr(e)}
    print("STATE", json.dumps(state, default=str), file=sys.stderr, flush=True)


def main() -> None:
    bootstrap, url, prefix, group, stats_path = sys.argv[1:6]
    partitions = int(sys.argv[6]) if len(sys.argv) > 6 else 4
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(getattr(logging, os.environ.get("FW_TEST_KAFKA_LOG", "ERROR")))
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID`: every thread's stack into the log (a stall)
    base = Settings()  # FW_* from the environment (e.g. FW_KAFKA__MAX_POLL_RECORDS, FW_MONITOR__MAX_BATCH)
    ks = base.kafka.model_copy(update={"topic_prefix": prefix, "partitions": partitions})
    settings = base.model_copy(update={"kafka": ks})
    engine = db.make_engine(url)
    stop = install_stop_handlers()
    scorer = PoisonableScorer() if os.environ.get("FW_TEST_SCORER") == "poisonable" else BrightnessScorer()
    monitor = Monitor(settings, bootstrap, engine, scorer, Topics.from_settings(ks), group_id=group)
    path = Path(stats_path)
    signal.signal(signal.SIGUSR2, lambda *_: dump_state(monitor))  # `kill -USR2 PID`: consumer state
    faultpoints.on_reached(lambda: write_stats(monitor, path))  # counters as of a SIGKILL, not 0.3 s before
    logging.getLogger(__name__).info("monitor pid %d, fault points %s", os.getpid(), faultpoints.armed() or "none")

    def sampler() -> None:
        while not stop.wait(0.3):
            write_stats(monitor, path)

    threading.Thread(target=sampler, daemon=True, name="fw-stats").start()
    try:
        monitor.run(stop)
    finally:
        write_stats(monitor, path)
        engine.dispose()


if __name__ == "__main__":
    main()
