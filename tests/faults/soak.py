"""Soak run: a monitor process under nominal, real-time load for a long time; sample memory, lag
and open file descriptors, and say whether any of them trends upwards.

    python -m tests.faults.soak --minutes 60            # the full soak (tests/faults/test_soak.py)
    python -m tests.faults.soak --minutes 10 --json out.json

Real parts: an embedded Tansu broker of its own, a SQLite database, a monitor subprocess
(tests/faults/monitor_proc.py, the brightness scorer, so the figures are about the pipeline, not the
model) and a producer sending `--assets` assets in real time (4 frames, 2 audio chunks and 1 log
line per asset per second, a bright fault on one asset every minute, so events open and close all
along). Every `--every` seconds it records the monitor's RSS, open fds and threads, the broker's
RSS, the committed lag (records produced minus committed offsets) and the event count.

Growth is judged on the second half of the run (the first half includes warm-up: imports, caches,
the allocator settling): the least-squares slope of RSS in MB per hour, and fds/threads at the end
against the start of that half.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from schemas.envelope import encode_audio, encode_frame, encode_log, wav_bytes
from services import db
from services.broker.embedded import EmbeddedBroker, free_port
from services.kafka import ensure_topics, make_producer
from services.settings import KafkaSettings
from tests.faults import ledger
from tests.faults.procs import MonitorProc
from tests.support.streams import jpeg


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    fds: int
    threads: int
    broker_rss_mb: float
    produced: int
    lag_records: int
    events: int


def proc_status(pid: int) -> tuple[float, int, int]:
    """(RSS in MB, open fds, threads) of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_mb = int(fields["VmRSS"].split()[0]) / 1024
    return rss_mb, len(list(Path(f"/proc/{pid}/fd").iterdir())), int(fields["Threads"])


class Producer(threading.Thread):
    """Real-time contract records for `assets` assets; counts what it produced per partition."""

    def __init__(self, kafka: KafkaSettings, bootstrap: str, topics, assets: int):
        super().__init__(daemon=True, name="soak-producer")
        self.producer = make_producer(kafka, bootstrap, linger_ms=20)
        self.topics, self.assets = topics, [f"S{i // 4 + 1}-A{i % 4 + 1}" for i in range(assets)]
        self.produced = 0
        self.stop = threading.Event()
        self.chunk = wav_bytes(np.zeros(8000, np.float32), 16000)

    def run(self) -> None:
        t0 = time.time()
        tick = 0
        while not self.stop.is_set():
            now = time.time()
            minute, second = divmod(int(now - t0), 60)
            for i, a in enumerate(self.assets):
                bright = i == minute % len(self.assets) and 20 <= second < 30  # one fault a minute
                for k in range(4):
                    t = now + k * 0.25
                    self._send(self.topics.frames, encode_frame(a, f"/{a}/cam", t, jpeg(220 if bright else 40)))
                for k in range(2):
                    self._send(self.topics.audio, encode_audio(a, f"/{a}/mic", now + k * 0.5, self.chunk))
                self._send(self.topics.logs, encode_log(a, f"/{a}/plc", now + 0.1,
                                                        {"msg": f"cycle {tick} ok", "serial": f"SN-{a}-{tick}"}))
            tick += 1
            self.producer.flush()
            self.stop.wait(max(0.0, t0 + tick - time.time()))
        self.producer.close()

    def _send(self, topic, rec) -> None:
        self.producer.send(topic, key=rec.key, value=rec.value, headers=rec.headers)
        self.produced += 1


def committed_total(url: str, group: str) -> int:
    offs, _ = ledger.committed(url, group)
    return sum(offs.values())


def soak(minutes: float, assets: int = 8, every_s: float = 10.0, workdir: Path | None = None,
         on_sample=print) -> dict:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="fw-soak-"))
    ks = KafkaSettings(topic_prefix=f"soak{uuid.uuid4().hex[:6]}.", partitions=4)
    url = f"sqlite:///{workdir / 'soak.db'}"
    db.upgrade(url)
    group = f"soak-{uuid.uuid4().hex[:6]}"
    samples: list[Sample] = []
    with EmbeddedBroker(port=free_port(), log_path=workdir / "tansu.log") as broker:
        topics = ensure_topics(ks, broker.bootstrap)
        producer = Producer(ks, broker.bootstrap, topics, assets)
        producer.start()
        monitor = MonitorProc(workdir, "monitor", broker.bootstrap, url, ks.topic_prefix, group)
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < minutes * 60:
                time.sleep(every_s)
                assert monitor.proc.poll() is None, "the monitor died:\n" + monitor.log()[-3000:]
                rss, fds, threads = proc_status(monitor.pid)
                broker_rss = proc_status(broker.pid)[0] if broker.pid else 0.0
                produced = producer.produced
                s = Sample(round(time.monotonic() - t0, 1), round(rss, 1), fds, threads, round(broker_rss, 1),
                           produced, max(0, produced - committed_total(url, group)),
                           len(ledger.event_rows(url)))
                samples.append(s)
                on_sample(s)
        finally:
            producer.stop.set()
            producer.join(10)
            rc = monitor.stop()
    return summarize(samples, rc)


def summarize(samples: list[Sample], rc: int) -> dict:
    half = samples[len(samples) // 2:]
    t_h = np.array([s.t_s for s in half]) / 3600
    rss = np.array([s.rss_mb for s in half])
    slope = float(np.polyfit(t_h, rss, 1)[0]) if len(half) >= 3 else 0.0
    first, last = samples[0], samples[-1]
    return {
        "samples": [asdict(s) for s in samples],
        "start": asdict(first), "end": asdict(last),
        "second_half_rss_slope_mb_per_h": round(slope, 1),
        "second_half_fd_change": last.fds - half[0].fds,
        "second_half_thread_change": last.threads - half[0].threads,
        "max_lag_records": max(s.lag_records for s in samples),
        "monitor_exit_code": rc,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="how long to run (default 60)")
    ap.add_argument("--assets", type=int, default=8, help="assets producing in real time (default 8, 56 records/s)")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--json", type=Path, help="write the samples and the verdict here")
    args = ap.parse_args()
    print("t_s  rss_mb  fds  threads  broker_rss_mb  produced  lag_records  events")
    result = soak(args.minutes, args.assets, args.every,
                  on_sample=lambda s: print(f"{s.t_s:6.0f} {s.rss_mb:7.1f} {s.fds:4d} {s.threads:4d} "
                                            f"{s.broker_rss_mb:8.1f} {s.produced:9d} {s.lag_records:6d} {s.events:5d}",
                                            flush=True))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
