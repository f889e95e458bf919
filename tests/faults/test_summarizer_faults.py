"""The summarizer killed mid-render, and the media disk full.

Both run the real `fusionwatch summarize` service as a subprocess against the reference run's
events (published to fw.events through the monitor's outbox relay) and its evidence on the broker.

- SIGKILL while the first MP4 is being encoded: the final file name must not exist (the renderer
  writes a hidden `.NAME.part` file and renames it into place), no `summaries` row may point at
  anything, and a restarted service must render every event again (its Kafka offset was never
  committed), each MP4 decoding end to end with PyAV; the restart sweeps the killed render's old
  `.part` file.
- media on a full filesystem (a 160 KiB tmpfs mounted over the media root — needs root; skipped
  with the reason otherwise): every render fails with ENOSPC, the service records `failed` rows
  saying so and keeps consuming (no crash), no partial file is left visible, and once there is
  space `fusionwatch summarize --event` renders the same event completely.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from schemas.tables import Summary
from services import db
from services.kafka import make_producer
from services.monitor.outbox import OutboxRelay
from tests.faults.procs import ROOT, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]
FUSIONWATCH = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "fusionwatch")


def prepare(broker, reference, tmp_path: Path) -> tuple[str, Path]:
    """A private copy of the reference database, its events published to the scenario's fw.events."""
    path = tmp_path / "events.db"
    shutil.copy(reference.url.split("///", 1)[1], path)
    url = f"sqlite:///{path}"
    engine = db.make_engine(url)
    inp = reference.input
    # (re)publish every outbox row; each test reads fw.events with its own consumer group
    relay = OutboxRelay(engine, make_producer(inp.kafka, broker.bootstrap), inp.topics.events)
    with engine.begin() as c:
        from sqlalchemy import update

        from schemas.tables import Outbox

        c.execute(update(Outbox).values(sent_at=None))
    assert relay.relay_once() == len(reference.outbox)
    relay.producer.close()
    engine.dispose()
    return url, tmp_path / "media"


def start_summarizer(broker, reference, url: str, media: Path, group: str, log: Path) -> subprocess.Popen:
    inp = reference.input
    env = os.environ | {"FW_KAFKA__TOPIC_PREFIX": inp.prefix, "FW_KAFKA__PARTITIONS": str(inp.kafka.partitions),
                        "FW_SUMMARIZER__GROUP_ID": group, "FW_SUMMARIZER__READ_TIMEOUT_S": "3",
                        "FW_VAR_DIR": str(media.parent / "var")}
    return subprocess.Popen([FUSIONWATCH, "summarize", "--bootstrap", broker.bootstrap, "--database-url", url,
                             "--media-root", str(media), "--no-metrics"],
                            cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def summaries(url: str) -> dict[str, Summary]:
    engine = db.make_engine(url)
    try:
        with db.session_factory(engine)() as s:
            return {r.event_id: r for r in s.scalars(select(Summary))}
    finally:
        engine.dispose()


def closed_event_ids(reference) -> set[str]:
    return {e[0] for e in reference.events if e[4] == "closed"}


def visible_files(media: Path) -> list[Path]:
    return sorted(p for p in media.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_summarizer_killed_mid_render_leaves_no_half_file_and_renders_again(broker, reference, tmp_path):
    from tests.test_summarizer_support import read_mp4

    url, media = prepare(broker, reference, tmp_path)
    group = f"sum-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "summarizer.log"
    proc = start_summarizer(broker, reference, url, media, group, log)
    try:
        # kill the moment the first MP4 is half written
        wait_for(lambda: list(media.rglob(".*.mp4.*.part")) or proc.poll() is not None, 120,
                 "the first render to start", interval_s=0.02)
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    leftovers = list(media.rglob("*.part"))
    assert leftovers and all(p.name.startswith(".") for p in leftovers)  # hidden, never a final name
    assert not [p for p in visible_files(media) if p.suffix == ".mp4"], "a half-written MP4 is visible"
    assert not any(r.video_path for r in summaries(url).values())
    old = time.time() - 2 * 3600  # as if the kill was two hours ago: the restart sweeps it
    for p in leftovers:
        os.utime(p, (old, old))

    proc = start_summarizer(broker, reference, url, media, group, log)  # same group: the record comes again
    try:
        wanted = closed_event_ids(reference)
        wait_for(lambda: set(summaries(url)) >= wanted or proc.poll() is not None, 240,
                 "every event to be summarized after the restart")
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    rows = summaries(url)
    for event_id in wanted:
        row = rows[event_id]
        assert row.status in ("ready", "partial"), (row.status, row.missing)
        mp4 = read_mp4(media / row.video_path)
        assert len(mp4["video_frames"]) > 10 and len(mp4["audio"]) > 0 and mp4["cues"]
        assert mp4["duration"] and abs(mp4["duration"] - row.duration_s) < 1.0
    # the restart removed the killed render's (old) temporary file; nothing referred to it
    assert not any(p.exists() for p in leftovers)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_media_disk_full_fails_cleanly_then_renders_when_space_returns(broker, reference, tmp_path):
    from tests.test_summarizer_support import read_mp4

    url, media = prepare(broker, reference, tmp_path)
    if not _mount_tmpfs(media, "160k"):
        pytest.skip("mounting a small tmpfs needs root and mount(8); the disk-full scenario was not run")
    group = f"full-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "summarizer.log"
    try:
        proc = start_summarizer(broker, reference, url, media, group, log)
        try:
            wanted = closed_event_ids(reference)
            wait_for(lambda: set(summaries(url)) >= wanted or proc.poll() is not None, 240,
                     "every event to be attempted on the full disk")
            assert proc.poll() is None, "the summarizer died on a full disk:\n" + log.read_text()[-3000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        rows = summaries(url)
        assert {rows[e].status for e in wanted} == {"failed"}
        assert all("No space left" in str(rows[e].missing) for e in wanted), [rows[e].missing for e in wanted]
        assert not [p for p in visible_files(media) if p.suffix == ".mp4"]
        assert not list(media.rglob("*.part")), "temporary files were left on the full disk"
    finally:
        subprocess.run(["umount", str(media)], check=False)
    # space is back (the tmpfs is gone): re-render one event on demand
    event_id = sorted(wanted)[0]
    inp = reference.input
    env = os.environ | {"FW_KAFKA__TOPIC_PREFIX": inp.prefix, "FW_KAFKA__PARTITIONS": str(inp.kafka.partitions)}
    done = subprocess.run([FUSIONWATCH, "summarize", "--event", event_id, "--bootstrap", broker.bootstrap,
                           "--database-url", url, "--media-root", str(media)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    row = summaries(url)[event_id]
    assert row.status in ("ready", "partial")
    assert len(read_mp4(media / row.video_path)["video_frames"]) > 10
