"""Summarizer end to end on real parts: contract records on the embedded broker, the event row in
SQLite/PostgreSQL, the CloudEvent on fw.events, the service rendering, the MP4 read back with PyAV."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schemas.events import EvidenceRange
from services.db import make_engine, session_factory
from services.summarizer import facts as facts_mod
from services.summarizer.evidence import EvidenceReader
from services.summarizer.mp4 import parse_webvtt
from services.summarizer.pipeline import LEAD_IN_S, Summarizer
from services.summarizer.render import Layout
from services.summarizer.service import SummarizerService
from services.summarizer.tts import Speaker
from tests.test_summarizer_support import (
    OTHER_ASSET_COLOUR,
    insert_event,
    make_settings,
    produce_scenario,
    publish_event,
    read_mp4,
    wait_for_summary,
)

LAYOUT = Layout(640, 360)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def _camera_patch(rgb: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = LAYOUT.camera
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    return rgb[cy - 10: cy + 10, cx - 10: cx + 10].reshape(-1, 3).mean(axis=0)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _check_speech(mp4: dict) -> None:
    """Energy where the narration speaks is well above the lead-in (sensor sound only), and it is
    speech-like: the short-time energy rises and falls with syllables (a steady hum does not)."""
    sr, audio = mp4["sample_rate"], mp4["audio"]
    voiced = np.concatenate([audio[int(a * sr): int(b * sr)] for a, b, _ in mp4["cues"]])
    lead_in = audio[int(0.05 * sr): int((LEAD_IN_S - 0.05) * sr)]
    assert _rms(voiced) > 0.05
    assert _rms(voiced) > 2.5 * _rms(lead_in), (_rms(voiced), _rms(lead_in))
    hop = int(0.02 * sr)
    env = np.array([_rms(voiced[i: i + hop]) for i in range(0, len(voiced) - hop, hop)])
    assert env.std() / env.mean() > 0.4


@pytest.mark.slow
def test_closed_event_becomes_a_narrated_mp4(broker, make_topics, sqlite_url, tmp_path, capsys):
    ks, topics = make_topics(4)
    sc = produce_scenario(broker.bootstrap, ks, topics)
    settings = make_settings(tmp_path, ks, sqlite_url)
    factory = session_factory(make_engine(sqlite_url))
    insert_event(factory, sc.data)

    service = SummarizerService(settings, broker.bootstrap, factory, topics)
    handled = []
    handle = service.handle
    service.handle = lambda value: handled.append(handle(value)) or handled[-1]
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not (service._consumer and service._consumer.assignment()):
            time.sleep(0.1)  # the group has formed: the latency below is the steady-state one
        from services.kafka import make_producer

        garbage = make_producer(ks, broker.bootstrap)
        garbage.send(topics.events, key=b"L3-S2", value=b"{not json").get(timeout=20)
        garbage.close()
        published = publish_event(broker.bootstrap, ks, topics, sc.data)
        row, ready_at = wait_for_summary(factory, sc.event_id)
        latency = ready_at - published
        first_rendered = row.rendered_at
        publish_event(broker.bootstrap, ks, topics, sc.data)  # a replay of the same close
        deadline = time.time() + 30
        while time.time() < deadline and len(handled) < 3:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(30)
    assert handled[0] is None, "a record that is not a CloudEvent is skipped, the service keeps going"
    assert len(handled) == 3 and handled[2] is None, "the replayed close is not rendered again"
    with factory() as s:
        from schemas.tables import Summary

        row = s.get(Summary, sc.event_id)
    assert row.rendered_at == first_rendered

    assert row.status == "ready", row.missing
    assert row.missing == []
    for rel in (row.video_path, row.subtitles_path, row.thumbnail_path):
        assert re.fullmatch(r"summaries/[0-9a-f]{32}\.(mp4|vtt|jpg)", rel), rel  # our names, not the message's
    media = settings.media_dir
    assert not list(media.rglob("*.part")), "no half-written files left behind"
    mp4 = read_mp4(media / row.video_path)

    # codecs and container
    assert ("video", "h264") in mp4["streams"] and ("audio", "aac") in mp4["streams"]
    assert ("subtitle", "mov_text") in mp4["streams"]
    assert mp4["pix_fmt"] == "yuv420p" and mp4["size"] == (640, 360)
    assert mp4["faststart"], "moov must precede mdat for progressive playback"

    # duration: the event window plus context, stretched only as far as the narration needs
    window = (sc.end - sc.start).total_seconds() + settings.summarizer.context_before_s + \
        settings.summarizer.context_after_s
    last_cue_end = max(end for _, end, _ in mp4["cues"])
    assert window - 0.3 <= mp4["duration"] <= max(window, last_cue_end + 1.0) + 0.3
    assert last_cue_end <= mp4["duration"] + 0.05
    assert abs(row.duration_s - mp4["duration"]) < 0.3

    # subtitles: the mov_text track and the WebVTT sidecar both carry exactly the narration
    assert _norm(" ".join(text for _, _, text in mp4["cues"])) == _norm(row.narration)
    vtt = parse_webvtt((media / row.subtitles_path).read_text())
    assert [(round(c.start, 2), c.text) for c in vtt] == [(round(a, 2), t) for a, _, t in mp4["cues"]]
    assert "L3-S2" in row.narration and "E-117" in row.narration

    _check_speech(mp4)

    # frames come from the evidence: the camera panel shows the source frame in force at each time
    t0 = sc.start.timestamp() - settings.summarizer.context_before_s
    t1 = sc.end.timestamp() + settings.summarizer.context_after_s
    sources = [f for f in sc.frames if t0 - 1e-6 <= f.t <= t1 + 1e-6]
    times = np.array([f.t for f in sources])
    checked = 0
    for v, rgb in mp4["video_frames"][::3]:
        t = min(t0 + v, t1)
        j = max(0, int(np.searchsorted(times, t + 1e-3, side="right")) - 1)
        seen = _camera_patch(rgb)
        near = [np.abs(seen - np.array(sources[k].colour)).max() for k in (j - 1, j, j + 1) if 0 <= k < len(sources)]
        assert min(near) < 14, (v, seen, sources[j].colour)
        assert np.abs(seen - np.array(OTHER_ASSET_COLOUR)).max() > 60, "another asset's frame leaked in"
        checked += 1
    assert checked >= 30

    thumb = Image.open(media / row.thumbnail_path)
    assert thumb.format == "JPEG" and thumb.size == (640, 360)
    with capsys.disabled():
        print(f"\n[summarizer] event closed → summary ready: {latency:.2f} s; render {row.render_s:.2f} s for a "
              f"{row.duration_s:.1f} s video ({row.duration_s / row.render_s:.1f}x real time)")


@pytest.mark.slow
def test_bad_evidence_gives_a_partial_summary_that_says_what_is_missing(broker, make_topics, db_url, tmp_path):
    ks, topics = make_topics(4)
    sc = produce_scenario(broker.bootstrap, ks, topics, asset="L2-S1", partition=2, corrupt_frames=3)
    data = sc.data
    gone_audio = EvidenceRange(topic=topics.audio, partition=2, first=10_000, last=10_005)  # beyond the log end
    gone_logs = EvidenceRange(topic=f"{topics.logs}-deleted", partition=0, first=3, last=9)  # topic is gone
    data = data.model_copy(update={"evidence": {**data.evidence, "audio": [gone_audio], "logs": [gone_logs]}})
    settings = make_settings(tmp_path, ks, db_url)
    settings = settings.model_copy(update={"summarizer": settings.summarizer.model_copy(update={"read_timeout_s": 3.0})})
    factory = session_factory(make_engine(db_url))
    insert_event(factory, data)
    speaker = Speaker()
    with factory() as s:
        found = facts_mod.load(s, data.event_id)
    with EvidenceReader(ks, broker.bootstrap, LAYOUT.box_size(LAYOUT.camera), speaker.sample_rate, 3.0) as reader:
        result = Summarizer(settings, reader, speaker).summarize(found, factory)

    assert result.status == "partial"
    missing = {(m["modality"], m["reason"]) for m in result.missing}
    assert missing == {("frames", "corrupt"), ("audio", "gone"), ("logs", "gone")}
    corrupt = next(m for m in result.missing if m["reason"] == "corrupt")
    assert corrupt["lost"] == 3
    assert f"3 of {corrupt['total']} camera frames were unreadable" in result.narration
    assert "microphone audio of this event are no longer on the broker" in result.narration
    from schemas.tables import Summary

    with factory() as s:
        row = s.get(Summary, data.event_id)
    assert row.status == "partial" and len(row.missing) == 3
    mp4 = read_mp4(settings.media_dir / row.video_path)
    assert ("video", "h264") in mp4["streams"] and mp4["cues"]
    assert _norm(" ".join(t for _, _, t in mp4["cues"])) == _norm(row.narration)


@pytest.mark.slow
def test_call_centre_summary_speaks_about_sentiment_and_quotes_the_transcript(broker, make_topics, sqlite_url,
                                                                             tmp_path):
    ks, topics = make_topics(4)
    sc = produce_scenario(broker.bootstrap, ks, topics, asset="call-7f3a", partition=0, with_frames=False,
                          escalation=True, other_asset=None, duration_s=8.0)
    settings = make_settings(tmp_path, ks, sqlite_url)
    factory = session_factory(make_engine(sqlite_url))
    insert_event(factory, sc.data, call_curve=True)
    speaker = Speaker()
    with factory() as s:
        found = facts_mod.load(s, sc.event_id)
    assert found.call is not None and found.call.curve
    with EvidenceReader(ks, broker.bootstrap, LAYOUT.box_size(LAYOUT.camera), speaker.sample_rate, 5.0) as reader:
        result = Summarizer(settings, reader, speaker).summarize(found, factory)

    assert result.status == "ready", result.missing
    turned = (sc.start + timedelta(seconds=1)).strftime("%H:%M:%S")
    assert f"Call call-7f3a escalated at {sc.start:%H:%M:%S} UTC" in result.narration
    assert f"Sentiment turned at {turned} UTC" in result.narration
    assert "“This is the third time I am calling about the same invoice”" in result.narration
    assert "Overall, the call was negative." in result.narration
    mp4 = read_mp4(settings.media_dir / result.paths.video)
    assert ("audio", "aac") in mp4["streams"]
    _check_speech(mp4)
    # the transcript grows on screen: the main panel at the end differs from the start
    first, last = mp4["video_frames"][0][1], mp4["video_frames"][-1][1]
    x0, y0, x1, y1 = LAYOUT.camera
    assert np.abs(first[y0:y1, x0:x1].astype(int) - last[y0:y1, x0:x1].astype(int)).mean() > 2.0


@pytest.mark.slow
def test_summarize_command_renders_one_event_on_demand(broker, make_topics, sqlite_url, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from services.cli import app
    from services.settings import get_settings

    ks, topics = make_topics(4)
    sc = produce_scenario(broker.bootstrap, ks, topics, asset="L7-S4", partition=3, duration_s=3.0, before_s=2.0,
                          after_s=2.0, fps=5.0, other_asset=None)
    factory = session_factory(make_engine(sqlite_url))
    insert_event(factory, sc.data)
    monkeypatch.setenv("FW_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("FW_KAFKA_BOOTSTRAP", broker.bootstrap)
    monkeypatch.setenv("FW_MEDIA_ROOT", str(tmp_path / "media"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["summarize", "--event", sc.event_id])
        missing = CliRunner().invoke(app, ["summarize", "--event", "no-such-event"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    printed = [line for line in result.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert [p.rsplit(".", 1)[1] for p in printed] == ["mp4", "vtt", "jpg"]
    assert all(Path(p).exists() for p in printed)
    from schemas.tables import Summary

    with factory() as s:
        assert s.get(Summary, sc.event_id).status == "ready"
    assert missing.exit_code != 0 and "not in the events table" in str(missing.exception or missing.output)
