"""The supervisor's calls page in a real headless Chromium (Debian `chromium` + `chromium-driver`,
driven by Selenium) against the real API served by uvicorn, on calls the monitor's sink wrote: the
list shows a live and an ended call, a call opens with its transcript by speaker and per-turn
sentiment, the frustration curve and the escalation with its clip link; a search finds a line and
opens its call at that line; the review page links here."""

from __future__ import annotations

import time

import pytest

from services.api.sample import write_clip
from services.db import make_engine
from services.settings import Settings
from tests.support.http_server import serving
from tests.test_calls_api import TRUTH, seed_call
from tests.test_review_page import _wait, browser  # noqa: F401 - the Chromium fixture

pytestmark = pytest.mark.slow
TOKEN = "calls-page-token-0123456789"


@pytest.fixture
def server(sqlite_url, tmp_path):
    from services.api.app import create_app
    from services.broker.embedded import free_port

    now = time.time()
    eid = seed_call(sqlite_url, "call-0001", now - 3600)
    seed_call(sqlite_url, "call-0002", now - 19, escalate=False)
    # the clip the summary row names: Chromium may fetch a link's target ahead of a click
    write_clip(tmp_path / "media" / f"{eid}.mp4", seconds=1.0)
    port = free_port()
    settings = Settings(database={"url": sqlite_url}, media_root=tmp_path / "media",
                        api={"host": "127.0.0.1", "port": port, "token": TOKEN})
    with serving(create_app(settings), port) as base:
        yield base, eid
    make_engine(sqlite_url).dispose()


def test_calls_page_list_call_transcript_curve_escalation_and_search(server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, eid = server
    d = browser
    d.get(f"{base}/")
    link = _wait(d, "const a = [...document.querySelectorAll('a')].find(a => a.textContent === 'Calls'); "
                    "return a && a.getAttribute('href')", what="link from the review page")
    d.get(base + link + f"#token={TOKEN}")

    # the list: the live call first, then the ended one with its escalation
    rows = _wait(d, "const b = document.querySelectorAll('#calls button'); return b.length === 2 && "
                    "[...b].map(x => x.textContent)", what="calls list")
    assert rows[0].startswith("call-0002") and "live" in rows[0]
    assert rows[1].startswith("call-0001") and "escalated" in rows[1] and "live" not in rows[1]

    d.find_element(By.CSS_SELECTOR, "#calls button[data-id='call-0001']").click()
    turns = _wait(d, "const li = document.querySelectorAll('#transcript li'); return li.length === 5 && "
                     "[...li].map(x => [x.className, x.querySelector('.who').textContent, "
                     "x.querySelector('.said').textContent, x.querySelector('.mood').textContent])",
                  what="transcript")
    assert [(t[1], t[2]) for t in turns] == [(u["speaker"], u["text"]) for u in TRUTH]
    assert turns[1][0] == "customer" and turns[1][3].startswith("negative (80 %)") and "frustration 85 %" in turns[1][3]
    assert turns[0][3].startswith("neutral")
    # the curve: one polyline point per scored window, the threshold line, the escalation shaded
    curve = d.execute_script("const s = document.getElementById('curve'); return {"
                             "points: s.querySelector('polyline.frustration').getAttribute('points').split(' ').length,"
                             "episodes: s.querySelectorAll('rect.episode').length, thr: !!s.querySelector('line.thr')}")
    assert curve == {"points": 19, "episodes": 1, "thr": True}
    assert "19 windows" in d.find_element(By.ID, "curve-desc").text
    # windows that did not hear the customer are drawn hollow and said to be not counted
    hollow = d.execute_script("return document.querySelectorAll('#curve circle.unheard').length")
    assert hollow > 0 and f"({hollow} without the customer's voice" in d.find_element(By.ID, "curve-desc").text
    clip = d.find_element(By.CSS_SELECTOR, "#escalations a.clip")
    assert clip.get_attribute("href") == f"{base}/api/events/{eid}/clip" and clip.text == "narrated clip"
    assert "washing machine" in d.find_element(By.ID, "escalations").text

    # search: a stemmed word finds the complaint in both calls; the hit opens its call at that line
    box = d.find_element(By.ID, "q")
    box.send_keys("arriving", Keys.ENTER)
    hits = _wait(d, "const b = document.querySelectorAll('#results button'); return b.length === 2 && "
                    "[...b].map(x => [x.dataset.call, x.querySelector('mark') && x.querySelector('mark').textContent])",
                 what="search results")
    assert hits == [["call-0002", "arrived"], ["call-0001", "arrived"]]
    d.find_element(By.CSS_SELECTOR, "#results button[data-call='call-0002']").click()
    hit = _wait(d, "const li = document.querySelector('#transcript li.hit'); return document.getElementById("
                   "'call-title').textContent.startsWith('call-0002') && li && li.querySelector('.said').textContent",
                what="the call opened at the line found")
    assert hit == TRUTH[1]["text"]
    # a search of exclusions alone is refused in a sentence, on the page
    box.clear()
    box.send_keys("-refund", Keys.ENTER)
    msg = _wait(d, "const m = document.getElementById('search-msg'); return m.classList.contains('error') && m.textContent",
                what="search error")
    assert "at least one word" in msg
    # no script error on the way; the refused search's 422 is the one failed request
    severe = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert all("/api/transcripts/search" in m and "422" in m for m in severe), severe
