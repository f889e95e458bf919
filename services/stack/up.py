"""`fusionwatch up`: the whole system on one box, for a first look and for demos.

Embedded broker (unless FW_KAFKA_BOOTSTRAP points at a cluster), SQLite under ./var (unless
FW_DATABASE_URL), a model (trained on first start when none exists), then — each in its own
thread — the simulated plant (or, with `--sources`, one ingest per real source: a pilot), the
monitor, the outbox relay, the summarizer, the scheduler, the
notifier (when notification channels are configured) and the review API. Events are printed
as they open and close. Ctrl-C / SIGTERM stops everything in
order: producers first, then consumers (which commit), then the broker.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from rich.console import Console

from services import db
from services.kafka import Topics, ensure_topics
from services.lifecycle import install_stop_handlers
from services.profiles import get_profile
from services.settings import Settings
from services.stack.sources import SourcesFile, check_sources, source_runs

log = logging.getLogger(__name__)
console = Console()


@dataclass
class _Part:
    name: str
    target: Callable[[threading.Event], None]
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> None:
        def body():
            try:
                self.target(self.stop)
            except BaseException as e:  # noqa: BLE001 - reported by the supervisor loop
                self.error = e
                log.exception("%s stopped with an error", self.name)

        self.thread = threading.Thread(target=body, name=f"fw-{self.name}", daemon=True)
        self.thread.start()

    def halt(self, timeout_s: float = 30.0) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(timeout_s)


class LivePrinter:
    """Prints events as they open and close, and the simulator's injected faults (ground truth) as
    they start, so a newcomer can tell a caught fault from a false alarm. An open event's updates
    print only when its peak rises."""

    STYLE = {"opened": "bold red", "updated": "yellow", "closed": "green"}

    def __init__(self) -> None:
        self._peaks: dict[str, float] = {}
        self._lock = threading.Lock()  # the monitor and the simulator call from their own threads

    def change(self, change) -> None:
        d = change.data
        with self._lock:
            if change.change == "updated" and d.peak_score <= self._peaks.get(d.event_id, float("-inf")):
                return
            self._peaks[d.event_id] = d.peak_score
            if change.change == "closed":
                self._peaks.pop(d.event_id, None)
        when = d.start_time.strftime("%H:%M:%S")
        shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(d.attribution.modality_shares.items(), key=lambda kv: -kv[1]))
        notes = "  [dim](learning its baseline: guard threshold)[/]" if getattr(d, "learning", False) else ""
        if getattr(d, "closed_by", None) == "stream_stopped":
            notes += "  [dim](the station stopped sending)[/]"
        console.print(f"[{self.STYLE[change.change]}]{change.change.upper():7}[/] {d.asset:8} {d.kind:28} {d.severity:8} "
                      f"peak {d.peak_score:6.2f} / threshold {d.threshold:.2f}  since {when}  ({shares}){notes}")

    @staticmethod
    def fault(row: dict) -> None:
        if "kind" not in row or "asset" not in row:  # call-centre ground truth (calls) is not printed
            return
        start, end = (time.strftime("%H:%M:%S", time.gmtime(row[k])) for k in ("start", "end"))
        console.print(f"[magenta]FAULT  [/] {row['asset']:8} {row['kind']:28} injected {start}–{end} UTC "
                      f"({', '.join(row.get('modalities', []))}) [dim]ground truth[/]")


def up(settings: Settings, duration_s: float | None = None, assets: int = 4, faults: str = "demo",
       speed: float = 1.0, with_api: bool = True, stop: threading.Event | None = None,
       train_first: bool = False, sim_start: float | None = None, sources: SourcesFile | None = None) -> None:
    """With `sources` (a pilot on real sources) each source's ingest runs instead of the simulator."""
    if sources is not None:
        check_sources(sources)  # local inputs first: a missing file fails before the broker starts
    stop = stop or install_stop_handlers()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    supervisor = None
    if settings.kafka.bootstrap:
        bootstrap = settings.kafka.bootstrap
        topics = ensure_topics(settings.kafka, bootstrap)
        console.print(f"Kafka: [bold]{bootstrap}[/] (external)")
    else:
        from services.broker.supervisor import BrokerSupervisor

        supervisor = BrokerSupervisor(settings)
        topics = supervisor.start()
        bootstrap = supervisor.bootstrap
        console.print(f"Kafka: embedded broker at [bold]{bootstrap}[/] (memory only; topics {', '.join(topics.all())})")
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap": bootstrap})})

    db.upgrade(settings.database.url)
    console.print(f"Database: [bold]{_safe_url(settings.database.url)}[/] (migrated)")
    _ensure_model(settings, train_first)

    parts = _parts(settings, bootstrap, topics, assets, faults, speed, duration_s, with_api, sim_start, sources)
    for p in parts:
        p.start()
    console.print(f"Metrics: http://{settings.metrics.host}:{settings.metrics.base_port}/metrics (monitor)")
    clock = time.strftime("%H:%M UTC", time.gmtime(sim_start if sim_start is not None else time.time()))
    if sources is not None:
        console.print(f"[dim]up in {time.monotonic() - started:.0f} s — ingesting {sources.count()} sources of "
                      f"{len(sources.assets)} assets ({', '.join(sources.assets)}); events print below. Ctrl-C stops.[/]")
    else:
        console.print(f"[dim]up in {time.monotonic() - started:.0f} s — simulating {assets} assets from {clock} with "
                      f"the '{faults}' fault schedule; events print below. Ctrl-C stops.[/]")
    if get_profile(settings.profile).window_policy(settings.monitor).reports_baseline:
        console.print("[dim]Each station first learns its own normal from its first windows (about 2 minutes; "
                      "meanwhile only a guard threshold opens an event), then watches"
                      + (" — the demo's first fault comes after that." if faults == "demo" and sources is None
                         else ".") + "[/]")
    try:
        deadline = time.monotonic() + duration_s if duration_s else None
        while not stop.wait(2.0):
            failed = [p for p in parts if p.error is not None]
            if failed:
                raise failed[0].error  # type: ignore[misc]
            if supervisor:
                supervisor.check()
            if deadline and time.monotonic() > deadline:
                break
    finally:
        console.print("stopping…")
        for p in parts:  # producers first, the API last
            p.halt()
        if supervisor:
            supervisor.stop()
        console.print("stopped cleanly")


def _parts(settings: Settings, bootstrap: str, topics: Topics, assets: int, faults: str, speed: float,
           duration_s: float | None, with_api: bool, sim_start: float | None = None,
           sources: SourcesFile | None = None) -> list[_Part]:
    from services.monitor.runner import run_monitor
    from services.simulator.run import run_simulation

    gt = settings.var_dir / "ground_truth.jsonl"
    printer = LivePrinter()
    if sources is not None:  # a pilot: one ingest per real source instead of the simulated plant
        producers = [_Part(r.name, r.target) for r in source_runs(sources, settings, bootstrap)]
    else:
        producers = [_Part("simulator", lambda stop: run_simulation(
            settings, bootstrap, profile=settings.profile, assets=assets, duration_s=duration_s, speed=speed,
            faults=faults, seed=0, ground_truth_path=gt, stop_event=stop, on_ground_truth=printer.fault,
            start_time=sim_start))]
    parts = [
        *producers,
        _Part("monitor", lambda stop: run_monitor(settings, bootstrap=bootstrap, stop=stop, on_change=printer.change)),
    ]
    try:
        from services.summarizer.service import SummarizerService

        engine = db.make_engine(settings.database.url)
        parts.append(_Part("summarizer", lambda stop: SummarizerService(
            settings, bootstrap, db.session_factory(engine), topics).run(stop)))
    except ImportError as e:
        log.warning("summarizer unavailable: %s", e)
    try:
        from services.scheduler.service import run_scheduler

        parts.append(_Part("scheduler", lambda stop: run_scheduler(settings, stop)))
    except ImportError as e:
        log.warning("scheduler unavailable: %s", e)
    if settings.notify.channels:  # alert delivery only where someone configured a receiver
        from services.notify.service import NotifierService

        notify_engine = db.make_engine(settings.database.url)
        parts.append(_Part("notify", lambda stop: NotifierService(
            settings, bootstrap, db.session_factory(notify_engine), topics).run(stop)))
    if with_api:
        parts.append(_Part("api", lambda stop: _serve_api(settings, stop)))
    return parts


def _serve_api(settings: Settings, stop: threading.Event) -> None:
    import uvicorn

    from services.api.app import create_app, print_review_link

    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.api.host, port=settings.api.port, log_level="warning"))
    server.install_signal_handlers = lambda: None  # the main thread owns signals
    print_review_link(app, console)
    watcher = threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)), daemon=True)
    watcher.start()
    server.run()


def _ensure_model(settings: Settings, train_first: bool = False) -> None:
    ckpt = settings.checkpoint_dir
    if (ckpt / "config.json").exists():
        console.print(f"Model: [bold]{ckpt}[/]")
        return
    profile = get_profile(settings.profile)
    shipped = profile.shipped_checkpoint
    if shipped is not None and not train_first and (shipped / "config.json").exists():
        shutil.copytree(shipped, ckpt, dirs_exist_ok=True)
        console.print(f"Model: the shipped standard-recipe checkpoint → {ckpt} (models/pretrained/README.md; "
                      "its evaluation: docs/model.md). Train your own with `fusionwatch train`.")
        return
    console.print(f"Model: none in {ckpt} yet — training a small one on simulated normal operation "
                  "(first start only; a few minutes on 2 CPU cores)…")
    t0 = time.monotonic()
    profile.train_first_model(ckpt, progress=True)
    console.print(f"Model: trained in {time.monotonic() - t0:.0f} s → {ckpt}")


def _safe_url(url: str) -> str:
    from services.db import safe_url

    return safe_url(url)
