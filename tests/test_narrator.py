"""The narrator says the right asset, time, modality and log code for every fault kind the
simulator can inject, and nothing the event does not support (checked by `unsupported_claims`,
itself tested against made-up claims)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from schemas.events import Attribution
from services.simulator.faults import FAULT_KINDS
from services.summarizer.facts import CallFacts, EventFacts
from services.summarizer.narrator import MissingEvidence, humanize, narrate, region_words, sentence_cues, unsupported_claims
from services.summarizer.render import cue_list

START = datetime(2026, 11, 26, 14, 5, 12, tzinfo=timezone.utc)
SPOKEN = {"frames": "camera", "audio": "microphone", "logs": "logs"}
CODES = {"unseen_error_code": "E-9042", "estop_but_moving": "ESTOP-01", "cycles_without_parts": "C-210"}


def facts_for(kind: str, asset: str = "L3-S2", **overrides) -> EventFacts:
    modalities = FAULT_KINDS.get(kind, ("audio",))
    # the fault's modalities carry the score; the others a trace (under the 5 % the narrator mentions)
    others = [m for m in ("frames", "audio", "logs") if m not in modalities]
    shares = {m: (1.0 - 0.04 * len(others)) / len(modalities) for m in modalities} | {m: 0.04 for m in others}
    if len(modalities) == 3:
        shares = {"frames": 0.4, "audio": 0.35, "logs": 0.25}
    code = CODES.get(kind)
    lines = [f"{code} unexpected state on conveyor 3"] if code else ([] if "logs" not in modalities else
                                                                   ["cycle counter rate 4x nominal"])
    attribution = Attribution(
        modality_shares=shares, cross_modal_share=0.6 if len(modalities) > 1 else 0.05,
        frame_region=[0.6, 0.1, 0.9, 0.3] if "frames" in modalities else None,
        audio_band_hz=[2800.0, 4100.0] if "audio" in modalities else None,
        top_log_lines=lines, log_codes=[code] if code else [],
    )
    base = dict(event_id="e-" + kind, asset=asset, kind=kind, severity="high", status="closed", start=START,
                end=START + timedelta(seconds=9), peak_score=1.26, mean_score=0.9, threshold=0.7, model_version="m1",
                windows=9, attribution=attribution, serials=("SN-1001", "SN-1002"), log_lines=tuple(lines))
    base.update(overrides)
    return EventFacts(**base)


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
def test_narration_of_every_fault_kind_is_right_and_grounded(kind):
    facts = facts_for(kind)
    narration = narrate(facts)
    text = narration.text
    assert narration == narrate(facts), "the template is deterministic"
    assert "L3-S2" in text
    assert "14:05 UTC" in text
    assert humanize(kind) in text
    assert "1.8 times the threshold" in text  # 1.26 / 0.7
    modalities = FAULT_KINDS[kind]
    for m in modalities:
        assert SPOKEN[m] in text, (m, text)
    if kind in CODES:
        assert CODES[kind] in text
        assert "“" + CODES[kind] + " unexpected state on conveyor 3”" in text
    if len(modalities) > 1:
        assert "60 percent from the sources disagreeing" in text
    assert "SN-1001" in text and "SN-1002" in text
    assert unsupported_claims(text, facts) == []
    # single-modality kinds never name a modality the model did not use
    if modalities == ("audio",):
        assert "camera" not in text
    if modalities == ("frames",):
        assert "microphone" not in text


def test_plain_anomaly_and_open_event():
    facts = facts_for("anomaly", end=None)
    text = narrate(facts).text
    assert text.startswith("High-severity anomaly on L3-S2 at 14:05 UTC, still open.")
    assert unsupported_claims(text, facts) == []


def test_an_event_closed_by_a_stopped_station_says_so():
    """Closed because the station stopped sending (`closed_by`): the clip must not sound like the
    fault went away; one closed by its scores says nothing of the kind."""
    stopped = facts_for("bearing_fault", closed_by="stream_stopped")
    text = narrate(stopped).text
    assert "Then the station stopped sending: nothing shows that the fault cleared." in text
    assert unsupported_claims(text, stopped) == []
    assert "stopped sending" not in narrate(facts_for("bearing_fault", closed_by="scores")).text


def test_checker_flags_what_the_event_does_not_say():
    facts = facts_for("bearing_fault")  # audio only, no log code
    good = narrate(facts).text
    assert unsupported_claims(good, facts) == []
    for bad in (
        "Logs: code E-999.",  # a code the event does not have
        "Peak score 2.7 times the threshold.",  # a number it does not have
        "Parts SN-7777.",  # a serial from elsewhere
        "The log said “bearing temperature critical”.",  # a quote that is not a log line
        "On camera, look at the upper left.",  # a modality that played no part
        "It started at 15:40 UTC.",  # a wrong time
        "Asset L4-S1 stopped.",  # another asset
    ):
        problems = unsupported_claims(good + " " + bad, facts)
        assert problems, f"not flagged: {bad}"


def test_call_escalation_narration():
    call = CallFacts(start=START - timedelta(seconds=95), turning_point=START - timedelta(seconds=20),
                     peak_time=START + timedelta(seconds=3), peak_frustration=0.82, overall="negative")
    facts = facts_for("escalation", asset="call-7f3a", call=call,
                      attribution=Attribution(modality_shares={"audio": 0.6, "logs": 0.4},
                                              top_log_lines=["customer: I have asked three times already",
                                                             "agent: I understand, let me escalate this"]))
    text = narrate(facts).text
    assert text.startswith("Call call-7f3a escalated at 14:05:12 UTC, 1 minute 35 seconds into the call.")
    assert "Sentiment turned at 14:04:52 UTC." in text
    assert "Frustration peaked at 82 percent at 14:05:15 UTC." in text
    # the customer's turns drove it; the agent's reply and the anomaly-style modality shares are not named
    assert "Driven by what the customer said: “I have asked three times already”." in text
    assert "escalate this" not in text
    assert "percent" not in text.replace("82 percent", "")
    assert "Overall, the call was negative." in text
    assert unsupported_claims(text, facts) == []
    assert unsupported_claims(text + " The customer said “cancel my account”.", facts)


def test_missing_evidence_is_said_and_grounded():
    facts = facts_for("surface_defect")
    missing = [MissingEvidence("frames", "corrupt", "t.frames[1] offsets 10..50", 4, 41),
               MissingEvidence("audio", "gone", "t.audio[1] offsets 3..9", 7, 7)]
    text = narrate(facts, missing).text
    assert "4 of 41 camera frames were unreadable and are not shown." in text
    assert "The microphone audio of this event are no longer on the broker" in text
    assert unsupported_claims(text, facts, missing) == []


def test_long_lines_are_cut_and_cues_cover_the_text_exactly():
    long_line = "E-9042 " + "spindle drive reported an unexpected torque excursion " * 4
    facts = facts_for("unseen_error_code", attribution=Attribution(
        modality_shares={"logs": 1.0}, top_log_lines=[long_line], log_codes=["E-9042"]), log_lines=(long_line,))
    narration = narrate(facts)
    assert "…”" in narration.text and len(narration.text) < 400
    assert unsupported_claims(narration.text, facts) == []
    pieces = sentence_cues(narration.sentences, max_chars=40)
    assert all(len(p) <= 40 or " " not in p for p in pieces)
    assert " ".join(pieces) == narration.text
    spans = [(i * 3.0, i * 3.0 + 2.5) for i in range(len(narration.sentences))]
    cues = cue_list(narration.sentences, spans, max_chars=40)
    assert " ".join(c.text for c in cues) == narration.text
    assert all(a.end <= b.start + 1e-6 for a, b in zip(cues, cues[1:]))


def test_region_words():
    assert region_words([0.0, 0.0, 0.2, 0.2]) == "upper left"
    assert region_words([0.4, 0.4, 0.6, 0.6]) == "centre"
    assert region_words([0.7, 0.8, 0.9, 1.0]) == "lower right"
    assert region_words(["x", 0, 1, 1]) is None
