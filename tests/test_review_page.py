"""The review page in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven by
Selenium) against the real API served by uvicorn: open the queue, open an event, the narrated clip
plays with subtitles showing, keyboard review ("f" = false alarm) lands in the database, and a new
event appears by itself (live updates).

`FW_UPDATE_SCREENSHOT=1` also writes docs/review-page.png (the README's screenshot)."""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from schemas.events import event_id
from schemas.tables import Event
from services.api.sample import write_sample
from services.db import make_engine, session_factory, session_scope
from services.settings import Settings
from tests.support.http_server import serving

pytestmark = pytest.mark.slow
TOKEN = "page-test-token-0123456789"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _chromium() -> tuple[str, str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        message = "needs Debian chromium + chromium-driver (make sysdeps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary, driver


@pytest.fixture
def server(sqlite_url, tmp_path):
    from services.api.app import create_app
    from services.broker.embedded import free_port

    engine = make_engine(sqlite_url)
    sessions = session_factory(engine)
    with session_scope(sessions) as s:
        ids = write_sample(s, tmp_path / "media")
    port = free_port()
    settings = Settings(database={"url": sqlite_url}, media_root=tmp_path / "media",
                        api={"host": "127.0.0.1", "port": port, "token": TOKEN})
    with serving(create_app(settings, live_poll_s=0.2), port) as base:
        yield base, sessions, ids
    engine.dispose()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,820"):
        options.add_argument(arg)
    d = webdriver.Chrome(options=options, service=Service(driver))
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def _wait(d, script: str, timeout: float = 20.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = d.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or script}")


def _verdict(sessions, eid: str) -> tuple[str | None, str | None]:
    with sessions() as s:
        e = s.get(Event, eid)
        return e.verdict, e.reviewer


def test_review_page_end_to_end(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    base, sessions, ids = server
    d = browser
    d.get(f"{base}/#token={TOKEN}")
    # the token moved from the URL into session storage
    _wait(d, f"return sessionStorage.getItem('fw-token') === '{TOKEN}' && !location.hash", what="token")

    # the queue lists the three unreviewed sample events, newest first, and opens the first one
    queue = _wait(d, "const b = document.querySelectorAll('#queue button'); return b.length === 3 && "
                     "[...b].map(x => x.dataset.id)", what="queue")
    first = queue[0]
    _wait(d, "return !document.getElementById('event').hidden", what="event view")
    assert d.find_element(By.ID, "ev-title").text.startswith("L2-S1")

    # keyboard navigation: j / k move through the queue
    d.execute_script("document.activeElement.blur()")
    ActionChains(d).send_keys("j").perform()
    _wait(d, f"return document.querySelector('#queue button[aria-current=true]').dataset.id === '{queue[1]}'",
          what="j moves down")
    ActionChains(d).send_keys("k").perform()
    _wait(d, f"return document.getElementById('ev-title').textContent.startsWith('L2-S1') && "
             f"document.querySelector('#queue button[aria-current=true]').dataset.id === '{first}'", what="k moves up")

    # the narrated clip plays, subtitles are on and their cues loaded
    state = _wait(d, """
        const v = document.getElementById('video');
        const t = v.textTracks[0];
        if (!v.src.endsWith('/clip') || v.currentTime < 0.3 || !t || t.mode !== 'showing' || !t.cues || !t.cues.length) return null;
        return {t: v.currentTime, cues: t.cues.length, text: t.cues[0].text, err: v.error && v.error.code};
    """, what="video playing with subtitles")
    assert state["err"] is None and state["cues"] == 2 and "L2-S1" in state["text"]
    # rewind and check the clock runs (the clip is short: it may be near its end by now)
    d.execute_script("const v = document.getElementById('video'); v.currentTime = 0; v.play();")
    later = _wait(d, "const v = document.getElementById('video'); return !v.paused && v.currentTime > 0.5 && v.currentTime",
                  what="currentTime advancing after a rewind")
    assert later > 0.5
    assert d.execute_script("return document.getElementById('video').textTracks[0].mode") == "showing"
    # only this event's narration: one track, and at most one cue on screen
    assert d.execute_script("return document.getElementById('video').textTracks.length") == 1
    assert d.execute_script("return document.getElementById('video').textTracks[0].activeCues.length") <= 1

    # the evidence panels are drawn from the event
    assert d.execute_script("return document.querySelectorAll('#timeline circle').length") == 12
    assert d.execute_script("return document.querySelectorAll('#timeline .thr').length") == 1
    assert d.execute_script("return document.querySelectorAll('#shares meter').length") == 3
    assert d.execute_script("return document.querySelectorAll('#logs li.hit').length") == 1
    assert d.execute_script("return document.querySelector('#logs mark').textContent") in ("W-102", "SN-3300")
    assert d.find_element(By.ID, "serials").text == "SN-3300"

    d.save_screenshot(str(tmp_path / "review-page.png"))
    _save_docs_screenshot(tmp_path / "review-page.png")

    # "f" without a reviewer name is refused on the page, and nothing is written
    d.execute_script("document.activeElement.blur()")
    ActionChains(d).send_keys("f").perform()
    _wait(d, "return document.getElementById('action-msg').textContent.includes('name')", what="name required")
    assert _verdict(sessions, first) == (None, None)

    reviewer = d.find_element(By.ID, "reviewer")
    reviewer.send_keys("Quinn")
    d.execute_script("document.activeElement.blur()")
    ActionChains(d).send_keys("f").perform()
    deadline = time.monotonic() + 15
    while _verdict(sessions, first) != ("false_alarm", "Quinn"):
        assert time.monotonic() < deadline, f"verdict not stored: {_verdict(sessions, first)}"
        time.sleep(0.1)
    # the labelled event leaves the "to review" queue and the next one opens
    _wait(d, "return document.querySelectorAll('#queue button').length === 2", what="queue shrinks")
    _wait(d, f"return document.querySelector('#queue button[aria-current=true]').dataset.id === '{queue[1]}'",
          what="next event selected")

    # live updates: an event written by "the monitor" shows up without a reload
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=5)
    new_id = event_id("L3-S9", start)
    with session_scope(sessions) as s:
        s.add(Event(id=new_id, asset_id="L3-S9", start_time=start, status="open", kind="belt_squeal",
                    severity="high", peak_score=2.2, mean_score=1.8, threshold=1.0, model_version="m", windows=3,
                    scores=[], serials=[], log_lines=[], evidence={}, attribution={}))
    _wait(d, f"return !!document.querySelector('#queue button[data-id=\"{new_id}\"]')", what="live update")
    assert "belt squeal" in d.find_element(By.CSS_SELECTOR, f'#queue button[data-id="{new_id}"]').text


def _save_docs_screenshot(png: Path) -> None:
    if os.environ.get("FW_UPDATE_SCREENSHOT") != "1":
        return
    from PIL import Image

    img = Image.open(png).convert("RGB")
    img.thumbnail((1100, 1100))
    # a 128-colour palette keeps the README image small (the page is flat colours and text)
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(DOCS / "review-page.png", optimize=True)


def test_stations_panel_shows_learning_and_marks_a_new_normal(server, browser):
    """The page lists each station's baseline (learning / watching, from the monitor's committed
    state) and records an operator's new normal with who and why; the station then shows pending."""
    from selenium.webdriver.common.by import By
    from sqlalchemy import select

    from schemas.tables import BaselineReset, MonitorState

    base, sessions, _ = server
    with session_scope(sessions) as s:
        s.add(MonitorState(group_id="g", asset_id="L1-S1", partition=0, last_window_start=0.0,
                           lifecycle={"adaptation": {"phase": "learning", "seen": 42}}))
        s.add(MonitorState(group_id="g", asset_id="L1-S2", partition=1, last_window_start=0.0,
                           lifecycle={"adaptation": {"phase": "watching", "seen": 900}}))
    d = browser
    d.get(f"{base}/#token={TOKEN}")
    _wait(d, "return document.querySelectorAll('#baselines li').length >= 2", what="stations listed")
    text = d.find_element(By.ID, "baselines").text
    assert "L1-S1 learning its baseline (42 windows)" in text and "L1-S2 watching (900 windows)" in text

    d.find_element(By.ID, "reviewer").send_keys("Quinn")
    d.execute_script("document.getElementById('nn-asset').value = 'L1-S2'")
    d.find_element(By.ID, "nn-reason").send_keys("camera re-mounted after cleaning")
    d.find_element(By.ID, "nn-go").click()
    _wait(d, "return document.getElementById('nn-msg').textContent.includes('new normal recorded')", what="saved")
    with sessions() as s:
        rows = s.scalars(select(BaselineReset)).all()
    assert [(r.asset_id, r.requested_by, r.reason, r.applied_at) for r in rows] == [
        ("L1-S2", "Quinn", "camera re-mounted after cleaning", None)]
    _wait(d, "return document.querySelector('#baselines li[data-asset=\"L1-S2\"]').textContent.includes('pending')",
          what="pending shown")


def test_a_notifications_link_opens_its_event(server, browser):
    """A notification links to /#event=<id> (services/notify/notification.py): the page opens that
    event, not the newest, and says so plainly when the event does not exist."""
    base, sessions, _ = server
    d = browser
    d.get(f"{base}/#token={TOKEN}")
    queue = _wait(d, "const b = document.querySelectorAll('#queue button'); return b.length === 3 && "
                     "[...b].map(x => x.dataset.id)", what="queue")
    d.get(f"{base}/#event={queue[2]}")  # the oldest; the token is already in this tab's session
    _wait(d, f"const cur = document.querySelector('#queue button[aria-current=true]'); "
             f"return cur && cur.dataset.id === '{queue[2]}' && !document.getElementById('event').hidden",
          what="the linked event opened")
    d.get(f"{base}/#event=no-such-event")
    _wait(d, "return document.getElementById('action-msg').textContent.startsWith('Event no-such-event:')",
          what="a missing event said so")
