"""`fusionwatch ingest`: a real MP4 with audio (made here with PyAV) whose frames and audio chunks
line up within one frame, audio files chunked and resampled without seams, an HTTP stream, and log
files read once or followed through rotation — all decoding under the contract."""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from schemas.envelope import Accepted, Kind, decode, format_time, parse_time, wav_bytes
from schemas.errors import ConfigError
from services.ingest.common import IngestStats, check_asset, resolve_origin, source_uri
from services.ingest.logs import log_records
from services.ingest.media import MediaOptions, media_records, open_container

STEP_AT = 2.0  # the video turns bright and a 1 kHz tone starts at this media time


def make_mp4(path: Path, seconds: float = 4.0, fps: int = 25, sr: int = 48000) -> Path:
    """H.264 + AAC MP4: dark frames and silence until STEP_AT, then bright frames and a tone."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
        a = c.add_stream("aac", rate=sr)
        a.layout = "mono"
        for i in range(int(seconds * fps)):
            img = np.full((120, 160, 3), 230 if i / fps >= STEP_AT else 20, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        pos, total = 0, int(seconds * sr)
        while pos < total:
            m = min(1024, total - pos)
            t = (pos + np.arange(m)) / sr
            x = np.where(t >= STEP_AT, 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
            frame.sample_rate, frame.pts = sr, pos
            for p in a.encode(frame):
                c.mux(p)
            pos += m
        for p in a.encode():
            c.mux(p)
    return path


def decode_all(rows, now):
    out = {Kind.FRAME: [], Kind.AUDIO: [], Kind.LOG: []}
    for kind, key, value, headers in rows:
        got = decode(kind, key, value, headers, now=now)
        assert isinstance(got, Accepted), got
        out[kind].append((got.envelope.time, got))
    for v in out.values():
        v.sort(key=lambda x: x[0])
    return out


def check_alignment(frames, audio, origin: float, frame_period: float) -> None:
    """Each frame's brightness agrees with the audio at the frame's own timestamp, within one frame."""
    x = np.concatenate([a.payload.samples for _, a in audio])
    t_audio0 = audio[0][0]
    for (t0, a0), (t1, _) in zip(audio, audio[1:]):  # chunks are contiguous: times by sample count
        assert t1 - t0 == pytest.approx(a0.payload.duration_s, abs=1e-4)
    onset = t_audio0 + np.argmax(np.abs(x) > 0.1) / 16000
    first_bright = min(t for t, f in frames if f.payload.image.mean() > 128)
    assert onset == pytest.approx(origin + STEP_AT, abs=0.01)
    assert abs(first_bright - onset) < frame_period  # line up within one frame
    for t, f in frames:
        assert (f.payload.image.mean() > 128) == (t >= onset - 0.005), t - origin


@pytest.mark.slow
def test_mp4_with_audio_lines_up_through_the_broker(broker, make_topics, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from services.cli import app
    from services.settings import get_settings
    from tests.test_simulator import read_topics

    ks, topics = make_topics(partitions=2)
    monkeypatch.setenv("FW_KAFKA__TOPIC_PREFIX", ks.topic_prefix)
    monkeypatch.setenv("FW_KAFKA__PARTITIONS", str(ks.partitions))
    get_settings.cache_clear()
    mp4 = make_mp4(tmp_path / "line3-cam2.mp4")
    origin = round(time.time() - 600, 3)
    r = CliRunner().invoke(app, ["ingest", "video", str(mp4), "--asset", "L3-S2", "--fps", "25", "--resample", "16000",
                                 "--start-time", format_time(origin), "--bootstrap", broker.bootstrap, "--json"])
    get_settings.cache_clear()
    assert r.exit_code == 0, (r.output, r.exception)
    got = read_topics(broker.bootstrap, ks, topics, 108)
    kind_of = {topics.frames: Kind.FRAME, topics.audio: Kind.AUDIO, topics.logs: Kind.LOG}
    data = decode_all([(kind_of[m.topic], m.key, m.value, m.headers) for m in got], now=time.time())
    frames, audio = data[Kind.FRAME], data[Kind.AUDIO]
    assert len(frames) == 100 and len(audio) == 8
    assert frames[0][0] == pytest.approx(origin, abs=1e-3)
    assert {f.envelope.source for _, f in frames} == {"/ingest/video/line3-cam2.mp4"}
    assert all(a.payload.original_rate == 16000 for _, a in audio)  # resampled from 48 kHz by ingest
    assert sum(a.payload.duration_s for _, a in audio) == pytest.approx(4.0, abs=0.03)
    check_alignment(frames, audio, origin, 1 / 25)


def test_video_sampled_to_target_fps_keeps_alignment(tmp_path):
    mp4 = make_mp4(tmp_path / "a.mp4")
    origin = 1_800_000_000.0
    with open_container(str(mp4), MediaOptions()) as c:
        rows = [(k, r.key, r.value, r.headers) for k, r, _ in media_records(c, str(mp4), "cam-1", origin,
                                                                          MediaOptions(fps=4, resample=16000, max_width=80))]
    data = decode_all(rows, now=origin)
    frames = data[Kind.FRAME]
    assert 15 <= len(frames) <= 17
    gaps = np.diff([t for t, _ in frames])
    assert gaps.min() >= 0.2 - 1e-6 and gaps.max() <= 0.25 + 0.04 + 1e-6
    assert frames[0][1].payload.width == 80  # scaled down to --max-width, aspect kept
    assert frames[0][1].payload.height == 60
    check_alignment(frames, data[Kind.AUDIO], origin, 0.25)


def _tone(sr: int, seconds: float, channels: int = 2) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def test_audio_files_chunked_and_resampled_without_seams(tmp_path):
    import torch
    import torchaudio.functional as AF

    signal = _tone(44100, 2.3)
    wav = tmp_path / "mic.wav"
    wav.write_bytes(wav_bytes(signal, 44100))
    flac = tmp_path / "mic.flac"
    with av.open(str(flac), "w") as c:
        s = c.add_stream("flac", rate=44100)
        s.layout = "stereo"
        pcm = (np.clip(signal, -1, 1) * 32767).astype("<i2")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 44100
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    pcm16 = np.clip(signal, -1, 1) * 32767 // 1 / 32768  # what a 16-bit file holds
    expected = AF.resample(torch.from_numpy(pcm16.mean(axis=1)), 44100, 16000).numpy()
    origin = 1_800_000_000.0
    for path in (wav, flac):
        opts = MediaOptions(video=False, chunk_s=0.5, resample=16000)
        with open_container(str(path), opts) as c:
            rows = [(k, r.key, r.value, r.headers) for k, r, _ in media_records(c, str(path), "mic-1", origin, opts)]
        audio = decode_all(rows, now=origin)[Kind.AUDIO]
        assert [round(t - origin, 6) for t, _ in audio] == [0.0, 0.5, 1.0, 1.5, 2.0]
        assert [a.payload.channels for _, a in audio] == [2] * 5  # channels kept; the consumer mixes down
        assert [len(a.payload.samples) for _, a in audio] == [8000] * 4 + [4800]
        x = np.concatenate([a.payload.samples for _, a in audio])
        # chunk-wise resampling with context equals resampling the whole file (no seams at chunk edges)
        err = np.abs(x[:-200] - expected[: len(x) - 200])
        assert err.max() < 2e-3, (path.suffix, err.max(), np.argmax(err))


def test_http_stream_through_pyav(tmp_path):
    make_mp4(tmp_path / "cam.mp4", seconds=2.5)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cam.mp4"
        opts = MediaOptions(fps=4, resample=16000)
        with open_container(url, opts) as c:
            rows = [(k, r.key, r.value, r.headers) for k, r, _ in media_records(c, url, "cam-1", 1.8e9, opts)]
    finally:
        server.shutdown()
    data = decode_all(rows, now=1.8e9)
    assert len(data[Kind.FRAME]) >= 9 and len(data[Kind.AUDIO]) == 5
    assert data[Kind.FRAME][0][1].envelope.source == url


def test_source_uris_never_leak_credentials_and_assets_are_checked():
    assert source_uri("video", "rtsp://admin:s3cret@10.0.0.7:554/stream1?token=abc") == "rtsp://10.0.0.7:554/stream1"
    assert source_uri("logs", "/var/log/plc/line3.log") == "/ingest/logs/line3.log"
    assert check_asset("L3-S2") == "L3-S2"
    for bad in ("", "L3 S2", "-L3", "x" * 65, "ünï"):
        with pytest.raises(ConfigError, match="asset"):
            check_asset(bad)
    assert resolve_origin("2026-03-01T08:00:00Z") == parse_time("2026-03-01T08:00:00Z")
    assert resolve_origin("metadata", "2026-03-01T08:00:00.000000Z") == parse_time("2026-03-01T08:00:00Z")
    with pytest.raises(ConfigError, match="RFC 3339"):
        resolve_origin("yesterday")


def test_log_file_batch(tmp_path):
    now = time.time()
    t1, t2 = format_time(now - 30), format_time(now - 20)
    bracketed = format_time(now - 40)[:23].replace("T", " ").replace(".", ",")  # 2026-11-26 05:24:14,250
    log = tmp_path / "plc.log"
    long_line = "W999 " + "é" * 9000  # 18 KB of UTF-8: over the 16 KiB contract limit
    log.write_bytes("\n".join([
        f"{t1} INFO motor started",
        f'{{"msg": "cycle 7 complete", "level": "INFO", "code": "C100", "serial": "SN-7", "time": "{t2}"}}',
        "",
        '{"message": "json with message and epoch ms", "ts": %d}' % int((now - 10) * 1000),
        "no timestamp here",
        f"[{bracketed}] WARN bracketed, comma-millisecond time without a zone (taken as UTC)",
        long_line,
    ]).encode() + b"\nbad bytes \xff\xfe here\n")
    stats = IngestStats(str(log), "L3-S2")
    recs = list(log_records(log, "L3-S2", stats))
    assert len(recs) == 7
    results = [decode(k, r.key, r.value, r.headers, now=now) for k, r, _ in recs]
    assert all(isinstance(x, Accepted) for x in results), results
    times = [t for _, _, t in recs]
    assert times[0] == pytest.approx(now - 30, abs=1e-3) and times[1] == pytest.approx(now - 20, abs=1e-3)
    assert times[2] == pytest.approx(now - 10, abs=1e-2) and now - 1 < times[3] <= time.time()
    assert times[4] == pytest.approx(now - 40, abs=2e-3)
    assert results[1].payload.code == "C100" and results[1].payload.serial == "SN-7"
    assert results[2].payload.msg == "json with message and epoch ms"
    assert results[0].payload.msg == "INFO motor started"  # the timestamp moved into ce_time
    assert results[5].payload.msg.endswith("…[truncated]") and len(recs[5][1].value) <= 16 * 1024
    assert "\ufffd" in results[6].payload.msg
    assert stats.truncated_lines == 1 and stats.replaced_bytes_lines == 1
    with pytest.raises(ConfigError, match="no timestamp"):
        list(log_records(log, "L3-S2", IngestStats("x", "y"), time_source="line"))


def test_log_follow_survives_rotation_truncation_and_partial_lines(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("old line, skipped when following from the end\n")
    stats = IngestStats(str(log), "L1-S1")
    stop = threading.Event()
    got: list[str] = []

    def follow():
        for kind, rec, _ in log_records(log, "L1-S1", stats, follow=True, stop=stop, poll_s=0.05):
            got.append(decode(kind, rec.key, rec.value, rec.headers, now=time.time()).payload.msg)

    thread = threading.Thread(target=follow)
    thread.start()

    def wait_for(n):
        deadline = time.monotonic() + 20
        while len(got) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(got) >= n, got

    time.sleep(0.3)
    with open(log, "a") as fh:
        fh.write("one\n")
        fh.flush()
        fh.write("tw")  # half a line: must wait for its newline
        fh.flush()
        wait_for(1)
        time.sleep(0.3)
        assert got == ["one"]
        fh.write("o\n")
    wait_for(2)
    os.rename(log, tmp_path / "app.log.1")  # logrotate: move, then a new file
    with open(tmp_path / "app.log.1", "a") as fh:
        fh.write("three (written to the old file before the switch)\n")
    log.write_text("four\n")
    wait_for(4)
    log.write_text("")  # copytruncate
    time.sleep(0.3)
    with open(log, "a") as fh:
        fh.write("five\n")
    wait_for(5)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert got == ["one", "two", "three (written to the old file before the switch)", "four", "five"]


@pytest.mark.slow
def test_ingest_logs_cli_round_trip(broker, make_topics, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from services.cli import app
    from services.settings import get_settings
    from tests.test_simulator import read_topics

    ks, topics = make_topics(partitions=2)
    monkeypatch.setenv("FW_KAFKA__TOPIC_PREFIX", ks.topic_prefix)
    monkeypatch.setenv("FW_KAFKA__PARTITIONS", str(ks.partitions))
    get_settings.cache_clear()
    log = tmp_path / "mes.log"
    log.write_text("".join(f"{format_time(time.time() - 5 + i)} cycle {i} complete\n" for i in range(5)))
    r = CliRunner().invoke(app, ["ingest", "logs", str(log), "--asset", "L2-S1", "--bootstrap", broker.bootstrap])
    get_settings.cache_clear()
    assert r.exit_code == 0, (r.output, r.exception)
    got = read_topics(broker.bootstrap, ks, topics, 5)
    results = [decode(Kind.LOG, m.key, m.value, m.headers, now=time.time()) for m in got]
    assert sorted(x.payload.msg for x in results) == sorted(f"cycle {i} complete" for i in range(5))
    assert {m.topic for m in got} == {topics.logs} and {x.envelope.source for x in results} == {"/ingest/logs/mes.log"}
