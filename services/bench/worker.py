"""One monitor process under benchmark: the real `services.monitor.service.Monitor` with a real
checkpoint, in optimised or naive mode, writing its counters to a JSON file for the harness.

python -m services.bench.worker --spec SPEC_JSON --stats STATS_JSON

Where it sits: started by `services.bench.pipeline` (one or several per run, in one consumer
group), so the harness can read each monitor's own CPU time and resident memory from /proc and
the producer's CPU never counts against the monitor.

The naive mode is the same monitor and scorer with their optimisations switched off by options,
not a second code path: one window per model call (`max_batch=1`, no wait), no overlap of the
score/SQL stage with consumption (the consume thread waits for each commit), frames decoded at the
camera's full size and resized by the featurizer (no JPEG draft), no text-embedding cache, no
per-frame autoencoder memo, and
torch's default thread count (all cores; the monitor's default leaves one core to consumption).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.bench.report import proc_cpu_rss


@dataclass
class WorkerSpec:
    bootstrap: str
    database_url: str
    topic_prefix: str
    partitions: int
    group: str
    checkpoint: str
    mode: str = "optimised"  # optimised | naive
    threads: int | None = None  # torch intra-op threads (None: the monitor's default / torch's for naive)
    camera_size: tuple[int, int] = (320, 240)  # what the naive mode decodes to
    device: str = "cpu"  # where the scorer runs: cpu, cuda (bf16 autocast) or auto
    monitor: dict = field(default_factory=dict)  # extra MonitorSettings overrides

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> "WorkerSpec":
        d = json.loads(text)
        d["camera_size"] = tuple(d.get("camera_size", (320, 240)))
        return cls(**d)


def monitor_overrides(mode: str) -> dict:
    """MonitorSettings for a mode (the optimised one is the product's defaults)."""
    if mode == "naive":
        return {"max_batch": 1, "max_wait_ms": 0, "overlap": False}
    if mode == "optimised":
        return {}
    raise ValueError(f"mode must be optimised or naive, not {mode!r}")


class _FullDecode:
    """The scorer, asking the consume thread for frames at the camera's size (no JPEG draft)."""

    def __init__(self, scorer, size: tuple[int, int]):
        from schemas.envelope import DecodeOptions

        self.inner = scorer
        self.decode_options = DecodeOptions(frame_size=size, sample_rate=scorer.decode_options.sample_rate)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def build(spec: WorkerSpec):
    """(monitor, engine) for a spec."""
    import torch

    from models.scorer import AnomalyScorer
    from services import db
    from services.kafka import Topics
    from services.monitor.service import Monitor
    from services.settings import KafkaSettings, MonitorSettings, Settings

    if spec.mode == "optimised":
        from services.monitor.runner import set_torch_threads

        set_torch_threads(spec.threads)  # the product's default: all cores but one
    elif spec.threads:
        torch.set_num_threads(spec.threads)  # naive: torch's own default unless told otherwise
    ks = KafkaSettings(bootstrap=spec.bootstrap, topic_prefix=spec.topic_prefix, partitions=spec.partitions)
    overrides = monitor_overrides(spec.mode) | spec.monitor
    ms = MonitorSettings(**(MonitorSettings().model_dump() | overrides))
    settings = Settings(kafka=ks, monitor=ms)
    engine = db.make_engine(spec.database_url)
    scorer = AnomalyScorer.load(Path(spec.checkpoint), device=spec.device)
    if spec.mode == "naive":
        scorer.featurizer.text.cache_size = 0  # every line embedded again, in every window it falls in
        if getattr(scorer, "frame_memo", None) is not None:
            scorer.frame_memo.max_frames = 0  # every frame autoencoded again in each of its two windows
        scorer = _FullDecode(scorer, spec.camera_size)
    warm_up(scorer)
    _time_model(scorer)
    monitor = Monitor(settings, spec.bootstrap, engine, scorer, Topics.from_settings(ks), group_id=spec.group)
    return monitor, engine


def warm_up(scorer) -> None:
    """Score one synthetic window before joining the group, as a service should: MiniLM's weights,
    torch's kernels and allocator are then ready, and the first real window is not the slow one."""
    import numpy as np

    from models.inputs import WindowInputs
    from schemas.envelope import LogPayload

    w, h = scorer.decode_options.frame_size
    rate = scorer.decode_options.sample_rate
    t0 = time.time()
    win = WindowInputs(asset="warm-up", start=t0, end=t0 + 2.0)
    win.frames.extend((t0 + k / 4, np.zeros((h, w, 3), np.uint8)) for k in range(8))
    win.audio.append((t0, np.zeros(2 * rate, np.float32)))
    win.logs.append((t0 + 0.5, LogPayload("warm-up line", level="INFO")))
    scorer.score([win])


MODEL_CPU = [0.0]  # CPU seconds spent inside the fusion model's forward (score thread)


def _time_model(scorer) -> None:
    """Count the CPU time of the model's forward pass, so the harness can split the monitor's
    cost into "the model" (what a GPU takes over) and "everything else" (what stays on the CPU)."""
    inner = scorer.inner if isinstance(scorer, _FullDecode) else scorer
    model = inner.model
    forward = model.forward

    def timed(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return forward(*args, **kwargs)
        finally:
            MODEL_CPU[0] += time.thread_time() - t0

    model.forward = timed


class DrainMarks:
    """This process's CPU time at its first record and at its latest new window, polled every
    20 ms: a capacity run's figures come from these. The harness reads the stats file every
    0.5 s, which on a drain of a few seconds put ±10 % of noise into CPU per window."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.first: list | None = None  # [wall, process CPU s, model CPU s, {thread: CPU s}]
        self.last: list | None = None  # [wall, process CPU s, model CPU s, {thread: CPU s}, windows]

    def poll(self) -> None:
        st = self.monitor.stats
        if self.first is None and st.records:
            self.first = [time.time(), time.process_time(), MODEL_CPU[0], thread_cpu()]
        if st.windows and (self.last is None or st.windows != self.last[4]):
            self.last = [time.time(), time.process_time(), MODEL_CPU[0], thread_cpu(), st.windows]


def snapshot(monitor, started: float, marks: list, final: bool = False, drain: DrainMarks | None = None) -> dict:
    st = monitor.stats
    usage = proc_cpu_rss(os.getpid()) or (float("nan"), float("nan"))
    now = time.time()
    marks.append([now, len(st.latencies)])
    gauges = monitor.gauges()
    data = {
        "pid": os.getpid(), "t": now, "started": started, "ready": monitor.ready.is_set(),
        "records": st.records, "aligned": st.aligned, "rejected": st.rejected, "late": st.late,
        "windows": st.windows, "commits": st.commits, "events_opened": st.events_opened, "fenced": st.fenced,
        "cpu_s": usage[0], "rss_mb": usage[1], "assigned": len({p for _, p in gauges.assigned}),
        # work still inside the monitor: records held for open windows, windows not yet batched,
        # batches not yet committed (a backlog is drained when all three are zero)
        "buffered": gauges.buffered, "pending": gauges.pending, "in_flight": gauges.in_flight,
        "final": final, "latency_marks": marks, "model_cpu_s": MODEL_CPU[0],
    }
    data["drain"] = {"first": drain.first, "last": drain.last} if drain else None
    data["thread_cpu_s"] = thread_cpu()
    data["latencies"] = list(st.latencies)
    return data


def thread_cpu() -> dict[str, float]:
    """CPU seconds per Python thread (by name) of this process, from /proc: which stage costs what."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for t in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
        except (OSError, TypeError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        name = "consume" if t is threading.main_thread() else t.name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True, help="worker spec JSON file (written by the harness)")
    ap.add_argument("--stats", required=True, help="where to keep rewriting this monitor's counters")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s worker %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from services.lifecycle import install_stop_handlers

    spec = WorkerSpec.from_json(Path(args.spec).read_text())
    stop = install_stop_handlers()
    started = time.time()
    monitor, engine = build(spec)
    path = Path(args.stats)
    marks: list = []
    drain = DrainMarks(monitor)

    def sampler() -> None:
        n = 0
        while not stop.wait(0.02):
            drain.poll()
            n += 1
            if n % 25 == 0:
                write_json(path, snapshot(monitor, started, marks, drain=drain))

    threading.Thread(target=sampler, daemon=True, name="fw-bench-stats").start()
    try:
        monitor.run(stop)
    finally:
        drain.poll()
        write_json(path, snapshot(monitor, started, marks, final=True, drain=drain))
        engine.dispose()


if __name__ == "__main__":
    main()
