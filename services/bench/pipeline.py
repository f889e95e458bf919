"""`fusionwatch bench pipeline`: the whole data path under load, optimised vs naive, on this box.

simulated plant ──► embedded broker ──► monitor process(es) ──► SQLite
(records generated once,    (Tansu, topics      (services.bench.worker:       (events, offsets,
 replayed in real time       created first)      the real Monitor + scorer)    state: one txn)
 with fresh timestamps)

Two kinds of run:
- **capacity**: a backlog (N assets × S seconds of plant time) is produced first, then the monitor
  drains it as fast as it can. Windows per wall second and per CPU-second of the monitor process
  (the "equal CPU" figure) for the optimised and the naive mode, and their ratio. CPU is counted
  from each monitor's first record to its last window, by the monitor itself every 20 ms
  (`worker.DrainMarks`). `--repeats` interleaves the modes and reports the median ratio of
  neighbouring pairs (a machine's speed drifts). With several processes in one group, the
  scale-out figure.
- **real time**: N assets are replayed at 1x (4 fps 320x240 JPEG, 16 kHz audio in 0.5 s chunks,
  PLC log lines, as the simulator makes them); consumer lag is sampled every second and decision
  latency (window close → committed, `Monitor.stats.latencies`) is taken after a warm-up. The run
  is *sustained* when lag stays bounded, p95 is within budget and windows keep pace with the plant.
  `--search` finds the largest N that is sustained (doubling, then bisection).

`--device cuda` has the monitors score on the GPU (bf16 autocast): with several `--processes`
sharing it, the capacity run is the figure for one GPU server (docs/performance.md).

The producer runs in this process and each monitor in its own, so a monitor's CPU and memory
(read from /proc) are its own. Records are generated once by the factory simulator and replayed
with rewritten `ce_time`, so generating them never competes with the monitor for the CPU.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from services.bench.report import BenchError, BenchResult, machine_info, proc_cpu_rss, quantile
from services.bench.worker import WorkerSpec


@dataclass
class PipelineBenchConfig:
    assets: list[int] = field(default_factory=lambda: [16])  # real-time runs
    duration_s: float = 60.0
    warmup_s: float = 10.0  # excluded from latency and rate figures of real-time runs
    backlog_s: float = 60.0  # capacity runs: plant seconds per asset (0: skip)
    backlog_assets: int = 16
    modes: list[str] = field(default_factory=lambda: ["optimised", "naive"])
    realtime_modes: list[str] | None = None  # None: the same as `modes`
    capacity_processes: list[int] | None = None  # optimised capacity runs; None: [1] and [processes]
    capacity_repeats: int = 1  # optimised and naive capacity runs, interleaved; ratios are medians
    search: bool = False
    search_max: int = 64
    search_duration_s: float = 40.0
    p95_budget_s: float = 1.0
    lag_budget_s: float = 3.0  # a real-time run may fall this far behind the plant, at most
    processes: int = 1
    partitions: int = 8
    checkpoint: Path | None = None
    random_init: bool = False
    tiny: bool = False
    threads: int | None = None
    device: str = "cpu"  # the monitors' scorer: cpu, cuda or auto (a GPU server's figure)
    bootstrap: str | None = None
    database_url: str | None = None  # default: a fresh SQLite file per run
    seed: int = 0
    fps: float = 4.0
    frame_size: tuple[int, int] = (320, 240)
    audio_chunk_s: float = 0.5
    start_timeout_s: float = 90.0


# ── simulated records, generated once ──────────────────────────────────────────────────────────

class RecordBank:
    """Factory-simulator records for up to `assets` assets and `seconds` of plant time, kept in
    memory and replayed with fresh event times (ce_time rewritten at send time)."""

    def __init__(self, cfg: PipelineBenchConfig):
        self.cfg = cfg
        self.t0 = round(time.time() - 3600.0, 3)  # generation origin; never sent as is
        self.seconds = 0.0
        self.assets = 0
        self.items: list[tuple[float, object, str, bytes, bytes, list]] = []  # (offset, kind, asset, key, value, headers)

    def ensure(self, assets: int, seconds: float) -> None:
        from services.simulator.plant import Plant, asset_names

        if assets <= self.assets and seconds <= self.seconds:
            return
        names = asset_names(max(assets, self.assets))
        seconds = max(seconds, self.seconds)
        plant = Plant(names, seed=self.cfg.seed, start_time=self.t0, fps=self.cfg.fps,
                      frame_size=self.cfg.frame_size, audio_chunk_s=self.cfg.audio_chunk_s)
        self.items = [(self._offset(rec), kind, rec.key.decode(), rec.key, rec.value, rec.headers)
                      for kind, rec in plant.records(seconds)]
        self.assets, self.seconds = len(names), seconds

    def _offset(self, rec) -> float:
        from schemas.envelope import parse_time

        for name, value in rec.headers:
            if name == "ce_time":
                return parse_time(value.decode()) - self.t0
        raise BenchError("a simulated record has no ce_time header")

    def select(self, assets: int, seconds: float) -> list:
        from services.simulator.plant import asset_names

        self.ensure(assets, seconds)
        wanted = set(asset_names(assets))
        return [it for it in self.items if it[2] in wanted and it[0] < seconds]

def _retime(headers: list, t: float) -> list:
    from schemas.envelope import format_time

    stamp = format_time(t).encode()
    return [(k, stamp if k == "ce_time" else v) for k, v in headers]


class Replayer(threading.Thread):
    """Sends the selected records to Kafka; real time (speed 1) or as fast as possible (speed 0).
    A record is sent when the wall clock reaches the end of what it describes (an audio chunk
    after it has been recorded), with `ce_time` = new origin + its offset."""

    def __init__(self, producer, topics, items: list, origin: float, speed: float, chunk_s: float):
        super().__init__(name="fw-bench-producer", daemon=True)
        from schemas.envelope import Kind

        self.producer, self.items, self.origin, self.speed = producer, items, origin, speed
        self.topic = {Kind.FRAME: topics.frames, Kind.AUDIO: topics.audio, Kind.LOG: topics.logs}
        self.delay = {Kind.FRAME: 0.0, Kind.AUDIO: chunk_s, Kind.LOG: 0.0}
        self.sent = 0
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            order = sorted(self.items, key=lambda it: it[0] + self.delay[it[1]])
            for offset, kind, _, key, value, headers in order:
                if self.speed > 0:
                    wait = self.origin + offset + self.delay[kind] - time.time()
                    if wait > 0 and self.stop_event.wait(wait):
                        break
                elif self.stop_event.is_set():
                    break
                self.producer.send(self.topic[kind], key=key, value=value, headers=_retime(headers, self.origin + offset))
                self.sent += 1
            self.producer.flush(timeout=60)
        except BaseException as e:  # surfaced by the harness
            self.error = e


# ── monitor processes ──────────────────────────────────────────────────────────────────────────

class Workers:
    """N monitor processes (services.bench.worker) in one consumer group, and their stats files."""

    def __init__(self, specs: list[WorkerSpec], workdir: Path):
        self.paths: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        env = os.environ | {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        root = Path(__file__).resolve().parents[2]
        for i, spec in enumerate(specs):
            spec_path = workdir / f"worker{i}.spec.json"
            spec_path.write_text(spec.to_json())
            stats = workdir / f"worker{i}.stats.json"
            log = workdir / f"worker{i}.log"
            self.paths.append(stats)
            self.logs.append(log)
            with open(log, "w") as fh:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "services.bench.worker", "--spec", str(spec_path), "--stats", str(stats)],
                    cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT))

    def stats(self) -> list[dict]:
        out = []
        for p in self.paths:
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                out.append({})
        return out

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs):
            if proc.poll() is not None:
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise BenchError(f"a monitor process exited with code {proc.returncode} during the benchmark; "
                                 f"its log ({log}) ends with:\n{tail}")

    def wait_ready(self, partitions: int, timeout_s: float) -> None:
        """All partitions assigned, each process holding some (a stable group)."""
        deadline = time.monotonic() + timeout_s
        stable_since = None
        while time.monotonic() < deadline:
            self.check_alive()
            st = self.stats()
            ok = all(s.get("ready") for s in st) and sum(s.get("assigned", 0) for s in st) >= partitions \
                and all(s.get("assigned", 0) > 0 for s in st)
            if ok:
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since >= 1.0:
                    return
            else:
                stable_since = None
            time.sleep(0.25)
        raise BenchError(f"the monitor processes did not join the group within {timeout_s:.0f} s; "
                         f"see their logs in {self.logs[0].parent}")

    def usage(self) -> tuple[float, float]:
        """(CPU seconds, resident MiB) summed over the live processes."""
        cpu = rss = 0.0
        for p in self.procs:
            u = proc_cpu_rss(p.pid)
            if u:
                cpu, rss = cpu + u[0], rss + u[1]
        return cpu, rss

    def stop(self, timeout_s: float = 60.0) -> list[dict]:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return self.stats()


# ── one run ────────────────────────────────────────────────────────────────────────────────────

@dataclass
class RunResult:
    kind: str  # capacity | realtime
    mode: str
    processes: int
    assets: int
    row: dict
    series: list[list[float]]
    sustained: bool | None = None


class Harness:
    def __init__(self, cfg: PipelineBenchConfig, bootstrap: str, checkpoint: Path, workdir: Path, progress):
        self.cfg, self.bootstrap, self.checkpoint, self.workdir = cfg, bootstrap, checkpoint, workdir
        self.bank = RecordBank(cfg)
        self.step = progress
        self.runs = 0

    def _setup(self, label: str):
        from services.kafka import ensure_topics, make_producer
        from services.settings import KafkaSettings

        self.runs += 1
        run_dir = self.workdir / f"run{self.runs:02d}-{label}"
        run_dir.mkdir(parents=True)
        ks = KafkaSettings(bootstrap=self.bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}.",
                           partitions=self.cfg.partitions)
        topics = ensure_topics(ks, self.bootstrap)
        url = self.cfg.database_url or f"sqlite:///{run_dir / 'fw.db'}"
        if self.cfg.database_url is None:
            from services.db import upgrade

            upgrade(url)
        producer = make_producer(ks, self.bootstrap)
        return run_dir, ks, topics, url, producer

    def _specs(self, ks, url: str, mode: str, processes: int) -> list[WorkerSpec]:
        group = f"bench-{uuid.uuid4().hex[:8]}"
        return [WorkerSpec(bootstrap=self.bootstrap, database_url=url, topic_prefix=ks.topic_prefix,
                           partitions=ks.partitions, group=group, checkpoint=str(self.checkpoint), mode=mode,
                           threads=self.cfg.threads, camera_size=tuple(self.cfg.frame_size),
                           device=self.cfg.device)
                for _ in range(processes)]

    # capacity: drain a backlog as fast as possible
    def capacity(self, mode: str, processes: int) -> RunResult:
        cfg = self.cfg
        n, secs = cfg.backlog_assets, cfg.backlog_s
        self.step(f"capacity {mode} ×{processes}: generating {n} assets × {secs:g} s")
        items = self.bank.select(n, secs)
        run_dir, ks, topics, url, producer = self._setup(f"capacity-{mode}-{processes}p")
        origin = time.time() - secs - 30  # a recent past: inside the contract's ±24 h window
        self.step(f"capacity {mode} ×{processes}: producing {len(items)} records")
        rep = Replayer(producer, topics, items, origin, speed=0, chunk_s=cfg.audio_chunk_s)
        rep.run()
        producer.close()
        if rep.error:
            raise rep.error
        workers = Workers(self._specs(ks, url, mode, processes), run_dir)
        series: list[list[float]] = []
        try:
            deadline = time.monotonic() + cfg.start_timeout_s + max(120.0, 4.0 * n * secs / max(cfg.fps, 1))
            t_first = cpu_first = model_first = None
            last_windows, stable_since = -1, None
            while time.monotonic() < deadline:
                time.sleep(0.5)
                workers.check_alive()
                st = workers.stats()
                records = sum(s.get("records", 0) for s in st)
                windows = sum(s.get("windows", 0) for s in st)
                cpu, rss = workers.usage()
                model_cpu = sum(s.get("model_cpu_s", 0.0) for s in st)
                now = time.time()
                if records and t_first is None:
                    t_first, cpu_first, model_first = now, cpu, model_cpu
                if t_first is not None:
                    series.append([round(now - t_first, 2), len(items) - records, windows, round(cpu - cpu_first, 2),
                                   round(rss, 1), round(model_cpu - model_first, 2)])
                self.step(f"capacity {mode} ×{processes}: {records}/{len(items)} records, {windows} windows")
                idle = all(s.get("buffered", 1) == 0 and s.get("pending", 1) == 0 and s.get("in_flight", 1) == 0
                           for s in st)
                if records >= rep.sent and windows == last_windows and windows > 0 and idle:
                    stable_since = stable_since or now
                    if now - stable_since >= 1.0:
                        break
                else:
                    stable_since = None
                last_windows = windows
            else:
                raise BenchError(f"capacity run ({mode}, {processes} process(es)) did not finish in time; logs in {run_dir}")
            # the drain ended when the window count last moved
            end = next(s for s in series if s[2] == last_windows)
            final = workers.stop()
        finally:
            workers.stop()
        wall, cpu_used, model_used = max(end[0], 1e-3), max(end[3], 1e-3), end[5]
        marks = [s.get("drain") or {} for s in final]
        if marks and all(d.get("first") and d.get("last") for d in marks):
            # each process's own marks, polled every 20 ms (see services.bench.worker.DrainMarks)
            wall = max(max(d["last"][0] for d in marks) - min(d["first"][0] for d in marks), 1e-3)
            cpu_used = max(sum(d["last"][1] - d["first"][1] for d in marks), 1e-3)
            model_used = sum(d["last"][2] - d["first"][2] for d in marks)
            split = _thread_split([(0.0, _merge_threads([{"thread_cpu_s": d["first"][3]} for d in marks])),
                                   (1.0, _merge_threads([{"thread_cpu_s": d["last"][3]} for d in marks]))])
        else:
            split = None
        row = {"run": "capacity", "mode": mode, "processes": processes, "assets": n, "windows": last_windows,
               "windows/s": last_windows / wall, "windows/cpu-s": last_windows / cpu_used,
               "cpu cores": cpu_used / wall, "rss MiB": max(s[4] for s in series),
               "plant s per wall s": n * secs / wall,
               "late": sum(s.get("late", 0) for s in final), "rejected": sum(s.get("rejected", 0) for s in final),
               "windows by process": [s.get("windows", 0) for s in final],
               "events": sum(s.get("events_opened", 0) for s in final),
               "cpu ms/window": 1000 * cpu_used / max(last_windows, 1),
               "model ms/window": 1000 * model_used / max(last_windows, 1), "cpu by thread": split}
        return RunResult("capacity", mode, processes, n, row, series)

    # real time: N assets at 1x
    def realtime(self, mode: str, assets: int, duration_s: float, processes: int = 1) -> RunResult:
        cfg = self.cfg
        self.step(f"real time {mode}, {assets} assets: generating records")
        items = self.bank.select(assets, duration_s)
        rate = len(items) / duration_s
        run_dir, ks, topics, url, producer = self._setup(f"rt-{mode}-{assets}a-{processes}p")
        workers = Workers(self._specs(ks, url, mode, processes), run_dir)
        series: list[list[float]] = []
        threads: list[tuple[float, dict]] = []  # (t, CPU seconds by thread name, summed over workers)
        try:
            self.step(f"real time {mode}, {assets} assets: waiting for the group")
            workers.wait_ready(cfg.partitions, cfg.start_timeout_s)
            cpu0, _ = workers.usage()
            origin = math.ceil(time.time()) + 0.5
            rep = Replayer(producer, topics, items, origin, speed=1, chunk_s=cfg.audio_chunk_s)
            rep.start()
            drain_s = 4.0  # lateness + idle timeout: the plant's last windows close after it stops
            while time.time() < origin + duration_s + drain_s:
                time.sleep(1.0)
                workers.check_alive()
                if rep.error:
                    raise rep.error
                st = workers.stats()
                records = sum(s.get("records", 0) for s in st)
                windows = sum(s.get("windows", 0) for s in st)
                cpu, rss = workers.usage()
                t = time.time() - origin
                lag = max(rep.sent - records, 0)
                model_cpu = sum(s.get("model_cpu_s", 0.0) for s in st)
                series.append([round(t, 2), lag, round(lag / rate, 3), windows, round(cpu - cpu0, 2), round(rss, 1),
                               round(model_cpu, 2)])
                threads.append((t, _merge_threads(st)))
                self.step(f"real time {mode}, {assets} assets: t={t:.0f}/{duration_s:.0f} s, lag {lag} records, "
                          f"{windows} windows")
            rep.stop_event.set()
            rep.join(30)
            final = workers.stop()
        finally:
            workers.stop()
            producer.close()
        warmup = min(cfg.warmup_s, duration_s / 3)
        # steady state: after the warm-up, until the plant stops (its last windows then close all
        # at once as every asset goes quiet: an artefact of the run ending, not of the load)
        lat = _latencies(final, origin + warmup, origin + duration_s)
        steady = [p for p in series if warmup <= p[0] <= duration_s]
        second_half = [p for p in steady if p[0] >= (warmup + duration_s) / 2] or steady
        max_lag_s = max((p[2] for p in second_half), default=float("nan"))
        win_rate = cpu_cores = cpu_ms = model_ms = float("nan")
        kept_pace = False
        if len(steady) >= 2:
            dt = steady[-1][0] - steady[0][0]
            win_rate = (steady[-1][3] - steady[0][3]) / dt
            cpu_cores = (steady[-1][4] - steady[0][4]) / dt
            # hop 1 s: one window per asset per second; 2 s of slack for the 1 s sampling
            kept_pace = steady[-1][3] - steady[0][3] >= assets * (dt - 2.0)
            done = max(steady[-1][3] - steady[0][3], 1)
            cpu_ms = 1000 * (steady[-1][4] - steady[0][4]) / done
            model_ms = 1000 * (steady[-1][6] - steady[0][6]) / done
        p95 = quantile(lat, 0.95)
        sustained = bool(lat) and p95 <= cfg.p95_budget_s and max_lag_s <= cfg.lag_budget_s and kept_pace
        split = _thread_split([x for x in threads if warmup <= x[0] <= duration_s])
        row = {"run": "real time", "mode": mode, "processes": processes, "assets": assets,
               "windows": series[-1][3] if series else 0, "windows/s": win_rate,
               "windows/cpu-s": win_rate / cpu_cores if cpu_cores and cpu_cores > 0 else None,
               "cpu cores": cpu_cores, "rss MiB": max((p[5] for p in series), default=None),
               "p50 s": quantile(lat, 0.5), "p95 s": p95, "p99 s": quantile(lat, 0.99), "max lag s": max_lag_s,
               "sustained": sustained, "cpu by thread": split, "cpu ms/window": cpu_ms, "model ms/window": model_ms,
               "events": sum(s.get("events_opened", 0) for s in final),
               "windows by process": [s.get("windows", 0) for s in final]}
        return RunResult("realtime", mode, processes, assets, row, series, sustained)


# ── the benchmark ──────────────────────────────────────────────────────────────────────────────

def _merge_threads(stats: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in stats:
        for name, cpu in (s.get("thread_cpu_s") or {}).items():
            key = name if name in ("consume", "fw-score") else "other"
            out[key] = out.get(key, 0.0) + cpu
    return out


def _thread_split(samples: list[tuple[float, dict]]) -> str | None:
    """'consume 40 %, score 55 %, other 5 %' of the monitor's CPU between two samples."""
    if len(samples) < 2:
        return None
    first, last = samples[0][1], samples[-1][1]
    delta = {k: last.get(k, 0.0) - first.get(k, 0.0) for k in last}
    total = sum(delta.values())
    if total <= 0:
        return None
    names = {"consume": "consume", "fw-score": "score", "other": "other"}
    return ", ".join(f"{names[k]} {100 * v / total:.0f} %" for k, v in sorted(delta.items(), key=lambda kv: -kv[1]))


def _latencies(stats: list[dict], t_from: float, t_to: float) -> list[float]:
    """Decision latencies of the windows committed between two wall-clock times, over all workers
    (each worker stamps how many latencies it had at each snapshot: `latency_marks`)."""
    out: list[float] = []
    for s in stats:
        lat, marks = s.get("latencies", []), s.get("latency_marks") or []
        first = next((n for t, n in marks if t >= t_from), len(lat))
        last = next((n for t, n in marks if t > t_to), len(lat))
        out += lat[first:last]
    return out


def _checkpoint(cfg: PipelineBenchConfig, workdir: Path) -> tuple[Path, str]:
    if cfg.random_init:
        from models import checkpoint
        from models.fusion import FusionConfig, FusionModel
        from services.training.recipes import product_config

        path = workdir / "model"
        version = checkpoint.save(path, FusionModel(FusionConfig.tiny() if cfg.tiny else product_config()), None,
                                  card="# random-init model for fusionwatch bench\n")
        return path, f"random-init {'tiny' if cfg.tiny else 'standard-recipe'} config ({version})"
    path = cfg.checkpoint
    if path is None:
        from services.settings import get_settings

        path = get_settings().checkpoint_dir
    if not (Path(path) / "config.json").exists():
        raise BenchError(f"no model checkpoint in {path}: train one with `fusionwatch train`, pass --checkpoint DIR, "
                         "or --random-init to time a random-init model of the standard recipe's config")
    return Path(path), f"checkpoint {path}"


def run_pipeline_bench(cfg: PipelineBenchConfig, progress=None) -> BenchResult:
    step = progress or (lambda msg: None)
    workdir = Path(tempfile.mkdtemp(prefix="fw-bench-"))
    result = BenchResult("pipeline", machine_info(cfg.device), {
        k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()})
    try:
        ckpt, desc = _checkpoint(cfg, workdir)
        result.config["model"] = desc
        if cfg.bootstrap:
            _run_all(cfg, cfg.bootstrap, ckpt, workdir, result, step)
        else:
            from services.broker.embedded import EmbeddedBroker, free_port

            step("starting the embedded broker")
            with EmbeddedBroker(port=free_port(), log_path=workdir / "tansu.log") as broker:
                _run_all(cfg, broker.bootstrap, ckpt, workdir, result, step)
    finally:
        if os.environ.get("FW_BENCH_KEEP"):
            result.notes.append(f"run directories kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result.finish()


def _run_all(cfg: PipelineBenchConfig, bootstrap: str, ckpt: Path, workdir: Path, result: BenchResult, step) -> None:
    h = Harness(cfg, bootstrap, ckpt, workdir, step)
    capacity: dict[tuple[str, int], list[RunResult]] = {}
    if cfg.backlog_s > 0:
        # interleaved (optimised, naive, optimised, ...): a shared or throttled machine's speed
        # drifts by tens of percent within a minute, and each pair of neighbours sees about the same
        for rep in range(max(cfg.capacity_repeats, 1)):
            for mode in cfg.modes:
                procs = (cfg.capacity_processes or sorted({1, cfg.processes})) if mode == "optimised" else [1]
                for p in procs:
                    r = h.capacity(mode, p)
                    capacity.setdefault((mode, p), []).append(r)
                    label = f"capacity {mode} {p}p" + (f" #{rep + 1}" if cfg.capacity_repeats > 1 else "")
                    if cfg.capacity_repeats > 1:
                        r.row["repeat"] = rep + 1
                    result.rows.append(r.row)
                    result.series[label] = {"columns": ["t_s", "backlog_records", "windows", "cpu_s", "rss_mb", "model_cpu_s"],
                                            "points": r.series}
        opt, naive = capacity.get(("optimised", 1)), capacity.get(("naive", 1))
        if opt and naive:
            for key, col in (("capacity_ratio_windows_per_s", "windows/s"), ("capacity_ratio_windows_per_cpu_s", "windows/cpu-s")):
                ratios = [o.row[col] / n.row[col] for o, n in zip(opt, naive)]
                result.summary[key] = statistics.median(ratios)
                if len(ratios) > 1:
                    result.summary[key + "_runs"] = [round(x, 2) for x in ratios]
        if opt and cfg.processes > 1 and ("optimised", cfg.processes) in capacity:
            many = capacity[("optimised", cfg.processes)]
            result.summary[f"scaleout_{cfg.processes}p_over_1p_windows_per_s"] = statistics.median(
                m.row["windows/s"] / o.row["windows/s"] for m, o in zip(many, opt))
    for n in cfg.assets:
        for mode in (cfg.modes if cfg.realtime_modes is None else cfg.realtime_modes):
            r = h.realtime(mode, n, cfg.duration_s, cfg.processes if mode == "optimised" else 1)
            result.rows.append(r.row)
            result.series[f"realtime {mode} {n}a"] = {
                "columns": ["t_s", "lag_records", "lag_s", "windows", "cpu_s", "rss_mb", "model_cpu_s"],
                "points": r.series}
    if cfg.search:
        best, tried = _search(h, cfg, result)
        result.summary["max_assets_sustained"] = best
        result.summary["search_trials"] = tried
    for r in result.rows:
        if r["run"] == "real time" and r["mode"] == "optimised":
            result.summary[f"realtime_{r['assets']}a_p95_s"] = r["p95 s"]
            result.summary[f"realtime_{r['assets']}a_sustained"] = r["sustained"]


def _search(h: Harness, cfg: PipelineBenchConfig, result: BenchResult) -> tuple[int, dict]:
    """Largest asset count sustained in real time by the optimised monitor: double, then bisect."""
    tried: dict[int, bool] = {}

    def ok(n: int) -> bool:
        if n not in tried:
            r = h.realtime("optimised", n, cfg.search_duration_s, cfg.processes)
            r.row["run"] = "search"
            result.rows.append(r.row)
            tried[n] = bool(r.sustained)
        return tried[n]

    lo, hi = 0, None
    n = max(min(cfg.assets), 1) if cfg.assets else 8
    while n <= cfg.search_max:
        if ok(n):
            lo, n = n, n * 2
        else:
            hi = n
            break
    if hi is None:
        return lo, tried
    while hi - lo > max(2, lo // 8):
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo, tried
