"""Assemble and run a monitor process: database, model, metrics endpoint, monitor, outbox relay."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from schemas.errors import ConfigError
from services import db
from services.kafka import Topics, make_producer, wait_for_broker
from services.lifecycle import install_stop_handlers
from services.monitor.outbox import OutboxRelay
from services.monitor.service import Monitor
from services.observability import metrics as m
from services.observability.server import CheckResult, database_reachable, kafka_reachable, serve_metrics
from services.settings import Settings

log = logging.getLogger(__name__)


def check_checkpoint(checkpoint: Path) -> None:
    if not (checkpoint / "config.json").exists():
        raise ConfigError(f"no model checkpoint in {checkpoint}; train one with `fusionwatch train` "
                          "(or run `fusionwatch up`, which installs the shipped one on first start)")


def load_scorer(checkpoint: Path, device: str = "auto"):
    check_checkpoint(checkpoint)
    from models.scorer import AnomalyScorer

    scorer = AnomalyScorer.load(checkpoint, device=device)
    m.set_model_info(scorer.version, getattr(scorer, "device", device))
    return scorer


def _configure_asset_labels(settings: Settings, engine) -> None:
    """Known assets keep their metric labels (and get zero series, so the no-data alert sees an
    asset that never sends after a restart); unknown ones are admitted up to the cap."""
    from sqlalchemy import select

    from schemas.tables import Asset

    with engine.connect() as conn:
        known = [row[0] for row in conn.execute(select(Asset.id))]
    m.configure_assets(known, cap=settings.metrics.max_asset_labels)


def set_torch_threads(requested: int | None = None) -> int:
    """Intra-op threads for the score stage. None: all cores but one, left to the consume thread.
    With as many threads as cores, each op waits for the thread that lost its core to the consume
    thread or a neighbour (`fusionwatch bench decode --threads 1` against the default shows the
    cost of log-mel and MiniLM calls on a loaded machine; docs/performance.md)."""
    import os

    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    n = requested or max(1, cores - 1)
    torch.set_num_threads(n)
    return n


def run_monitor(settings: Settings, checkpoint: Path | None = None, group: str | None = None,
                device: str | None = None, bootstrap: str | None = None, stop: threading.Event | None = None,
                on_change=None, serve: bool = True) -> None:
    bootstrap = bootstrap or settings.kafka.bootstrap
    if not bootstrap:
        raise ConfigError("no Kafka broker configured: set FW_KAFKA_BOOTSTRAP=host:port, "
                          "or run `fusionwatch up` to start the embedded broker with everything else")
    # each dependency with a bounded wait and one sentence if it fails (the CLI checked the checkpoint)
    checkpoint = checkpoint or settings.checkpoint_dir
    wait_for_broker(bootstrap, settings.kafka.connect_timeout_s)
    stop = stop or install_stop_handlers()
    engine = db.make_engine(settings.database.url)
    db.wait_for_database(engine, settings.database.connect_timeout_s, settings.database.url)
    db.upgrade(settings.database.url)
    topics = Topics.from_settings(settings.kafka)
    _configure_asset_labels(settings, engine)
    set_torch_threads(settings.monitor.torch_threads)
    scorer = load_scorer(checkpoint, device or settings.monitor.device)
    calibrated_for = getattr(getattr(scorer, "calibration", None), "open_after", settings.monitor.open_after)
    if calibrated_for != settings.monitor.open_after:
        log.warning("the checkpoint's threshold was calibrated for events opening after %d windows, the monitor "
                    "opens after %d (monitor.open_after): its false-event budget does not hold as stated",
                    calibrated_for, settings.monitor.open_after)
    monitor = Monitor(settings, bootstrap, engine, scorer, topics, group_id=group, on_change=on_change)
    server = None
    if serve:
        server = serve_metrics(settings, "monitor", {
            "kafka": kafka_reachable(settings.kafka, bootstrap, topics.inputs),
            "database": database_reachable(engine),
            "assigned": lambda: CheckResult(monitor.ready.is_set(), "waiting for partitions"),
            "commits": lambda: CheckResult(*monitor.commit_health()),
        })
    relay = OutboxRelay(engine, make_producer(settings.kafka, bootstrap, idempotent=False), topics.events)
    relay_thread = threading.Thread(target=relay.run, args=(stop,), name="fw-outbox", daemon=True)
    relay_thread.start()
    log.info("monitor %s: model %s, group %s", bootstrap, scorer.version, monitor.group_id)
    try:
        monitor.run(stop)
    finally:
        stop.set()
        relay_thread.join(10)
        if server:
            server.stop()
        engine.dispose()
