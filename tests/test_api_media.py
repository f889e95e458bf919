"""Clip, subtitle and thumbnail streaming: HTTP range requests on a real MP4 (read back with PyAV),
and path traversal attempts through the request and through the summaries row."""

from __future__ import annotations

import io
import os
import uuid
from datetime import datetime, timezone

import av
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from schemas.tables import Summary
from services.api.app import create_app
from services.api.sample import write_sample
from services.db import make_engine, session_factory, session_scope
from services.settings import Settings

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)  # fixed: the same sample ids, so clips are reused


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def served(tmp_path_factory, media_root):
    from services.db import upgrade

    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'fw.db'}"
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    sessions = session_factory(engine)
    with session_scope(sessions) as s:
        ids = write_sample(s, media_root, now=NOW)
    settings = Settings(database={"url": sqlite_url}, media_root=media_root, api={"token": "media-test-token-0123456789"})
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        client.eid = ids[0]  # has a clip, subtitles and a thumbnail
        client.no_media = ids[3]  # has no summary
        client.sessions = sessions
        client.clip_path = media_root / "sample" / f"{ids[0]}.mp4"
        yield client
    engine.dispose()


def test_clip_whole_and_read_back_with_pyav(served):
    r = served.get(f"/api/events/{served.eid}/clip")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.content == served.clip_path.read_bytes()
    with av.open(io.BytesIO(r.content)) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        assert kinds == {"video": "h264", "audio": "aac"}
        assert float(container.duration / av.time_base) == pytest.approx(4.0, abs=0.3)
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 40
    # faststart: the moov atom comes before the media data, so playback starts while loading
    assert r.content.find(b"moov") < r.content.find(b"mdat")


def test_range_requests(served):
    data = served.clip_path.read_bytes()
    size = len(data)
    url = f"/api/events/{served.eid}/clip"
    r = served.get(url, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 0-99/{size}"
    assert r.content == data[:100] and r.headers["content-length"] == "100"
    r = served.get(url, headers={"Range": "bytes=1000-"})
    assert r.status_code == 206 and r.content == data[1000:]
    r = served.get(url, headers={"Range": "bytes=-500"})
    assert r.status_code == 206 and r.content == data[-500:]
    assert r.headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"
    r = served.get(url, headers={"Range": f"bytes={size - 10}-{size + 1000}"})  # end clipped to the file
    assert r.status_code == 206 and r.content == data[-10:]
    r = served.get(url, headers={"Range": "bytes=0-9,100-109"})
    assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/byteranges")
    assert data[:10] in r.content and data[100:110] in r.content

    r = served.get(url, headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    assert "beyond the end" in r.json()["error"]["message"]
    for bad in ("items=0-10", "bytes=abc", "bytes=50-10", "0-10"):
        r = served.get(url, headers={"Range": bad})
        assert r.status_code == 400 and r.json()["error"]["status"] == 400, bad
    # If-Range that does not match the current file: the whole file, as RFC 9110 says
    r = served.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale-etag"'})
    assert r.status_code == 200 and len(r.content) == size
    etag = served.get(url).headers["etag"]
    assert served.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206


def test_subtitles_and_thumbnail(served):
    r = served.get(f"/api/events/{served.eid}/subtitles")
    assert r.status_code == 200 and r.headers["content-type"] == "text/vtt; charset=utf-8"
    assert r.text.startswith("WEBVTT") and "-->" in r.text
    r = served.get(f"/api/events/{served.eid}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (160, 90)
    d = served.get(f"/api/events/{served.eid}").json()["media"]
    assert d["status"] == "ready" and d["clip"].endswith("/clip") and d["duration_s"] == 4.0


def test_missing_media_and_unknown_events(served):
    r = served.get(f"/api/events/{served.no_media}/clip")
    assert r.status_code == 404 and "no summary yet" in r.json()["error"]["message"]
    r = served.get(f"/api/events/{uuid.uuid4()}/thumbnail")
    assert r.status_code == 404 and "no event" in r.json()["error"]["message"]
    assert served.get("/api/events/not-an-id/clip").status_code == 422


@pytest.mark.parametrize("path", [
    "/api/events/..%2F..%2F..%2Fetc%2Fpasswd/clip",
    "/api/events/%2e%2e%2f%2e%2e%2fetc%2fpasswd/clip",
    "/api/events/....//....//etc/passwd/clip",
    "/api/events/%2Fetc%2Fpasswd/subtitles",
    "/static/..%2f..%2fapp.py",
    "/static/%2e%2e/%2e%2e/settings.py",
])
def test_path_traversal_through_the_url(served, path):
    r = served.get(path)
    assert r.status_code in (404, 422)
    assert b"root:" not in r.content and b"import" not in r.content
    assert r.headers["content-type"].startswith("application/json")


def test_rows_pointing_outside_the_media_root_are_refused(served, media_root, tmp_path):
    secret = tmp_path / "secret.vtt"
    secret.write_text("WEBVTT\n\nsecret")
    link = media_root / "sample" / "link.vtt"
    if not link.exists():
        os.symlink(secret, link)
    (media_root / "sample" / "notes.txt").write_text("not media")
    cases = {
        "subtitles_path": ["../../../../../../etc/passwd", str(secret), "sample/link.vtt", "sample/notes.txt",
                           "sample/../../" + secret.name, "/etc/passwd", "sample/does-not-exist.vtt"],
    }
    for stored in cases["subtitles_path"]:
        with session_scope(served.sessions) as s:
            s.get(Summary, served.eid).subtitles_path = stored
        r = served.get(f"/api/events/{served.eid}/subtitles")
        assert r.status_code == 404, stored
        assert "secret" not in r.text and "root:" not in r.text
    with session_scope(served.sessions) as s:
        s.get(Summary, served.eid).subtitles_path = str(media_root / "sample" / f"{served.eid}.vtt")  # absolute inside
    assert served.get(f"/api/events/{served.eid}/subtitles").status_code == 200
