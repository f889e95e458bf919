"""Review API: every endpoint on real SQLite and PostgreSQL databases, filters, token enforcement,
bad input, unknown ids and SQL-injection attempts. Media streaming and path traversal are in
test_api_media.py; the browser drives the page in test_review_page.py."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from schemas.events import event_id
from schemas.tables import Asset, AssetThreshold, Event, EventReview, ThresholdChange
from services.api.app import create_app, review_url
from services.api.sample import write_sample
from services.db import make_engine, session_factory, session_scope
from services.settings import Settings
from tests.support.http_server import serving

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2026, 3, 2, 22, 0, tzinfo=timezone.utc)


def make_event(asset: str, start: datetime, *, peak: float = 1.5, threshold: float = 1.0, kind: str = "anomaly",
               severity: str = "medium", status: str = "closed", verdict: str | None = None,
               serials: tuple[str, ...] = (), scores: list | None = None, minutes: float = 1.0) -> Event:
    """An event row shaped like the monitor's (services/monitor/sink.py)."""
    if scores is None:
        scores = [[(start + timedelta(seconds=i)).isoformat(), v] for i, v in enumerate([peak * 0.8, peak, peak * 0.9])]
    return Event(
        id=event_id(asset, start), asset_id=asset, start_time=start,
        end_time=None if status == "open" else start + timedelta(minutes=minutes), status=status, kind=kind,
        severity=severity, peak_score=peak, mean_score=peak * 0.9, threshold=threshold, model_version="m1",
        windows=len(scores), scores=scores, serials=list(serials),
        log_lines=["E-417 spindle load above limit", f"cycle complete part={serials[0] if serials else '-'}"],
        attribution={"modality_shares": {"audio": 0.7, "frames": 0.2, "logs": 0.1}, "log_codes": ["E-417"],
                     "top_log_lines": ["E-417 spindle load above limit"]},
        evidence={"audio": [{"topic": "fw.audio", "partition": 1, "first": 5, "last": 9}]},
        verdict=verdict, verdict_kind=kind if verdict else None, reviewer="seed" if verdict else None,
        verdict_at=start + timedelta(minutes=5) if verdict else None,
    )


EVENTS = [
    # asset, start offset (h), peak, kind, severity, status, verdict, serials
    ("L1-S1", 0.0, 1.2, "bearing_fault", "low", "closed", None, ("SN-1001",)),
    ("L1-S1", 1.0, 2.5, "bearing_fault", "high", "closed", "real", ("SN-1002", "SN-1003")),
    ("L1-S2", 1.5, 1.3, "surface_defect", "low", "acknowledged", "false_alarm", ("SN_9",)),
    ("L2-S1", 2.5, 5.0, "cross_modal", "critical", "open", None, ("SN-2001",)),
    ("press7", 3.0, 1.4, "anomaly", "medium", "resolved", "false_alarm", ()),  # line from assets.line only
]


def seed(url: str) -> dict[str, str]:
    engine = make_engine(url)
    if engine.dialect.name == "postgresql":
        # a server far from UTC (UTC+14): days and times must still come out in UTC
        from sqlalchemy import text

        with engine.begin() as conn:
            conn.execute(text(f'ALTER DATABASE "{engine.url.database}" SET timezone TO \'Pacific/Kiritimati\''))
        engine.dispose()
        engine = make_engine(url)
    ids = {}
    with session_scope(session_factory(engine)) as s:
        s.add(Asset(id="press7", line="L9"))
        for asset, h, peak, kind, sev, status, verdict, serials in EVENTS:
            e = make_event(asset, T0 + timedelta(hours=h), peak=peak, kind=kind, severity=sev, status=status,
                           verdict=verdict, serials=serials)
            e.closed_by = {"closed": "scores"}.get(status)
            if (asset, h) == ("L1-S1", 1.0):
                e.closed_by = "stream_stopped"  # the station was switched off mid-fault
            s.add(e)
            ids[f"{asset}@{h}"] = e.id
    engine.dispose()
    return ids


def client_for(url: str, media_root: Path, host: str = "127.0.0.1", token: str | None = TOKEN) -> TestClient:
    settings = Settings(database={"url": url}, media_root=media_root, api={"host": host, "token": token})
    return TestClient(create_app(settings, live_poll_s=0.05), base_url="http://127.0.0.1")


@pytest.fixture
def api(db_url, tmp_path):
    ids = seed(db_url)
    with client_for(db_url, tmp_path / "media") as client:
        client.ids = ids
        client.url = db_url
        yield client


@pytest.fixture
def sqlite_api(sqlite_url, tmp_path):
    ids = seed(sqlite_url)
    with client_for(sqlite_url, tmp_path / "media") as client:
        client.ids = ids
        client.url = sqlite_url
        yield client


def ids_of(response) -> set[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    return {e["id"] for e in (body["items"] if isinstance(body, dict) else body)}


def db_rows(url: str, stmt):
    engine = make_engine(url)
    with session_factory(engine)() as s:
        rows = list(s.execute(stmt))
    engine.dispose()
    return rows


# --- listing and filters ---------------------------------------------------------------------------------


def test_list_filters_and_pagination(api):
    ids = api.ids
    everything = api.get("/api/events").json()
    assert everything["total"] == 5 and everything["next_offset"] is None
    assert [e["id"] for e in everything["items"]][0] == ids["press7@3.0"]  # newest first

    assert ids_of(api.get("/api/events", params={"asset": "L1-S1"})) == {ids["L1-S1@0.0"], ids["L1-S1@1.0"]}
    assert ids_of(api.get("/api/events", params={"line": "L1"})) == {ids["L1-S1@0.0"], ids["L1-S1@1.0"], ids["L1-S2@1.5"]}
    assert ids_of(api.get("/api/events", params={"line": "L9"})) == {ids["press7@3.0"]}  # assets.line column
    assert ids_of(api.get("/api/events", params=[("severity", "low"), ("severity", "critical")])) == {
        ids["L1-S1@0.0"], ids["L1-S2@1.5"], ids["L2-S1@2.5"]}
    assert ids_of(api.get("/api/events", params={"status": "open"})) == {ids["L2-S1@2.5"]}
    assert ids_of(api.get("/api/events", params={"kind": "bearing_fault"})) == {ids["L1-S1@0.0"], ids["L1-S1@1.0"]}
    assert ids_of(api.get("/api/events", params={"verdict": "none"})) == {ids["L1-S1@0.0"], ids["L2-S1@2.5"]}
    assert ids_of(api.get("/api/events", params={"verdict": "false_alarm"})) == {ids["L1-S2@1.5"], ids["press7@3.0"]}
    assert len(ids_of(api.get("/api/events", params={"verdict": "any"}))) == 3
    # time range by overlap: the open event (no end) overlaps any later range; naive times are UTC
    since = (T0 + timedelta(hours=2)).isoformat()
    assert ids_of(api.get("/api/events", params={"since": since})) == {ids["L2-S1@2.5"], ids["press7@3.0"]}
    assert ids_of(api.get("/api/events", params={"since": "2026-03-02T22:30:00", "until": "2026-03-03T00:00:00"})) == {
        ids["L1-S1@1.0"], ids["L1-S2@1.5"]}
    assert ids_of(api.get("/api/events", params={"since": "2026-03-03T00:15:00+01:00",
                                                 "until": "2026-03-03T00:45:00+01:00"})) == {ids["L1-S2@1.5"]}

    top = api.get("/api/events", params={"order": "score", "limit": 2}).json()
    assert [e["peak_score"] for e in top["items"]] == [5.0, 2.5] and top["next_offset"] == 2 and top["total"] == 5
    page = api.get("/api/events", params={"order": "oldest", "limit": 2, "offset": 4}).json()
    assert [e["id"] for e in page["items"]] == [ids["press7@3.0"]] and page["next_offset"] is None
    first = api.get("/api/events", params={"asset": "L1-S1", "order": "oldest"}).json()["items"][0]
    assert first["line"] == "L1" and first["serials"] == ["SN-1001"] and first["verdict"] is None
    assert first["media"]["clip"] is None  # no summary yet


BAD_FILTERS = [
    ({"severity": "extreme"}, "severity"),
    ({"status": "deleted"}, "status"),
    ({"verdict": "maybe"}, "verdict"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"since": "yesterday"}, "since"),
    ({"since": "2026-03-03T00:00:00Z", "until": "2026-03-02T00:00:00Z"}, "since"),
    ({"asset": "L1 S1"}, "asset"),
    ({"order": "random"}, "order"),
    ({"severity_": "low"}, "severity_"),  # unknown parameter: refused, not ignored
]


def test_bad_filters_are_json_422(sqlite_api):
    for params, where in BAD_FILTERS:
        r = sqlite_api.get("/api/events", params=params)
        assert r.status_code == 422, params
        error = r.json()["error"]
        assert error["status"] == 422 and where in error["message"], (params, error)


def test_sql_injection_attempts_are_refused_or_inert(api):
    for params in ({"asset": "L1-S1' OR '1'='1"}, {"line": "L1%"}, {"kind": "x'; DROP TABLE events;--"},
                   {"severity": "low' OR 1=1 --"}):
        r = api.get("/api/events", params=params)
        assert r.status_code == 422, params
    r = api.get("/api/search", params={"serial": "SN-1001' OR '1'='1"})
    assert r.status_code == 422
    # LIKE wildcards allowed by the patterns are escaped: "L_" is not a wildcard for "L1"
    assert api.get("/api/events", params={"line": "L_"}).json()["total"] == 0
    assert ids_of(api.get("/api/search", params={"serial": "SN_", "prefix": "true"})) == {api.ids["L1-S2@1.5"]}
    # a hostile note is stored and returned verbatim, the table is intact
    note = "'); DROP TABLE events; -- <script>alert(1)</script>"
    r = api.post(f"/api/events/{api.ids['L1-S1@0.0']}/verdict", headers=AUTH,
                 json={"verdict": "real", "reviewer": "Robert'); --", "note": note})
    assert r.status_code == 200 and r.json()["verdict"]["note"] == note
    assert db_rows(api.url, select(func.count()).select_from(Event))[0][0] == 5


# --- one event ----------------------------------------------------------------------------------------


def test_event_detail_and_unknown_ids(api):
    eid = api.ids["L1-S1@1.0"]
    d = api.get(f"/api/events/{eid}").json()
    assert d["asset"] == "L1-S1" and d["peak_score"] == 2.5 and d["line"] == "L1"
    assert [p["score"] for p in d["scores"]] == [2.0, 2.5, 2.25]
    assert d["attribution"]["modality_shares"]["audio"] == 0.7 and d["attribution"]["log_codes"] == ["E-417"]
    assert d["log_lines"][0] == "E-417 spindle load above limit"
    assert d["serials"] == ["SN-1002", "SN-1003"]
    assert d["evidence"]["audio"][0]["last"] == 9
    assert d["verdict"]["verdict"] == "real" and d["reviews"] == []
    assert d["closed_by"] == "stream_stopped"
    assert api.get(f"/api/events/{api.ids['L1-S1@0.0']}").json()["closed_by"] == "scores"
    assert api.get(f"/api/events/{api.ids['L2-S1@2.5']}").json()["closed_by"] is None  # still open
    assert api.get(f"/api/events/{eid.upper()}").json()["id"] == eid

    unknown = str(uuid.uuid4())
    r = api.get(f"/api/events/{unknown}")
    assert r.status_code == 404 and unknown in r.json()["error"]["message"]
    for bad in ("not-a-uuid", "1 OR 1=1", "00000000-0000-0000-0000-00000000000g"):
        r = api.get(f"/api/events/{bad}")
        assert r.status_code == 422 and r.json()["error"]["status"] == 422
    r = api.post(f"/api/events/{unknown}/verdict", headers=AUTH, json={"verdict": "real", "reviewer": "ann"})
    assert r.status_code == 404
    r = api.post(f"/api/events/{unknown}/acknowledge", headers=AUTH, json={"reviewer": "ann"})
    assert r.status_code == 404
    assert api.get("/api/nothing-here").json()["error"]["status"] == 404


# --- writes ------------------------------------------------------------------------------------------------


def test_acknowledge_resolve_and_label(api):
    eid = api.ids["L2-S1@2.5"]
    r = api.post(f"/api/events/{eid}/acknowledge", headers=AUTH, json={"reviewer": "Ann", "note": "looking"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    r = api.post(f"/api/events/{eid}/resolve", headers=AUTH, json={"reviewer": "Ann"})
    assert r.json()["status"] == "resolved"
    r = api.post(f"/api/events/{eid}/acknowledge", headers=AUTH, json={"reviewer": "Ann"})
    assert r.status_code == 409 and "resolved" in r.json()["error"]["message"]

    r = api.post(f"/api/events/{eid}/verdict", headers=AUTH,
                 json={"verdict": "false_alarm", "kind": "sensor_glitch", "reviewer": "Ann", "note": "cable"})
    assert r.status_code == 200
    v = r.json()["verdict"]
    assert (v["verdict"], v["kind"], v["reviewer"], v["note"]) == ("false_alarm", "sensor_glitch", "Ann", "cable")
    r = api.post(f"/api/events/{eid}/verdict", headers=AUTH, json={"verdict": "real", "reviewer": "Bob"})
    assert r.json()["verdict"]["kind"] == "cross_modal"  # defaults to the event's kind
    assert [(x["action"], x["reviewer"], x["verdict"]) for x in r.json()["reviews"]] == [
        ("acknowledge", "Ann", None), ("resolve", "Ann", None), ("label", "Ann", "false_alarm"), ("label", "Bob", "real")]

    (row,) = db_rows(api.url, select(Event).where(Event.id == eid))
    e = row[0]
    assert (e.verdict, e.verdict_kind, e.reviewer, e.status) == ("real", "cross_modal", "Bob", "resolved")
    assert e.verdict_at is not None and e.verdict_at.tzinfo is not None
    assert db_rows(api.url, select(func.count()).select_from(EventReview))[0][0] == 4

    for body in ({"verdict": "maybe", "reviewer": "Ann"}, {"verdict": "real", "reviewer": ""},
                 {"verdict": "real", "reviewer": "A\nB"}, {"verdict": "real", "reviewer": "x" * 65},
                 {"verdict": "real", "reviewer": "Ann", "kind": "Not A Kind"},
                 {"verdict": "real", "reviewer": "Ann", "extra": 1}, {"verdict": "real"}):
        r = api.post(f"/api/events/{eid}/verdict", headers=AUTH, json=body)
        assert r.status_code == 422, body
    r = api.post(f"/api/events/{eid}/verdict", headers={**AUTH, "Content-Type": "application/json"}, content=b"{oops")
    assert r.status_code == 422 and r.json()["error"]["message"]


def test_writes_need_the_token(sqlite_api):
    eid = sqlite_api.ids["L1-S1@0.0"]
    body = {"verdict": "false_alarm", "reviewer": "mallory"}
    r = sqlite_api.post(f"/api/events/{eid}/verdict", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "Bearer" in r.json()["error"]["message"]
    for header in ("Bearer wrong", "Basic dXNlcjpwdw==", "Bearer", TOKEN):
        r = sqlite_api.post(f"/api/events/{eid}/verdict", json=body, headers={"Authorization": header})
        assert r.status_code == 401, header
    # the read cookie never authorises a write (CSRF)
    assert sqlite_api.post("/api/session", headers=AUTH).status_code == 204
    assert "fw_read" in sqlite_api.cookies
    r = sqlite_api.post(f"/api/events/{eid}/verdict", json=body)
    assert r.status_code == 401
    for path, method, payload in ((f"/api/events/{eid}/acknowledge", "POST", {"reviewer": "m"}),
                                  (f"/api/events/{eid}/resolve", "POST", {"reviewer": "m"}),
                                  ("/api/thresholds/L1-S1", "PUT", {"threshold": 9, "actor": "m", "reason": "why"}),
                                  ("/api/recalibrate", "POST", {})):
        assert sqlite_api.request(method, path, json=payload).status_code == 401, path
    assert db_rows(sqlite_api.url, select(Event.verdict).where(Event.id == eid))[0][0] is None


def test_reads_need_the_token_off_loopback(sqlite_url, tmp_path):
    seed(sqlite_url)
    with client_for(sqlite_url, tmp_path, host="0.0.0.0") as c:
        r = c.get("/api/events")
        assert r.status_code == 401 and "loopback" in r.json()["error"]["message"]
        assert c.get("/api/events", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.get("/api/stats").status_code == 401
        assert c.get("/api/events", headers=AUTH).json()["total"] == 5
        c.cookies.set("fw_read", "forged")
        assert c.get("/api/events").status_code == 401
        c.cookies.clear()
        r = c.post("/api/session", headers=AUTH)
        assert r.status_code == 204 and "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        assert c.get("/api/events").json()["total"] == 5  # the cookie authorises reads
        assert c.get("/").status_code == 200  # the page itself holds no data
        assert c.get("/healthz").status_code == 200


def test_loopback_reads_are_open_but_refuse_foreign_host_names(sqlite_api):
    assert sqlite_api.get("/api/events").status_code == 200
    r = sqlite_api.get("/api/events", headers={"Host": "evil.example"})
    assert r.status_code == 400  # DNS rebinding: a page elsewhere cannot read through the browser
    assert sqlite_api.get("/api/events", headers={"Host": "localhost:8080"}).status_code == 200


def test_generated_token_when_none_is_configured(sqlite_url, tmp_path):
    with client_for(sqlite_url, tmp_path, token=None) as c:
        auth = c.app.state.ctx.auth
        assert auth.generated and len(auth.token) >= 24
        assert review_url(c.app).endswith(f"/#token={auth.token}")
        seed(sqlite_url)
        eid = event_id("L1-S1", T0)
        body = {"verdict": "real", "reviewer": "ann"}
        assert c.post(f"/api/events/{eid}/verdict", json=body).status_code == 401
        r = c.post(f"/api/events/{eid}/verdict", json=body, headers={"Authorization": f"Bearer {auth.token}"})
        assert r.status_code == 200


# --- search, statistics, thresholds --------------------------------------------------------------------------


def test_search_by_serial(api):
    assert ids_of(api.get("/api/search", params={"serial": "SN-1003"})) == {api.ids["L1-S1@1.0"]}
    assert ids_of(api.get("/api/search", params={"serial": "SN-100", "prefix": "true"})) == {
        api.ids["L1-S1@0.0"], api.ids["L1-S1@1.0"]}
    assert ids_of(api.get("/api/search", params={"serial": "SN-100"})) == set()  # exact by default
    assert ids_of(api.get("/api/search", params={"serial": "SN-9999"})) == set()
    assert api.get("/api/search").status_code == 422
    assert api.get("/api/search", params={"serial": "SN 1"}).status_code == 422


def test_stats_per_asset_and_day(api):
    s = api.get("/api/stats").json()
    assert (s["events"], s["real"], s["false_alarm"], s["unlabelled"]) == (5, 1, 2, 2)
    assert s["false_alarm_rate"] == pytest.approx(2 / 3)
    assert s["by_severity"] == {"low": 2, "high": 1, "critical": 1, "medium": 1}
    per_asset = {a["asset"]: a for a in s["per_asset"]}
    assert per_asset["L1-S1"]["events"] == 2 and per_asset["L1-S1"]["false_alarm_rate"] == 0.0
    assert per_asset["L1-S2"]["false_alarm_rate"] == 1.0 and per_asset["L2-S1"]["false_alarm_rate"] is None
    # T0 is 22:00 UTC: events 2.5 h later fall on the next UTC day
    days = {(d["asset"], d["day"]): d["events"] for d in s["per_asset_day"]}
    assert days == {("L1-S1", "2026-03-02"): 2, ("L1-S2", "2026-03-02"): 1, ("L2-S1", "2026-03-03"): 1,
                    ("press7", "2026-03-03"): 1}
    line = api.get("/api/stats", params={"line": "L1"}).json()
    assert line["events"] == 3 and {a["asset"] for a in line["per_asset"]} == {"L1-S1", "L1-S2"}
    assert api.get("/api/stats", params={"since": "2026-03-03T00:30:00Z"}).json()["events"] == 2
    assert api.get("/api/stats", params={"asset": "no such asset"}).status_code == 422


def test_thresholds_and_their_history(api):
    listed = {t["asset"]: t for t in api.get("/api/thresholds").json()}
    assert listed["L1-S1"] == {**listed["L1-S1"], "threshold": 1.0, "source": "model"}
    r = api.put("/api/thresholds/L1-S1", headers=AUTH, json={"threshold": 1.3, "actor": "qa-lead", "reason": "noisy"})
    assert r.status_code == 200
    change = r.json()
    assert (change["asset"], change["old_threshold"], change["new_threshold"], change["actor"]) == (
        "L1-S1", 1.0, 1.3, "qa-lead")
    r = api.put("/api/thresholds/L1-S1", headers=AUTH, json={"threshold": 1.2, "actor": "qa-lead", "reason": "less"})
    assert r.json()["old_threshold"] == 1.3
    listed = {t["asset"]: t for t in api.get("/api/thresholds").json()}
    assert listed["L1-S1"]["threshold"] == 1.2 and listed["L1-S1"]["source"] == "override"
    history = api.get("/api/threshold-changes", params={"asset": "L1-S1"}).json()
    assert [h["new_threshold"] for h in history] == [1.2, 1.3] and history[0]["reason"] == "less"
    assert api.get("/api/threshold-changes", params={"asset": "L2-S1"}).json() == []
    assert db_rows(api.url, select(AssetThreshold.threshold).where(AssetThreshold.asset_id == "L1-S1"))[0][0] == 1.2
    for body in ({"threshold": -1, "actor": "a", "reason": "why"}, {"threshold": "nan", "actor": "a", "reason": "why"},
                 {"threshold": 1.0, "actor": "a", "reason": ""}, {"threshold": 1.0, "reason": "why"}):
        assert api.put("/api/thresholds/L1-S1", headers=AUTH, json=body).status_code == 422, body
    assert api.put("/api/thresholds/..%2F..", headers=AUTH,
                   json={"threshold": 1.0, "actor": "a", "reason": "why"}).status_code in (404, 422)


def test_recalibrate_endpoint(sqlite_api):
    # L1-S2 and press7 have one false alarm each; a zero budget makes both over budget
    c = sqlite_api
    c.app.state.ctx.settings.recalibration.false_alarms_per_shift = 0.0
    c.app.state.ctx.settings.recalibration.lookback_days = 3650.0
    dry = c.post("/api/recalibrate", headers=AUTH, json={"dry_run": True}).json()
    assert dry["dry_run"] and {ch["asset"] for ch in dry["changes"]} == {"L1-S2", "press7"}
    assert db_rows(c.url, select(func.count()).select_from(ThresholdChange))[0][0] == 0
    done = c.post("/api/recalibrate", headers=AUTH, json={}).json()
    by_asset = {ch["asset"]: ch for ch in done["changes"]}
    assert by_asset["L1-S2"]["new_threshold"] == pytest.approx(1.3 * 1.01)
    assert by_asset["L1-S2"]["actor"] == "api" and "false alarm" in by_asset["L1-S2"]["reason"]
    history = c.get("/api/threshold-changes").json()
    assert {h["asset"] for h in history} == {"L1-S2", "press7"}
    again = c.post("/api/recalibrate", headers=AUTH, json={}).json()
    assert again["changes"] == []  # the false alarms no longer fire: nothing more to do


# --- live updates, health, OpenAPI, page ----------------------------------------------------------------------


def test_live_stream_sends_new_and_changed_events(sqlite_api, monkeypatch):
    from services.api import live

    c = sqlite_api
    later = T0 + timedelta(days=1)
    polling = threading.Event()
    fetch = live._fetch

    def observed_fetch(*args):
        polling.set()  # the stream is connected: what is written from now on is news
        return fetch(*args)

    monkeypatch.setattr(live, "_fetch", observed_fetch)

    def insert_soon():
        assert polling.wait(10)
        time.sleep(0.1)
        engine = make_engine(c.url)
        with session_scope(session_factory(engine)) as s:
            s.add(make_event("L3-S1", later, status="open", severity="high"))
        engine.dispose()

    writer = threading.Thread(target=insert_soon)
    writer.start()
    r = c.get("/api/events/stream", params={"max_s": 2.0})  # the stream ends by itself
    writer.join()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    messages = [json.loads(line[len("data: "):]) for m in r.text.split("\n\n") if "event: event" in m
                for line in m.splitlines() if line.startswith("data: ")]
    assert [(m["id"], m["severity"], m["status"]) for m in messages] == [(event_id("L3-S1", later), "high", "open")]
    assert "retry: 3000" in r.text

    # resuming from an earlier Last-Event-ID replays the changes after it (seeded rows included)
    r = c.get("/api/events/stream", params={"max_s": 0.2},
              headers={"Last-Event-ID": (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()})
    assert r.text.count("event: event") == 6
    assert c.get("/api/events/stream", params={"max_s": 0}).status_code == 422


def test_health_metrics_openapi_and_page(sqlite_api):
    c = sqlite_api
    assert c.get("/healthz").json() == {"status": "alive"}
    assert c.get("/readyz").json() == {"status": "ready"}
    assert "process_" in c.get("/metrics/").text or "python_" in c.get("/metrics/").text
    spec = c.get("/openapi.json").json()
    for path in ("/api/events", "/api/events/{event_id}", "/api/events/{event_id}/clip",
                 "/api/events/{event_id}/subtitles", "/api/events/{event_id}/thumbnail",
                 "/api/events/{event_id}/verdict", "/api/events/{event_id}/acknowledge",
                 "/api/events/{event_id}/resolve", "/api/search", "/api/stats", "/api/thresholds",
                 "/api/thresholds/{asset}", "/api/threshold-changes", "/api/recalibrate", "/api/events/stream"):
        assert path in spec["paths"], path
    page = c.get("/")
    assert page.status_code == 200 and "<video" in page.text and 'id="timeline"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert c.get("/static/review.js").status_code == 200
    assert c.get("/static/../app.py").status_code == 404
    assert c.get("/docs").status_code == 404  # the CDN-hosted docs page is off on purpose


def test_create_app_refuses_an_unmigrated_database(tmp_path):
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="fusionwatch db upgrade"):
        create_app(Settings(database={"url": f"sqlite:///{tmp_path / 'empty.db'}"}, media_root=tmp_path))


def test_sample_data_and_cli_recalibrate(sqlite_url, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from services.cli import app as cli
    from services.settings import get_settings

    engine = make_engine(sqlite_url)
    with session_scope(session_factory(engine)) as s:
        ids = write_sample(s, tmp_path / "media", now=T0)
    engine.dispose()
    assert len(ids) == 5 and (tmp_path / "media" / "sample" / f"{ids[0]}.mp4").stat().st_size > 1000
    monkeypatch.setenv("FW_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("FW_RECALIBRATION__FALSE_ALARMS_PER_SHIFT", "0")
    monkeypatch.setenv("FW_RECALIBRATION__LOOKBACK_DAYS", "3650")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["recalibrate", "--dry-run", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert '"asset": "L1-S1"' in result.output and '"dry_run": true' in result.output


# ── hostile requests and weak configuration (issue 23) ─────────────────────────────────────

@pytest.fixture
def live_server(sqlite_url, tmp_path):
    """The API on a real uvicorn server (a request goes through the HTTP stack, not a test transport)."""
    from services.broker.embedded import free_port

    seed(sqlite_url)
    port = free_port()
    settings = Settings(database={"url": sqlite_url}, media_root=tmp_path, api={"port": port, "token": TOKEN})
    with serving(create_app(settings), port):
        yield port


def _raw_request(port: int, head: bytes, body_chunks=(), read_after_s: float = 5.0) -> tuple[int, bytes]:
    """Send a request head and body chunks over a socket; return (status, response) — the server
    may answer (and close) before the body is sent: that is the point."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=read_after_s) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < 12:
                got = sock.recv(65536)
                if not got:
                    break
                data += got
        except (ConnectionResetError, socket.timeout):
            pass
    return int(data.split(b" ", 2)[1]), data


def test_huge_bodies_are_refused_before_the_token_is_checked(live_server):
    """A 200 MB body was read in full before the auth check. Now a declared length over the limit is
    refused at once (nothing of it is sent here), and a chunked body as soon as it passes the limit."""
    head = (b"PUT /api/thresholds/L1-S1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000000\r\n\r\n")
    t0 = time.monotonic()
    status, body = _raw_request(live_server, head)
    assert status == 413, body[:300]
    assert time.monotonic() - t0 < 3
    chunked = (b"PUT /api/thresholds/L1-S1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    status, _ = _raw_request(live_server, chunked, [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 40 + [b"0\r\n\r\n"])
    assert status == 413
    # under the limit the token is what decides
    small = json.dumps({"threshold": 1.1, "actor": "m", "reason": "why"}).encode()
    status, _ = _raw_request(live_server, b"PUT /api/thresholds/L1-S1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(small), [small])
    assert status == 401


@pytest.mark.parametrize("token", ["CHANGE-ME", "CHANGE-ME-api-token", "short-token", "x" * 40, "my-api-secret-token"])
def test_placeholder_or_short_tokens_are_refused_at_start(sqlite_url, tmp_path, token):
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="secrets.token_urlsafe"):
        client_for(sqlite_url, tmp_path, token=token)


def test_the_cli_refuses_the_deploy_placeholder_token(sqlite_url):
    """deploy/k8s/secret.yaml ships FW_API_TOKEN=CHANGE-ME: `fusionwatch api` must not start with it."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("FW_")} | {
        "FW_API_TOKEN": "CHANGE-ME", "FW_DATABASE_URL": sqlite_url}
    done = subprocess.run([sys.executable, "-m", "services.cli", "api", "--port", "1"], env=env, capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode != 0
    assert "FW_API_TOKEN" in done.stderr and "token_urlsafe" in done.stderr, done.stderr[-2000:]


def test_manual_thresholds_are_bounded_by_the_calibration(sqlite_api):
    """PUT {"threshold": 1e9} blinded an asset. L1-S1 is calibrated at 1.0: [0.5, 4] is allowed."""
    body = {"actor": "qa-lead", "reason": "tuning"}
    for bad in (1e9, 4.01, 0.49, 1e-9):
        r = sqlite_api.put("/api/thresholds/L1-S1", headers=AUTH, json=body | {"threshold": bad})
        assert r.status_code == 422 and "calibrated threshold 1" in r.json()["error"]["message"], (bad, r.text)
    assert sqlite_api.put("/api/thresholds/L1-S1", headers=AUTH, json=body | {"threshold": 3.5}).status_code == 200
    # the bound stays relative to the calibration, not to the override in force: no ratcheting upwards
    assert sqlite_api.put("/api/thresholds/L1-S1", headers=AUTH, json=body | {"threshold": 5.0}).status_code == 422
    r = sqlite_api.put("/api/thresholds/NEW-1", headers=AUTH, json=body | {"threshold": 1.0})
    assert r.status_code == 409 and "no calibrated threshold" in r.json()["error"]["message"]


def test_metrics_need_the_token_off_loopback(sqlite_url, tmp_path):
    with client_for(sqlite_url, tmp_path, host="0.0.0.0") as c:
        assert c.get("/metrics/").status_code == 401
        assert c.get("/metrics/", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        r = c.get("/metrics/", headers=AUTH)
        assert r.status_code == 200 and "fusionwatch" in r.text
    with client_for(sqlite_url, tmp_path) as c:  # loopback: reads (and metrics) stay open
        assert c.get("/metrics/").status_code == 200


def test_metrics_server_needs_a_token_off_loopback():
    import urllib.error
    import urllib.request

    from schemas.errors import ConfigError
    from services.broker.embedded import free_port
    from services.observability.server import serve_metrics
    from services.settings import MetricsSettings

    port = free_port()
    with pytest.raises(ConfigError, match="FW_METRICS__TOKEN"):
        serve_metrics(Settings(metrics=MetricsSettings(host="0.0.0.0", port=port)), "monitor", {})
    with pytest.raises(ConfigError, match="placeholder"):
        serve_metrics(Settings(metrics=MetricsSettings(host="0.0.0.0", port=port), api={"token": "CHANGE-ME-api-token"}),
                      "monitor", {})
    server = serve_metrics(Settings(metrics=MetricsSettings(host="0.0.0.0", port=port), api={"token": TOKEN}),
                           "monitor", {})
    try:
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/metrics", timeout=5)
        assert refused.value.code == 401
        ok = urllib.request.urlopen(urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}),
                                    timeout=5)
        assert ok.status == 200 and b"fusionwatch" in ok.read()
        assert urllib.request.urlopen(f"{url}/healthz", timeout=5).status == 200  # probes stay open
    finally:
        server.stop()


def test_a_generated_token_stays_out_of_logs(sqlite_url, tmp_path, caplog):
    import io
    import logging

    from rich.console import Console

    from services.api.app import print_review_link

    settings = Settings(database={"url": sqlite_url}, media_root=tmp_path, var_dir=tmp_path / "var", api={"token": None})
    with caplog.at_level(logging.DEBUG):
        app = create_app(settings)
    token = app.state.ctx.auth.token
    assert caplog.records and token not in caplog.text
    out = io.StringIO()
    print_review_link(app, Console(file=out, force_terminal=False))  # output captured, e.g. into a log file
    assert token not in out.getvalue() and "api-token" in out.getvalue()
    path = tmp_path / "var" / "api-token"
    assert path.read_text().strip() == token and path.stat().st_mode & 0o777 == 0o600
    tty = io.StringIO()
    print_review_link(app, Console(file=tty, force_terminal=True, no_color=True, highlight=False))  # a person there
    assert token in tty.getvalue()
