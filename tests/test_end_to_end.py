"""End to end with the learned model's code path: simulated plant with injected faults → embedded
broker → monitor (AnomalyScorer from a real checkpoint) → SQL, on SQLite and PostgreSQL. Prints
recall and false events against the simulator's ground truth.

By default the checkpoint is the `tiny` recipe (trained in seconds; it proves the plumbing, not
the quality), so the quality assertions apply only to a real model: set FW_TEST_MODEL_DIR to a
checkpoint (e.g. `fusionwatch train --recipe quick --out var/model`) to check recall and false events.
The model's quality figures come from `fusionwatch eval` (docs/model.md).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from schemas.tables import ConsumerOffset, Event
from services import db
from services.settings import Settings
from services.simulator.faults import Fault
from services.simulator.plant import Plant
from tests.support.streams import produce

ASSETS = ["L1-S1", "L1-S2", "L1-S3", "L1-S4"]
DURATION_S = 240.0
# kinds the quick model separates well (see docs/model.md for every kind's figures); 20-30 s each
FAULTS = [("L1-S1", "misaligned_part", 40, 70), ("L1-S2", "cavitation", 60, 85), ("L1-S3", "log_rate_anomaly", 100, 130),
          ("L1-S4", "camera_occlusion", 150, 175), ("L1-S1", "estop_but_moving", 170, 200)]


@pytest.fixture(scope="session")
def quick_model(tmp_path_factory) -> Path:
    reuse = os.environ.get("FW_TEST_MODEL_DIR")
    if reuse:
        if not (Path(reuse) / "config.json").exists():
            pytest.fail(f"FW_TEST_MODEL_DIR={reuse} holds no checkpoint")
        return Path(reuse)
    from services.training.recipes import RECIPES, run_recipe

    root = tmp_path_factory.mktemp("tiny-model")
    run_recipe(RECIPES["tiny"], root / "ckpt", "cross", cache_dir=root / "datasets", device="cpu")
    return root / "ckpt"


def _overlaps(a0: float, a1: float, b0: float, b1: float, margin: float = 3.0) -> bool:
    return a0 < b1 + margin and b0 < a1 + margin


@pytest.mark.slow
def test_plant_faults_become_events(broker, make_topics, unique_group, db_url, quick_model):
    from models.scorer import AnomalyScorer
    from services.kafka import make_producer
    from services.monitor.service import Monitor

    ks, topics = make_topics(partitions=4)
    start = round(time.time() - DURATION_S - 60, 3)
    faults = [Fault(a, k, start + s, start + e) for a, k, s, e in FAULTS]
    plant = Plant(assets=ASSETS, seed=4242, start_time=start, faults=faults)
    records = list(plant.records(DURATION_S))
    producer = make_producer(ks, broker.bootstrap)
    produce(producer, topics, records)
    producer.close()

    engine = db.make_engine(db_url)
    scorer = AnomalyScorer.load(quick_model, device="cpu")
    monitor = Monitor(Settings(kafka=ks), broker.bootstrap, engine, scorer, topics, group_id=unique_group())
    stop = threading.Event()
    t = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 900
    while t.is_alive() and monitor.stats.records < len(records) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3.0)  # idle timeout flushes the last windows
    stop.set()
    t.join(60)
    assert monitor.stats.records == len(records)

    with db.session_factory(engine)() as s:
        events = s.scalars(select(Event).order_by(Event.start_time)).all()
        offsets = s.scalars(select(ConsumerOffset)).all()
    engine.dispose()
    assert offsets, "offsets were committed with the events"

    found = [f for f in faults if any(e.asset_id == f.asset and _overlaps(e.start_time.timestamp(),
             (e.end_time or e.start_time).timestamp(), f.start, f.end) for e in events)]
    false = [e for e in events if not any(e.asset_id == f.asset and _overlaps(
        e.start_time.timestamp(), (e.end_time or e.start_time).timestamp(), f.start, f.end) for f in faults)]
    recall = len(found) / len(faults)
    asset_hours = len(ASSETS) * DURATION_S / 3600
    print(f"\nend to end ({db_url.split(':')[0]}): {len(events)} events, recall {recall:.2f} "
          f"({', '.join(f.kind for f in found)}), false events {len(false)} "
          f"({len(false) / asset_hours:.1f} per asset-hour over {asset_hours:.2f} asset-hours)")
    for e in false:
        end = (e.end_time or e.start_time).timestamp() - start
        print(f"  false event: {e.asset_id} at +{e.start_time.timestamp() - start:.0f}..+{end:.0f} s, peak {e.peak_score:.2f} "
              f"(threshold {e.threshold:.2f}), shares {e.attribution.get('modality_shares')}")
    for e in events:  # every event carries what the summarizer and reviewers need
        assert e.model_version == scorer.version and e.threshold > 0 and e.peak_score >= e.threshold
        assert e.evidence.get("frames") and e.scores and e.attribution.get("modality_shares")
    assert monitor.stats.windows >= len(ASSETS) * (DURATION_S - 10)  # every asset's windows were scored
    if os.environ.get("FW_TEST_MODEL_DIR"):  # quality bar only for a real (not tiny) model
        assert recall >= 0.6
        assert len(false) / asset_hours <= 1.0
