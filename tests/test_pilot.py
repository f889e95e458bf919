"""A pilot on real sources: `fusionwatch up --sources sources.toml` runs one ingest per camera,
microphone and log file instead of the simulator; the file is typed and checked (one sentence for
what is wrong, before anything starts), and a real `up` fed a recording, a WAV and a followed log
(made here) scores the asset's windows."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from schemas.envelope import wav_bytes
from schemas.errors import ConfigError
from services.stack.sources import check_sources, load_sources

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "docs" / "samples" / "sources.toml"


def test_the_sample_sources_file_loads_and_names_what_is_missing(monkeypatch):
    monkeypatch.setenv("CAM_L1S1_PASSWORD", "pw")
    sources = load_sources(SAMPLE)
    assert list(sources.assets) == ["L1-S1", "L1-S2"] and sources.count() == 5
    cam = sources.assets["L1-S1"].cameras[0]
    assert cam.url == "rtsp://fusionwatch:pw@10.20.1.11:554/Streaming/Channels/102" and cam.fps == 4
    assert sources.assets["L1-S2"].cameras[0].url == str(SAMPLE.parent / "recordings" / "line1-station2.mp4")
    with pytest.raises(ConfigError, match=r"^asset L1-S1: /var/log/plc/line1-station1.log does not exist"):
        check_sources(sources)  # the pilot's files are not on this machine: the first one is named
    monkeypatch.delenv("CAM_L1S1_PASSWORD")
    with pytest.raises(ConfigError, match=r"uses \$\{CAM_L1S1_PASSWORD\}, which is not set"):
        load_sources(SAMPLE)


@pytest.mark.parametrize("text, expected", [
    ('[assets.A1]\n[[assets.A1.cameras]]\nurl = "x.mp4"\nfsp = 4\n', r"assets\.A1\.cameras\.0\.fsp: Extra inputs"),
    ('[assets."L1 S1"]\n[[assets."L1 S1".logs]]\npath = "a.log"\n', r"'L1 S1' is not an asset id"),
    ('[assets.A1]\n', r"asset A1 lists no camera, microphone or log"),
    ('retry_for_s = -1\n[assets.A1]\n[[assets.A1.logs]]\npath = "a.log"\n', r"retry_for_s: Input should be greater"),
    ('[assets.A1\n', r"is not valid TOML"),
])
def test_a_bad_sources_file_is_refused_in_one_sentence(tmp_path, text, expected):
    f = tmp_path / "sources.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_sources(f)


@pytest.mark.parametrize("url, expected", [
    ("rtmpx://cam/live", r"'rtmpx://' is no stream address fusionwatch reads"),
    ("rtsp:///stream1", r"names no host"),
    ("missing.mp4", r"missing.mp4 does not exist; check the path"),
])
def test_each_source_is_checked_before_anything_starts(tmp_path, url, expected):
    f = tmp_path / "sources.toml"
    f.write_text(f'[assets.A1]\n[[assets.A1.cameras]]\nurl = "{url}"\n')
    with pytest.raises(ConfigError, match=rf"^asset A1: .*{expected}"):
        check_sources(load_sources(f))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(text: str, name: str, **labels: str) -> float:
    sel = "".join(rf'(?=[^}}]*{k}="{re.escape(v)}")' for k, v in labels.items())
    total = 0.0
    for m in re.finditer(rf"^{name}(?:\{{{sel}[^}}]*\}})? ([0-9.e+-]+)$", text, re.M):
        total += float(m.group(1))
    return total


@pytest.mark.slow
def test_up_with_sources_ingests_a_recording_a_microphone_and_a_log_and_scores_the_windows(tmp_path):
    from tests.test_ingest import make_mp4

    make_mp4(tmp_path / "station.mp4", seconds=12.0)
    t = np.arange(16000 * 12) / 16000
    (tmp_path / "mic.wav").write_bytes(wav_bytes(0.2 * np.sin(2 * np.pi * 220 * t), 16000))
    plc = tmp_path / "plc.log"
    plc.write_text("2026-12-05T08:00:00Z INFO cycle start S100\n")  # read from the start: an old time...
    (tmp_path / "sources.toml").write_text(
        'retry_for_s = 30\n'
        '[assets.P1-S1]\n'
        '[[assets.P1-S1.cameras]]\nurl = "station.mp4"\n'
        '[[assets.P1-S1.microphones]]\nurl = "mic.wav"\n'
        '[[assets.P1-S1.logs]]\npath = "plc.log"\ntime_source = "now"\nfrom_start = true\n')  # ...stamped as read
    metrics_port = _free_port()
    env = {**os.environ, "COLUMNS": "200", "FW_VAR_DIR": str(tmp_path / "var"), "FW_BROKER__PORT": str(_free_port()),
           "FW_METRICS__BASE_PORT": str(metrics_port), "FW_KAFKA__PARTITIONS": "2"}
    env.pop("FW_KAFKA_BOOTSTRAP", None)
    up = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--sources", str(tmp_path / "sources.toml"),
                           "--duration", "30", "--no-api"], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stop = threading.Event()

    def plc_writes() -> None:  # the PLC keeps logging while the pilot runs
        n = 0
        while not stop.wait(0.4):
            with plc.open("a") as f:
                f.write(f"INFO cycle {n} done S101 part ok\n")
            n += 1

    writer = threading.Thread(target=plc_writes, daemon=True)
    writer.start()
    scraped = ""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and up.poll() is None:
            time.sleep(2.0)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
                    scraped = r.read().decode()
            except OSError:
                continue
        out = up.communicate(timeout=60)[0]
    finally:
        stop.set()
        up.kill()
    assert up.returncode == 0, out[-4000:]
    assert "ingesting 3 sources of 1 assets (P1-S1)" in out and "stopped cleanly" in out, out[-4000:]
    assert "Traceback" not in out
    print(f"\nup --sources: {_metric(scraped, 'fusionwatch_windows_scored_total'):.0f} windows scored; records "
          + ", ".join(f"{m} {_metric(scraped, 'fusionwatch_asset_records_total', asset='P1-S1', modality=m):.0f}"
                      for m in ("frames", "audio", "logs")))
    for modality in ("frames", "audio", "logs"):
        assert _metric(scraped, "fusionwatch_asset_records_total", asset="P1-S1", modality=modality) > 0, modality
    assert _metric(scraped, "fusionwatch_windows_scored_total") >= 10
    assert _metric(scraped, "fusionwatch_windows_modality_present_total", modality="frames") >= 5
    positions = list((tmp_path / "var" / "ingest" / "positions").glob("P1-S1-plc.log-*.json"))
    assert positions, "the followed log's position is kept"
