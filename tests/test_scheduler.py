"""Scheduler on real parts: two APScheduler instances on one database make one digest; retention
deletes what is old and keeps what is not; the recalibration hook runs or is skipped."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from schemas.tables import Digest, Event, JobRun, Summary
from services.db import make_engine, session_factory, session_scope
from services.scheduler.digest import build_digest
from services.scheduler.jobs import JobContext, run_now
from services.scheduler.retention import apply_retention
from services.scheduler.service import start_scheduler
from services.scheduler.shifts import Shift, last_completed_shift, parse_shifts, shift_ending_at
from services.summarizer import facts as facts_mod
from services.summarizer.evidence import EvidenceReader
from services.summarizer.pipeline import Summarizer
from services.summarizer.render import Layout
from services.summarizer.tts import Speaker
from tests.test_summarizer_support import insert_event, make_settings, produce_scenario, read_mp4


def _norm(text: str) -> str:
    return " ".join(text.split())


# ── shifts ─────────────────────────────────────────────────────────────────────────────────

def test_shift_boundaries_across_midnight_and_dst():
    starts = parse_shifts(["22:00", "06:00", "14:00"])
    assert starts == [dtime(6), dtime(14), dtime(22)]
    night = shift_ending_at(datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc), starts, "UTC")
    assert night.start == datetime(2026, 11, 25, 22, 0, tzinfo=timezone.utc)
    now = datetime(2026, 11, 26, 15, 30, tzinfo=timezone.utc)
    assert last_completed_shift(now, starts, "UTC").end == datetime(2026, 11, 26, 14, 0, tzinfo=timezone.utc)
    # the night the clocks go back in Berlin (2026-10-25) is nine hours long
    berlin = shift_ending_at(datetime(2026, 10, 25, 5, 0, tzinfo=timezone.utc), starts, "Europe/Berlin")
    utc_len = berlin.end.astimezone(timezone.utc) - berlin.start.astimezone(timezone.utc)  # same-zone '-' is wall time
    assert utc_len == timedelta(hours=9)


def test_bad_shift_config_says_what_to_do():
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="06:00"):
        parse_shifts(["6 am"])


# ── digests ────────────────────────────────────────────────────────────────────────────────

def _summarized_events(broker, make_topics, url, tmp_path, start):
    """Three events in the shift: two with summary clips rendered from real evidence, one without."""
    ks, topics = make_topics(4)
    settings = make_settings(tmp_path, ks, url)
    factory = session_factory(make_engine(url))
    speaker = Speaker()
    layout = Layout(640, 360)
    ids = {}
    with EvidenceReader(ks, broker.bootstrap, layout.box_size(layout.camera), speaker.sample_rate, 5.0) as reader:
        summarizer = Summarizer(settings, reader, speaker)
        for name, asset, partition, severity, offset in (("A", "L1-S1", 0, "critical", 0), ("C", "L2-S3", 1, "low", 60)):
            sc = produce_scenario(broker.bootstrap, ks, topics, asset=asset, partition=partition, severity=severity,
                                  start=start + timedelta(seconds=offset), duration_s=3.0, before_s=2.0, after_s=2.0,
                                  fps=5.0, other_asset=None)
            insert_event(factory, sc.data)
            with factory() as s:
                found = facts_mod.load(s, sc.event_id)
            assert summarizer.summarize(found, factory).status == "ready"
            ids[name] = sc.event_id
    b = produce_scenario(broker.bootstrap, ks, topics, asset="L5-S1", partition=2, severity="high",
                         start=start + timedelta(seconds=120), duration_s=2.0, before_s=1.0, after_s=1.0, fps=2.0,
                         other_asset=None, kind="unseen_error_code")
    insert_event(factory, b.data)  # no summary: the digest shows a card and speaks its narration
    ids["B"] = b.event_id
    return settings, factory, ids


@pytest.mark.slow
def test_two_schedulers_make_one_digest(broker, make_topics, db_url, tmp_path):
    now = datetime.now(timezone.utc)
    settings, factory, ids = _summarized_events(broker, make_topics, db_url, tmp_path,
                                                (now - timedelta(minutes=10)).replace(microsecond=0))
    boundary = (datetime.now(timezone.utc) + timedelta(seconds=4)).replace(microsecond=0)
    shifts = [(boundary - timedelta(hours=h)).strftime("%H:%M:%S") for h in (0, 8, 16)]
    settings = settings.model_copy(update={"scheduler": settings.scheduler.model_copy(
        update={"shifts": shifts, "digest_top_events": 2})})

    engines = [make_engine(db_url), make_engine(db_url)]
    schedulers = [start_scheduler(settings, e, session_factory(e), name=f"sched-{n}") for n, e in zip("AB", engines)]
    try:
        deadline = time.time() + 120
        digest = None
        while time.time() < deadline:
            with factory() as s:
                digest = s.scalars(select(Digest)).first()
                if digest is not None and digest.status in ("ready", "failed"):
                    break
            time.sleep(0.2)
        time.sleep(1.5)  # the slower scheduler has had its chance to fire too
    finally:
        for sched in schedulers:
            sched.shutdown(wait=True)
        for e in engines:
            e.dispose()

    with factory() as s:
        digests = s.scalars(select(Digest)).all()
        runs = s.scalars(select(JobRun).where(JobRun.job == "shift_digest")).all()
        summaries = {e: s.get(Summary, e) for e in ids.values()}
    assert len(digests) == 1, "one digest per shift, whichever scheduler fired"
    digest = digests[0]
    assert digest.status == "ready"
    assert digest.shift_end == boundary and digest.shift_start == boundary - timedelta(hours=8)
    assert digest.events == [ids["A"], ids["B"]], "top two by severity: critical, then high"
    assert len(runs) == 1 and runs[0].outcome == "ok" and runs[0].owner in ("sched-A", "sched-B")
    assert runs[0].scheduled_for == boundary

    folder = settings.media_dir / "digests"
    names = sorted(p.suffix for p in folder.iterdir())
    assert names == [".md", ".mp4", ".vtt"], names  # one video, one report (and its subtitles), nothing half-written

    mp4 = read_mp4(settings.media_dir / digest.video_path)
    assert ("video", "h264") in mp4["streams"] and ("audio", "aac") in mp4["streams"]
    assert ("subtitle", "mov_text") in mp4["streams"] and mp4["faststart"]
    spoken = _norm(" ".join(t for _, _, t in mp4["cues"]))
    assert spoken.startswith("Shift digest,")
    assert "2: L5-S1 at" in spoken and "1: L1-S1 at" in spoken
    assert _norm(summaries[ids["A"]].narration) in spoken, "event A's own narration plays in the digest"
    assert "High-severity unseen error code suspected on L5-S1" in spoken, "event B is narrated on its card"
    clip_a = read_mp4(settings.media_dir / summaries[ids["A"]].video_path)
    assert mp4["duration"] > clip_a["duration"] + 5.0
    sr = mp4["sample_rate"]
    audio = mp4["audio"]
    voiced = np.concatenate([audio[int(a * sr): int(b * sr)] for a, b, _ in mp4["cues"]])
    assert float(np.sqrt(np.mean(voiced ** 2))) > 0.05

    report = (settings.media_dir / digest.report_path).read_text()
    assert "# Shift digest" in report and "## Top events" in report
    for asset in ("L1-S1", "L5-S1", "L2-S3"):
        assert asset in report  # the third one in the list of all events
    assert summaries[ids["A"]].video_path in report


def test_digest_claim_is_once_per_shift_and_an_empty_shift_still_reports(db_url, tmp_path):
    from services.settings import DatabaseSettings, Settings

    settings = Settings(var_dir=tmp_path / "var", media_root=tmp_path / "media", database=DatabaseSettings(url=db_url))
    factory = session_factory(make_engine(db_url))
    end = datetime(2026, 11, 26, 14, 0, tzinfo=timezone.utc)
    first = run_now(JobContext(settings, factory, "one"), "digest", end)
    second = run_now(JobContext(settings, factory, "two"), "digest", end)
    assert first is not None and second is None
    assert first["events"] == []
    report = (settings.media_dir / first["report"]).read_text()
    assert "No anomaly events this shift." in report
    mp4 = read_mp4(settings.media_dir / first["video"])
    assert "No anomaly events this shift." in " ".join(t for _, _, t in mp4["cues"])
    # a failed digest can be claimed again; a ready one cannot
    shift = Shift(end - timedelta(hours=8), end)
    assert build_digest(factory, settings, shift) is None
    with session_scope(factory) as s:
        s.scalars(select(Digest)).one().status = "failed"
    assert build_digest(factory, settings, shift) is not None


# ── retention ──────────────────────────────────────────────────────────────────────────────

def _event(asset: str, start: datetime) -> Event:
    return Event(id=f"ev-{asset}-{start:%j%H%M}", asset_id=asset, start_time=start, end_time=start + timedelta(seconds=5),
                 status="closed", kind="anomaly", severity="low", peak_score=1.0, mean_score=0.8, threshold=0.5,
                 model_version="m", windows=5)


def test_retention_deletes_old_media_and_rows_and_keeps_the_rest(sqlite_url, tmp_path):
    from services.settings import DatabaseSettings, Settings

    settings = Settings(var_dir=tmp_path / "var", media_root=tmp_path / "media",
                        database=DatabaseSettings(url=sqlite_url, retention_days=90),
                        scheduler={"media_retention_days": 30})
    factory = session_factory(make_engine(sqlite_url))
    root = settings.media_dir
    (root / "summaries").mkdir(parents=True)
    now = datetime.now(timezone.utc)

    def files(stem: str) -> list[str]:
        rels = [f"summaries/{stem}.mp4", f"summaries/{stem}.vtt", f"summaries/{stem}.jpg"]
        for rel in rels:
            (root / rel).write_bytes(b"x" * 100)
        return rels

    ancient, old_media, fresh = _event("A1", now - timedelta(days=120)), _event("A2", now - timedelta(days=40)), \
        _event("A3", now - timedelta(days=1))
    with session_scope(factory) as s:
        s.add_all([ancient, old_media, fresh])
        s.flush()
        for event, stem, rendered in ((ancient, "a" * 32, now - timedelta(days=120)),
                                      (old_media, "b" * 32, now - timedelta(days=40)), (fresh, "c" * 32, now)):
            v, t, j = files(stem)
            s.add(Summary(event_id=event.id, status="ready", video_path=v, subtitles_path=t, thumbnail_path=j,
                          narration=f"narration of {event.asset_id}", rendered_at=rendered, missing=[]))
    orphan = root / "summaries" / ("d" * 32 + ".mp4")
    orphan.write_bytes(b"orphan")
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    in_progress = root / "summaries" / f".{'e' * 32}.mp4.1234abcd.part"
    in_progress.write_bytes(b"rendering")

    result = apply_retention(factory, settings, now)

    assert result.events_deleted == 1 and result.summaries_expired == 1 and result.orphans_deleted == 1
    with factory() as s:
        assert s.get(Event, ancient.id) is None and s.get(Summary, ancient.id) is None  # cascade
        expired = s.get(Summary, old_media.id)
        assert expired.video_path is None and expired.narration == "narration of A2"
        assert expired.missing[-1]["reason"] == "expired"
        kept = s.get(Summary, fresh.id)
    left = sorted(p.name for p in (root / "summaries").iterdir())
    assert left == sorted([Path(kept.video_path).name, Path(kept.subtitles_path).name,
                           Path(kept.thumbnail_path).name, in_progress.name])
    assert result.files_deleted == 6 and result.bytes_freed == 600


# ── recalibration hook ─────────────────────────────────────────────────────────────────────

def test_recalibration_job_calls_the_hook_once(sqlite_url, tmp_path):
    from services.settings import DatabaseSettings, Settings

    settings = Settings(var_dir=tmp_path / "var", database=DatabaseSettings(url=sqlite_url))
    factory = session_factory(make_engine(sqlite_url))
    at = datetime(2026, 11, 26, 5, 45, tzinfo=timezone.utc)
    changes = run_now(JobContext(settings, factory, "one"), "recalibration", at)
    assert changes == 0  # no verdicts yet: nothing to recalibrate, but the hook ran
    assert run_now(JobContext(settings, factory, "two"), "recalibration", at) is None
    with factory() as s:
        runs = s.scalars(select(JobRun).where(JobRun.job == "recalibration")).all()
    assert [(r.owner, r.outcome) for r in runs] == [("one", "ok")]


def test_recalibration_job_is_skipped_without_the_hook(sqlite_url, tmp_path, monkeypatch, caplog):
    from services.settings import DatabaseSettings, Settings

    monkeypatch.setitem(sys.modules, "services.api.recalibration", None)  # import now raises ImportError
    settings = Settings(var_dir=tmp_path / "var", database=DatabaseSettings(url=sqlite_url))
    factory = session_factory(make_engine(sqlite_url))
    with caplog.at_level("INFO"):
        assert run_now(JobContext(settings, factory, "one"), "recalibration") is None
    assert "recalibration skipped" in caplog.text
    with factory() as s:
        assert s.scalars(select(JobRun)).all() == []


def test_scheduler_cli_help():
    from typer.testing import CliRunner

    from services.cli import app

    result = CliRunner().invoke(app, ["scheduler", "--help"])
    assert result.exit_code == 0 and "--run-now" in result.output
    result = CliRunner().invoke(app, ["summarize", "--help"])
    assert result.exit_code == 0 and "--event" in result.output




# ── no pickles from SQL (issue 23) ──────────────────────────────────────────────────────────

class _Touch:
    """Unpickling this creates a file: proof that something loaded the pickle."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_the_scheduler_never_unpickles_job_state_from_sql(db_url, tmp_path):
    """APScheduler's SQLAlchemyJobStore unpickled `apscheduler_jobs.job_state` on start: whoever could
    write that table ran code in the scheduler. A hostile row planted there is now never read."""
    import pickle

    from sqlalchemy import Column, Float, LargeBinary, MetaData, Table, Unicode

    from services.settings import Settings

    proof = tmp_path / "unpickled"
    engine = make_engine(db_url)
    table = Table("apscheduler_jobs", MetaData(), Column("id", Unicode(191), primary_key=True),
                  Column("next_run_time", Float(25), index=True), Column("job_state", LargeBinary, nullable=False))
    table.create(engine, checkfirst=True)
    with engine.begin() as conn:
        for job_id in ("retention", "recalibration", "planted"):
            conn.execute(table.insert().values(id=job_id, next_run_time=time.time() - 5,
                                               job_state=pickle.dumps(_Touch(str(proof)))))
    settings = Settings(database={"url": db_url}, var_dir=tmp_path)
    sched = start_scheduler(settings, engine, session_factory(engine), name="pickle-test")
    try:
        time.sleep(0.5)
        assert {j.id for j in sched.get_jobs()} >= {"retention", "recalibration"}
        assert "planted" not in {j.id for j in sched.get_jobs()}
    finally:
        sched.shutdown(wait=True)
        engine.dispose()
    assert not proof.exists(), "the scheduler unpickled job state read from SQL"


def test_a_firing_missed_while_down_runs_at_start_once(sqlite_url, tmp_path):
    """Jobs come from code (memory store); a missed firing is found from job_runs instead of a stored
    next run time: the latest one within misfire_grace_s runs at start, and only once."""
    from services.settings import SchedulerSettings, Settings

    settings = Settings(database={"url": sqlite_url}, var_dir=tmp_path,
                        scheduler=SchedulerSettings(recalibration_cron="* * * * *", misfire_grace_s=600))
    engine = make_engine(sqlite_url)
    factory = session_factory(engine)
    runs = lambda: [r.scheduled_for for r in factory().scalars(  # noqa: E731
        select(JobRun).where(JobRun.job == "recalibration", JobRun.outcome == "ok"))]
    try:
        sched = start_scheduler(settings, engine, factory, name="first")
        deadline = time.monotonic() + 20
        while not runs() and time.monotonic() < deadline:
            time.sleep(0.1)
        sched.shutdown(wait=True)
        first = runs()
        assert len(first) == 1, first
        assert first[0].replace(tzinfo=timezone.utc if first[0].tzinfo is None else first[0].tzinfo) <= \
            datetime.now(timezone.utc) and first[0].second == 0
        sched = start_scheduler(settings, engine, factory, name="second")  # restart: that firing has run
        time.sleep(1.0)
        sched.shutdown(wait=True)
        assert len(runs()) == len(first) or runs()[-1] > first[0]  # at most the next minute's own firing
    finally:
        engine.dispose()
