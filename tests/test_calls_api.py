"""The supervisor's view API on real SQLite and PostgreSQL: calls written by the monitor's own sink
(call summaries and transcript turns, scored windows committed in batches), an escalation event with
its narrated clip, then the calls list (live / ended), one call's transcript with per-turn
sentiment, its frustration curve and escalations, and full-text search (stemming, phrases,
prefixes, OR, exclusions, one call, hostile input) through the real API."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from schemas.events import event_id
from schemas.tables import CallTurn, Event, Summary
from services.db import make_engine, session_factory, session_scope
from services.monitor.sink import CallPoint, CommitBatch, SqlSink
from services.settings import Settings

TRUTH = [json.loads(line) for line in
         (Path(__file__).resolve().parent / "data" / "transcripts" / "call.jsonl").read_text().splitlines()]
ANGRY = {"Hi. I ordered a washing machine three weeks ago and it still has not arrived.": 0.85,
         "It is one two three four five.": 0.5}
CALM = {"negative": 0.1, "neutral": 0.8, "positive": 0.1}
CROSS = {"negative": 0.8, "neutral": 0.15, "positive": 0.05}


def window_points(t0: float, seconds: int = 20) -> list[CallPoint]:
    """What the monitor's call-centre branch hands the sink: one point per 2 s window (1 s hop) with the
    transcript lines stamped inside it; the customer's windows cross, the rest calm."""
    points = []
    for k in range(seconds - 1):
        start, end = t0 + k, t0 + k + 2
        lines = tuple((t0 + u["start"], u["speaker"], u["text"]) for u in TRUTH if start <= t0 + u["start"] < end)
        said = [u for u in TRUTH if u["speaker"] == "customer" and u["start"] < k + 2 and u["end"] > k]
        frustration = max((ANGRY[u["text"]] for u in said), default=0.1)
        points.append(CallPoint(end, CROSS if said else CALM, frustration, start, lines, heard=bool(said)))
    return points


def seed_call(url: str, call_id: str, t0: float, *, escalate: bool = True) -> str | None:
    """Commit a call through the monitor's sink in three batches (a line's windows straddle two), plus an
    escalation event with a narrated clip as the summarizer leaves it; returns the event id."""
    engine = make_engine(url)
    sink = SqlSink(engine, f"g-{uuid.uuid4().hex[:8]}")
    points = window_points(t0)
    for lo in range(0, len(points), 7):
        sink.commit(CommitBatch(calls={call_id: points[lo: lo + 7]}))
    eid = None
    if escalate:
        start = datetime.fromtimestamp(t0 + 6, timezone.utc)
        eid = event_id(call_id, start)
        with session_scope(session_factory(engine)) as s:
            s.add(Event(id=eid, asset_id=call_id, start_time=start, end_time=start + timedelta(seconds=9),
                        status="closed", kind="escalation", severity="high", peak_score=0.85, mean_score=0.7,
                        threshold=0.6, model_version="m1", windows=9, scores=[], serials=[],
                        log_lines=["customer: Hi. I ordered a washing machine three weeks ago"]))
            s.flush()
            s.add(Summary(event_id=eid, status="ready", video_path=f"{eid}.mp4", subtitles_path=f"{eid}.vtt",
                          narration="The customer complained that the washing machine had not arrived."))
    engine.dispose()
    return eid


@pytest.fixture
def api(db_url, tmp_path):
    from services.api.app import create_app

    settings = Settings(database={"url": db_url}, media_root=tmp_path / "media",
                        api={"host": "127.0.0.1", "token": "calls-test-token-0123"})
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client, db_url


def test_turns_keep_what_the_model_heard_in_each_line(db_url):
    t0 = time.time() - 3600
    seed_call(db_url, "call-0001", t0, escalate=False)
    engine = make_engine(db_url)
    with session_factory(engine)() as s:
        turns = s.scalars(select(CallTurn).order_by(CallTurn.at)).all()
        fts = None
        if engine.dialect.name == "sqlite":  # the FTS5 index is kept by triggers
            fts = s.scalar(select(func.count()).select_from(text("call_turns_fts")))
    engine.dispose()
    # each line once, though two windows (committed in different batches for some) held it
    assert [(t.speaker, t.text) for t in turns] == [(u["speaker"], u["text"]) for u in TRUTH]
    assert [t.windows for t in turns] == [1, 2, 2, 2, 2]  # the first line (0.5 s) is in the call's first window only
    assert [t.at.timestamp() for t in turns] == pytest.approx([t0 + u["start"] for u in TRUTH], abs=1e-5)
    complaint = turns[1]
    assert complaint.negative == pytest.approx(0.8) and complaint.frustration == pytest.approx(0.85)
    # the agent's apology at 9.1 s: windows [8, 10) (the customer still speaking) and [9, 11) (calm)
    apology = turns[2]
    assert apology.negative == pytest.approx((0.8 + 0.1) / 2) and apology.frustration == pytest.approx(0.85)
    if fts is not None:
        assert fts == len(TRUTH)


def test_calls_list_detail_and_escalation_clip(api):
    client, url = api
    now = time.time()
    eid = seed_call(url, "call-0001", now - 3600)  # ended an hour ago
    seed_call(url, "call-0002", now - 19, escalate=False)  # its last window ended just now: live
    page = client.get("/api/calls").json()
    assert [c["call_id"] for c in page["items"]] == ["call-0002", "call-0001"] and page["total"] == 2
    live, ended = page["items"]
    assert live["live"] and not ended["live"]
    assert ended["escalations"] == 1 and not ended["escalation_open"] and ended["turns"] == 5
    assert ended["overall"] == "neutral" and ended["peak_frustration"] == pytest.approx(0.85)
    assert live["now"]["frustration"] == pytest.approx(0.1)
    assert [c["call_id"] for c in client.get("/api/calls", params={"state": "live"}).json()["items"]] == ["call-0002"]
    assert [c["call_id"] for c in client.get("/api/calls", params={"state": "ended"}).json()["items"]] == ["call-0001"]

    call = client.get("/api/calls/call-0001").json()
    assert [(t["speaker"], t["text"]) for t in call["transcript"]] == [(u["speaker"], u["text"]) for u in TRUTH]
    # the customer's sentiment while each line was heard: the agent's last line (15.8 s) is still in windows
    # that hear the customer's previous turn (to 15.3 s)
    assert [t["sentiment"] for t in call["transcript"]] == ["neutral", "negative", "neutral", "negative", "negative"]
    assert len(call["curve"]) == 19 and max(p["frustration"] for p in call["curve"]) == pytest.approx(0.85)
    # which windows heard the customer (what an escalation counts), as the monitor recorded them
    heard = [p["customer_heard"] for p in call["curve"]]
    assert heard == [pt.heard for pt in window_points(now - 3600)] and True in heard and False in heard
    assert call["escalation_threshold"] == 0.6 and call["escalation_close_threshold"] == 0.4
    (esc,) = call["escalation_list"]
    assert esc["id"] == eid and esc["clip"] == f"/api/events/{eid}/clip" and esc["peak_frustration"] == 0.85
    assert esc["subtitles"] == f"/api/events/{eid}/subtitles" and "washing machine" in esc["narration"]

    missing = client.get("/api/calls/call-9999")
    assert missing.status_code == 404 and "no call with id call-9999" in missing.json()["error"]["message"]
    assert client.get("/api/calls/bad%20id").status_code == 422


def _search(client, q, **params):
    r = client.get("/api/transcripts/search", params={"q": q, **params})
    assert r.status_code == 200, r.text
    return [(h["call_id"], h["text"]) for h in r.json()["items"]]


def test_full_text_search_over_transcripts(api):
    client, url = api
    now = time.time()
    seed_call(url, "call-0001", now - 3600, escalate=False)
    seed_call(url, "call-0002", now - 600, escalate=False)
    complaint = TRUTH[1]["text"]
    # stemming: "arriving" finds "arrived"; the newer call first among equal matches
    assert _search(client, "arriving") == [("call-0002", complaint), ("call-0001", complaint)]
    assert _search(client, '"washing machine"', call="call-0001") == [("call-0001", complaint)]
    assert _search(client, '"machine washing"') == []  # a phrase keeps its order
    hits = _search(client, "deliv*")  # prefix
    assert {t for _, t in hits} == {TRUTH[4]["text"]}
    assert {t for _, t in _search(client, "washing OR delivery")} == {complaint, TRUTH[4]["text"]}
    assert {t for _, t in _search(client, "thank")} == {TRUTH[0]["text"], TRUTH[4]["text"]}
    assert {t for _, t in _search(client, "thank -delayed")} == {TRUTH[0]["text"]}
    assert _search(client, "refund") == []
    body = client.get("/api/transcripts/search", params={"q": "thank"}).json()
    hit = body["items"][0]
    assert body["words"] == ["thank"] and hit["speaker"] == "agent" and hit["sentiment"] in ("neutral", "negative")
    # nothing a user types is syntax of either engine, nor SQL
    for hostile in ['"); DROP TABLE call_turns; --', "NEAR(thank delivery)", "thank & !x | y:*", "a' OR '1'='1",
                    "\\", '"unclosed phrase', "*"]:
        r = client.get("/api/transcripts/search", params={"q": hostile})
        assert r.status_code in (200, 422), (hostile, r.text)
    assert len(_search(client, "thank")) == 4  # still there
    r = client.get("/api/transcripts/search", params={"q": "-thank"})
    assert r.status_code == 422 and "at least one word" in r.json()["error"]["message"]
