"""Rough read latency of the review API on a large events table (in-process, SQLite).

Not in the data path: a measurement to run by hand,
`python -m services.api.bench [events]` (default 20 000 events; median of 30 requests each).
It fills a throw-away SQLite file in a temporary folder and prints one line per endpoint.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path


def main(n_events: int = 20_000, repeats: int = 30) -> None:
    from fastapi.testclient import TestClient

    from schemas.events import event_id
    from schemas.tables import Event
    from services.api.app import create_app
    from services.db import make_engine, session_factory, session_scope, upgrade
    from services.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="fw-api-bench-"))
    url = f"sqlite:///{tmp / 'bench.db'}"
    upgrade(url)
    rng = random.Random(0)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = []
    for i in range(n_events):
        asset, start = f"L{rng.randint(1, 4)}-S{rng.randint(1, 8)}", t0 + timedelta(seconds=i * 97)
        peak = 1 + rng.random() * 3
        rows.append(dict(
            id=event_id(asset, start), asset_id=asset, start_time=start, end_time=start + timedelta(seconds=30),
            status="closed", kind="anomaly", severity=rng.choice(["low", "medium", "high", "critical"]),
            peak_score=peak, mean_score=peak * 0.9, threshold=1.0, model_version="m", windows=30,
            attribution={"modality_shares": {"audio": 0.5, "frames": 0.3, "logs": 0.2}},
            scores=[[(start + timedelta(seconds=k)).isoformat(), 1.1] for k in range(30)],
            serials=[f"SN-{rng.randint(1, 50_000)}"], log_lines=["line"] * 5, evidence={},
            verdict=rng.choice([None, None, "real", "false_alarm"])))
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as s:
        s.execute(Event.__table__.insert(), rows)
    engine.dispose()
    app = create_app(Settings(database={"url": url}, media_root=tmp / "media", api={"token": "bench"}))
    paths = ["/api/events?limit=50", "/api/events?verdict=none&severity=high&line=L2&limit=50",
             "/api/events?order=score&limit=200", f"/api/events/{rows[100]['id']}", "/api/search?serial=SN-4242",
             "/api/search?serial=SN-424&prefix=true", "/api/stats", "/api/thresholds"]
    print(f"{n_events} events in SQLite; median of {repeats} requests")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for path in paths:
            client.get(path)
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                assert client.get(path).status_code == 200
                times.append((time.perf_counter() - t) * 1000)
            print(f"{statistics.median(times):8.1f} ms  {path}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
