"""Live inputs that survive: a real MPEG-TS stream (a simulated station's camera and microphone,
encoded with PyAV/FFmpeg and served over TCP by a separate process) is cut and comes back while
the station's PLC log keeps flowing; `fusionwatch ingest video` reconnects, its records stay on
the wall clock, and the real monitor with the shipped checkpoint sees the outage as windows
without frames and audio and opens no event across it. Addresses that refuse, stay silent or
can never work end in one sentence; an MP4 from an HTTP server without range requests too."""

from __future__ import annotations

import functools
import http.server
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from schemas.errors import ConfigError
from services.ingest.live import Backoff, LiveClock, RetryPolicy, classify

ROOT = Path(__file__).resolve().parents[1]
ASSET = "L1-S1"


# ── the camera: a simulated station's frames and sound as a live MPEG-TS stream ─────────────────

def serve_camera(port: int, plant_start: float, seed: int, seconds: float) -> None:
    """Listen on tcp://127.0.0.1:port; once a client connects, stream what the station's camera and
    microphone capture from now on, in real time, for `seconds` (H.264 + AAC, 2 s GOP like a camera)."""
    import av
    import numpy as np
    from PIL import Image

    from schemas.envelope import Kind
    from services.simulator.plant import Plant

    out = av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts", options={"flush_packets": "1"})
    zero = time.time()  # a client connected: media time zero of this stream
    video = out.add_stream("libx264", rate=4, options={"tune": "zerolatency", "preset": "ultrafast", "g": "8"})
    video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
    video.codec_context.time_base = Fraction(1, 1000)
    audio = out.add_stream("aac", rate=16000)
    audio.layout = "mono"
    plant = Plant([ASSET], seed=seed, start_time=plant_start, faults="none")
    for _ in plant.records(max(0.0, zero - plant_start)):
        pass  # what the station did before this client connected
    try:
        while time.time() < zero + seconds:
            for kind, rec in plant.records(1.0):
                if kind is Kind.LOG:
                    continue
                t = _time(rec)
                time.sleep(max(0.0, t - time.time()))
                if kind is Kind.FRAME:
                    img = np.asarray(Image.open(io.BytesIO(rec.value)).convert("RGB"))
                    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                    frame.pts, frame.time_base = int(round((t - zero) * 1000)), Fraction(1, 1000)
                    packets = video.encode(frame)
                else:
                    samples = np.frombuffer(rec.value[44:], "<i2").astype(np.float32) / 32767  # the plant's PCM WAV
                    chunk = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
                    chunk.sample_rate, chunk.pts = 16000, int(round((t - zero) * 16000))
                    packets = audio.encode(chunk)
                for p in packets:
                    out.mux(p)
    finally:
        out.close()


def _time(rec) -> float:
    from schemas.envelope import parse_time

    return parse_time(dict(rec.headers)["ce_time"].decode())


def _start_camera(port: int, plant_start: float, seed: int, seconds: float) -> subprocess.Popen:
    code = f"from tests.test_ingest_live import serve_camera; serve_camera({port}, {plant_start!r}, {seed}, {seconds})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fw(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services.cli", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "200", **(env or {})}, **kw)


class RecordingScorer:
    """The shipped model, noting for each window it scores which modalities were present."""

    def __init__(self, inner):
        self.inner = inner
        self.windows: list[tuple[float, float, dict[str, bool], float, float]] = []

    def score(self, windows):
        out = self.inner.score(windows)
        self.windows.extend((w.start, w.end, dict(s.present), float(s.score), float(s.threshold))
                            for w, s in zip(windows, out))
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


# ── the stream cut and back ──────────────────────────────────────────────────────────────────────

def _busy_station(start: float) -> int:
    """A seed whose station logs at least every 1.9 s while the camera is out: a station that idles
    logs nothing, and a window with no record at all is skipped, not scored without frames."""
    import numpy as np

    from services.simulator.plant import Plant

    gaps = {}
    for seed in range(1, 60):
        plant = Plant([ASSET], seed=seed, start_time=start, faults="none")
        times = [_time(r) - start for k, r in plant.records(40.0) if k.value == "logs"]
        times = [t for t in times if 4.0 <= t <= 40.0]
        gaps[seed] = float(np.diff(times).max()) if len(times) > 1 else 99.0
        if gaps[seed] <= 1.9:
            return seed
    return min(gaps, key=gaps.get)


SEGMENT_S, OUTAGE_S = 8.0, 5.0


@pytest.mark.slow
def test_a_live_stream_cut_and_back_reconnects_on_the_wall_clock_without_a_false_event(
        broker, make_topics, unique_group, sqlite_url):
    from sqlalchemy import select

    from models.scorer import AnomalyScorer
    from schemas.tables import Event
    from services import db
    from services.kafka import make_producer
    from services.monitor.service import Monitor
    from services.profiles.factory import SHIPPED_CHECKPOINT as SHIPPED_MODEL
    from services.settings import Settings
    from services.simulator.plant import Plant
    from tests.support.streams import produce

    ks, topics = make_topics(partitions=2)
    plant_start = round(time.time(), 3)
    seed = _busy_station(plant_start)
    engine = db.make_engine(sqlite_url)
    scorer = RecordingScorer(AnomalyScorer.load(SHIPPED_MODEL, device="cpu"))
    monitor = Monitor(Settings(kafka=ks), broker.bootstrap, engine, scorer, topics, group_id=unique_group())
    stop_monitor, stop_logs = threading.Event(), threading.Event()
    threading.Thread(target=monitor.run, args=(stop_monitor,), daemon=True).start()

    def plc_log() -> None:  # the station's PLC keeps logging through the camera's outage
        producer = make_producer(ks, broker.bootstrap)
        plant = Plant([ASSET], seed=seed, start_time=plant_start, faults="none")
        while not stop_logs.is_set():
            lines = [(k, r) for k, r in plant.records(1.0) if k.value == "logs"]
            stop_logs.wait(max(0.0, plant.time - time.time()))
            produce(producer, topics, lines)
        producer.close()

    logger = threading.Thread(target=plc_log, daemon=True)
    logger.start()
    port = _free_port()
    camera = _start_camera(port, plant_start, seed, 60)
    env = {"FW_KAFKA__TOPIC_PREFIX": ks.topic_prefix, "FW_KAFKA__PARTITIONS": str(ks.partitions)}
    ingest = _fw("ingest", "video", f"tcp://127.0.0.1:{port}", "--asset", ASSET, "--fps", "4", "--timeout", "3",
                 "--retry-for", "30", "--bootstrap", broker.bootstrap, "--json", env=env)
    try:
        time.sleep(SEGMENT_S)
        camera.kill()  # the sender dies mid-stream
        camera.wait()
        cut = time.time()
        time.sleep(OUTAGE_S)
        back = time.time()
        camera = _start_camera(port, plant_start, seed, 60)
        time.sleep(SEGMENT_S)
        ingest.send_signal(signal.SIGTERM)
        out, err = ingest.communicate(timeout=60)
    finally:
        ingest.kill()
        camera.kill()
        camera.wait()
    time.sleep(2.0)
    stop_logs.set()
    logger.join(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not scorer.windows or scorer.windows[-1][1] < back + SEGMENT_S - 3):
        time.sleep(0.5)
    time.sleep(3.0)  # the quiet asset's last windows flush
    stop_monitor.set()

    assert ingest.returncode == 0, err[-3000:]
    assert "the stream ended" in err and "connecting again" in err and "media flowing again" in err, err[-3000:]
    assert "Traceback" not in err
    import json

    stats = json.loads(out)
    assert stats["by_kind"]["frames"] >= 4 * SEGMENT_S and stats["by_kind"]["audio"] >= 2 * SEGMENT_S

    # the frames' event times, as the monitor saw them: monotonic, on the wall clock, with the outage as a gap
    frames = sorted((s, e) for s, e, present, *_ in scorer.windows if present.get("frames"))
    windows = sorted(scorer.windows)
    assert any(e <= cut for s, e in frames) and any(s >= back for s, e in frames), "frames before and after the cut"
    gap = [w for w in windows if w[0] >= cut and w[1] <= back]
    assert len(gap) >= 2, windows
    for s, _, present, *_ in gap:  # the outage: windows without the camera's frames and sound
        assert not present.get("frames") and not present.get("audio"), (s - cut, present)
    assert any(p.get("logs") for _, _, p, *_ in gap)
    assert max(e for s, e in frames) <= time.time() + 1  # never stamped ahead of the clock

    # no false event across the gap (nor anywhere in this normal run)
    with db.session_factory(engine)() as s:
        events = s.scalars(select(Event)).all()
    engine.dispose()
    worst = max(windows, key=lambda w: w[3] / w[4])
    print(f"\nlive stream cut and back: {len(windows)} windows, {len(gap)} in the outage without frames/audio, "
          f"{stats['by_kind']['frames']} frames, highest score/threshold {worst[3] / worst[4]:.2f}; "
          f"monitor late records {monitor.stats.late}")
    assert not events, [(e.kind, e.start_time, e.peak_score, e.threshold) for e in events]


# ── addresses that refuse, stay silent, or can never work ────────────────────────────────────────

def _one_sentence(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    error = " ".join(ln.strip() for ln in lines[next(i for i, ln in enumerate(lines) if ln.startswith("error:")):])
    return error


def test_a_refused_or_silent_address_ends_in_one_sentence_within_the_retry_budget(broker):
    silent = socket.socket()  # accepts connections (the kernel does) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        cases = {f"tcp://127.0.0.1:{_free_port()}": "connection refused (nothing listens on port",
                 f"rtsp://127.0.0.1:{silent.getsockname()[1]}/stream1": "no answer within 1 s"}
        procs = {url: _fw("ingest", "video", url, "--asset", ASSET, "--timeout", "1", "--retry-for", "3",
                          "--bootstrap", broker.bootstrap) for url in cases}
        for url, reason in cases.items():
            _, err = procs[url].communicate(timeout=60)
            assert procs[url].returncode == 2, err
            sentence = _one_sentence(err)
            assert sentence.startswith(f"error: gave up on {url}") and reason in sentence, sentence
            assert "check that the device at 127.0.0.1 is powered and reachable" in sentence
            assert err.count("connecting again in") >= 2, err  # it did retry, and said so
    finally:
        silent.close()


class _Answers(http.server.BaseHTTPRequestHandler):
    """An HTTP camera that answers every request with the status in its path."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802
        self.requests.append(self.path)
        code = int(self.path.strip("/").split("/")[0])
        self.send_response(code)
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="camera"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_failures_no_retry_can_fix_end_at_once_in_one_sentence(broker):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://admin:secret@127.0.0.1:{server.server_address[1]}"
    try:
        cases = {f"{base}/401/stream": "refused the credentials (401)",
                 f"{base}/404/stream": "has no stream at that path (404)",
                 "rtmpx://cam-7.plant.local/live": "'rtmpx://' is no stream address fusionwatch reads"}
        for url, expected in cases.items():
            p = _fw("ingest", "video", url, "--asset", ASSET, "--retry-for", "30", "--bootstrap", broker.bootstrap)
            _, err = p.communicate(timeout=60)
            sentence = _one_sentence(err)
            assert p.returncode == 2 and expected in sentence, sentence
            assert "secret" not in err and "connecting again" not in err, err  # no retries, no leaked password
        # no retries: one request (two for 401: FFmpeg asks again with the credentials the URL carries)
        assert _Answers.requests.count("/404/stream") == 1 and _Answers.requests.count("/401/stream") == 2
    finally:
        server.shutdown()


def test_an_mp4_from_a_server_without_range_requests_ends_in_one_sentence(broker, tmp_path):
    from tests.test_ingest import make_mp4

    make_mp4(tmp_path / "cam.mp4", seconds=40.0)  # its index (moov) comes last, as PyAV and most cameras write it
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))  # no Range support
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cam.mp4"
        p = _fw("ingest", "video", url, "--asset", ASSET, "--bootstrap", broker.bootstrap)
        _, err = p.communicate(timeout=120)
    finally:
        server.shutdown()
    sentence = _one_sentence(err)
    assert p.returncode == 2, err
    assert "does not answer range requests" in sentence and "-movflags +faststart" in sentence, sentence


# ── the backoff and the clock, alone ─────────────────────────────────────────────────────────────

def test_backoff_doubles_with_jitter_up_to_its_cap_and_within_its_budget():
    import random

    b = Backoff(RetryPolicy(retry_for_s=0, first_delay_s=0.5, max_delay_s=8.0, jitter=0.25), random.Random(1))
    delays = [b.next_delay() for _ in range(10)]
    nominal = [min(8.0, 0.5 * 2 ** i) for i in range(10)]
    assert all(0.75 * n <= d <= 1.25 * n for d, n in zip(delays, nominal)), delays
    assert len({round(d / n, 6) for d, n in zip(delays, nominal)}) > 1  # jittered, not in step
    b.media_flowed()
    assert b.next_delay() <= 0.625  # media flowed: from the start again
    spent = Backoff(RetryPolicy(retry_for_s=0.01, first_delay_s=0.5), random.Random(1))
    spent.down_since = time.monotonic() - 1.0
    assert spent.next_delay() is None
    with pytest.raises(ConfigError):
        RetryPolicy(retry_for_s=-1)


def test_a_live_inputs_connection_state_is_exported_without_its_credentials():
    from services.ingest.live import input_label
    from services.observability.metrics import REGISTRY

    src = "rtsp://viewer:s3cret@cam7.plant.example:8554/stream1"
    assert input_label(src) == "rtsp://cam7.plant.example:8554"
    labels = {"asset": "L9-S7", "input": input_label(src)}
    backoff = Backoff(RetryPolicy(), asset="L9-S7", source=src)
    before = REGISTRY.get_sample_value("fusionwatch_ingest_reconnect_attempts_total", labels) or 0.0
    backoff.next_delay()
    backoff.next_delay()
    assert REGISTRY.get_sample_value("fusionwatch_ingest_reconnect_attempts_total", labels) == before + 2
    assert REGISTRY.get_sample_value("fusionwatch_ingest_connected", labels) == 0
    backoff.media_flowed()
    assert REGISTRY.get_sample_value("fusionwatch_ingest_connected", labels) == 1
    assert not any("s3cret" in str(s.labels) for m in REGISTRY.collect() for s in m.samples)


def test_live_clock_never_goes_back_nor_ahead_and_follows_a_slow_camera():
    now = [1000.0]
    clock = LiveClock(resync_s=10.0, max_lag_s=1.0, now=lambda: now[0])
    clock.connected(1000.0)
    stamps = []
    for i in range(40):  # 10 s of frames at 4 fps, arriving as captured
        now[0] = 1000.0 + i / 4
        stamps.append(clock.origin_for(i / 4) + i / 4)
    now[0] = 1015.0  # 5 s offline; the restarted stream's PTS begin at zero again
    clock.connected(1015.0)
    assert clock.origin_for(0.0) == 1015.0 > stamps[-1]  # on the wall clock: later, never back at 1000
    now[0] = 1017.0
    assert clock.origin_for(2.0) + 2.0 == 1017.0  # and the stream's own clock spaces its records
    now[0] = 1020.0
    assert clock.origin_for(30.0) + 30.0 <= now[0]  # a fast camera clock: never ahead of ours
    slow = LiveClock(resync_s=10.0, max_lag_s=1.0, now=lambda: now[0])
    slow.connected(0.0)
    for i in range(200):  # a camera whose clock runs 2 % slow: 4 s behind after 200 s
        now[0] = float(i)
        t = slow.origin_for(i * 0.98) + i * 0.98
    assert now[0] - t < 2.5  # re-anchored every 10 s instead of drifting
    assert classify(Exception("x"), "tcp://h:1", 0.0, 1.0).permanent is False
