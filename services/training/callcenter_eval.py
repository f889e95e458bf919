"""Call-centre evaluation pieces: the VADER baseline, per-turn scoring, escalations as the
monitor runs them, and the call's overall sentiment as the call summary computes it.

Used by `services.training.callcenter.score_row` for every row of `fusionwatch eval --profile
callcenter`, on simulated calls or on a user's labelled call folders.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from models.data import WindowArrays
from models.features import CHANNELS, speech_seconds
from services.training.callcenter_data import SENTIMENT_CLASSES, customer_turns
from streamlogic.call_summary import overall_sentiment
from streamlogic.escalation import EscalationRule
from streamlogic.event_lifecycle import ScoredWindow

ESCALATION_FRUSTRATION = 0.6  # a call should escalate when a customer turn is at least this frustrated
VADER_NEUTRAL = 0.05  # |compound| below this is neutral: VADER's own documented cut-off


@dataclass
class Predictions:
    probs: np.ndarray  # (N, 3) for every window of the dataset
    frustration: np.ndarray  # (N,)
    turn_probs: np.ndarray | None = None  # (T, 3) per customer turn, when the row scores turns directly


# ── VADER: a lexicon baseline a practitioner knows ─────────────────────────────────────────────

@functools.lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_compound(text: str) -> float:
    return float(_vader().polarity_scores(text)["compound"])


def vader_probs(compound: float) -> np.ndarray:
    """VADER's class (compound >= 0.05 positive, <= -0.05 negative, else neutral) as probabilities."""
    k = 2 if compound >= VADER_NEUTRAL else 0 if compound <= -VADER_NEUTRAL else 1
    p = np.full(len(SENTIMENT_CLASSES), 0.05)
    p[k] = 0.9
    return p


def vader_predictions(data: WindowArrays) -> Predictions:
    """Per window: VADER on the customer's latest turn said by the window's end (what a streaming
    transcript gives a text-only rule); frustration = how negative it is (max(0, -compound)).
    Per turn: VADER on the turn's own text."""
    n = len(data)
    probs = np.tile(vader_probs(0.0), (n, 1))
    frus = np.zeros(n, np.float32)
    by_call = {c["call_id"]: [u for u in c["segments"] if u["speaker"] == "customer"] for c in data.meta.get("calls", [])}
    scores = {u["text"]: vader_compound(u["text"]) for said in by_call.values() for u in said}
    w = data.features.window_s
    for i in range(n):
        said = by_call.get(data.assets[data.asset_idx[i]], [])
        end = float(data.start[i]) + w
        latest = [u for u in said if u["start"] < end]
        if latest:
            c = scores[latest[-1]["text"]]
            probs[i], frus[i] = vader_probs(c), max(0.0, -c)
    turns = customer_turns(data)
    turn_probs = np.stack([vader_probs(scores.get(t["text"], vader_compound(t["text"]))) for t in turns]) \
        if turns else np.zeros((0, len(SENTIMENT_CLASSES)))
    return Predictions(probs, frus, turn_probs)


# ── per turn ────────────────────────────────────────────────────────────────────────────────

def turn_predictions(data: WindowArrays, probs: np.ndarray) -> np.ndarray:
    """(T, 3) per labelled customer turn (`customer_turns` order): the windows' probabilities
    weighted by how much of the turn each window hears."""
    w = data.features.window_s
    index = {a: np.flatnonzero(data.asset_idx == k) for k, a in enumerate(data.assets)}
    out = []
    for t in customer_turns(data):
        idx = index.get(t["call_id"], np.zeros(0, int))
        s = data.start[idx]
        heard = np.clip(np.minimum(s + w, t["end"]) - np.maximum(s, t["start"]), 0, None)
        if heard.sum() <= 0:
            out.append(np.full(len(SENTIMENT_CLASSES), 1 / len(SENTIMENT_CLASSES)))
            continue
        out.append((heard[:, None] * probs[idx]).sum(0) / heard.sum())
    return np.stack(out) if out else np.zeros((0, len(SENTIMENT_CLASSES)))


def turn_truth(data: WindowArrays) -> np.ndarray:
    return np.array([SENTIMENT_CLASSES.index(t["sentiment"]) for t in customer_turns(data)], int)


# ── escalations, exactly as the monitor runs them ───────────────────────────────────────────

def escalation_events(data: WindowArrays, frustration: np.ndarray, rule: EscalationRule) -> dict[str, int]:
    """Escalation events per call: the rule's lifecycle over every window of the call in time
    order, the window's score its predicted frustration, judged as live (the call policy): only
    where a stereo call's window hears the customer."""
    w = data.features.window_s
    heard = customer_heard(data, rule)
    out = {a: 0 for a in data.assets}
    for k, asset in enumerate(data.assets):
        idx = np.flatnonzero(data.asset_idx == k)
        idx = idx[np.argsort(data.start[idx])]
        life = rule.lifecycle()
        for i in idx:
            f = float(frustration[i]) if np.isfinite(frustration[i]) else 0.0
            sw = ScoredWindow(asset, float(data.start[i]), float(data.start[i]) + w, f, rule.open_threshold, "eval",
                              kind="escalation", judged=bool(heard[i]))
            out[asset] += sum(ch.change == "opened" for ch in life.update(sw))
    return out


def customer_heard(data: WindowArrays, rule: EscalationRule) -> np.ndarray:
    """(N,) bool: the windows an escalation counts, by the scorer's own measure
    (`models.features.speech_seconds` of the customer's channel; every mono window counts)."""
    if data.channel_mel is None or data.channel_mask is None:
        return np.ones(len(data), bool)
    c = CHANNELS.index("customer")
    mask = data.channel_mask[:, c]
    speech = speech_seconds(data.channel_mel[:, c], mask, data.features)
    return ~mask.any(1) | (speech >= rule.min_customer_speech_s)


def should_escalate(call: dict) -> bool | None:
    """Ground truth: labels.json's "escalation" when given, else a customer turn at least
    ESCALATION_FRUSTRATION frustrated; None when the call has no frustration labels at all."""
    given = (call.get("labels") or {}).get("escalation")
    if given is not None:
        return bool(given)
    f = [u.get("frustration") for u in call["segments"] if u["speaker"] == "customer" and u.get("frustration") is not None]
    return any(x >= ESCALATION_FRUSTRATION for x in f) if f else None


@dataclass
class EscalationScore:
    recall: float  # calls that should escalate with at least one event
    spurious_per_100_calls: float  # events in calls that should not escalate, plus every event after a call's first
    events_per_escalated_call: float
    calls: int


def escalation_score(data: WindowArrays, events: dict[str, int], calls: set[str]) -> EscalationScore:
    truth = {c["call_id"]: should_escalate(c) for c in data.meta.get("calls", []) if c["call_id"] in calls}
    truth = {k: v for k, v in truth.items() if v is not None}
    pos = [k for k, v in truth.items() if v]
    spurious = sum(events.get(k, 0) for k, v in truth.items() if not v) + sum(max(0, events.get(k, 0) - 1) for k in pos)
    hit = [events.get(k, 0) for k in pos if events.get(k, 0) > 0]
    return EscalationScore(
        recall=float(np.mean([events.get(k, 0) > 0 for k in pos])) if pos else float("nan"),
        spurious_per_100_calls=100.0 * spurious / len(truth) if truth else float("nan"),
        events_per_escalated_call=float(np.mean(hit)) if hit else float("nan"), calls=len(truth))


# ── the call summary's overall sentiment ────────────────────────────────────────────────────

def call_outcomes(data: WindowArrays, probs: np.ndarray, calls: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) overall sentiment per call in `calls`: truth is labels.json's "overall"
    (simulated calls: the customer's last utterance); the prediction is the monitor's call-summary
    rule (`streamlogic.call_summary.overall_sentiment` over all the call's windows)."""
    last = {}
    for c in data.meta.get("calls", []):
        overall = (c.get("labels") or {}).get("overall")
        if overall in SENTIMENT_CLASSES and c["call_id"] in calls:
            last[c["call_id"]] = SENTIMENT_CLASSES.index(overall)
    true, guess = [], []
    for a, asset in enumerate(data.assets):
        if asset not in last:
            continue
        idx = np.flatnonzero(data.asset_idx == a)
        if not len(idx):
            continue
        idx = idx[np.argsort(data.start[idx])]
        true.append(last[asset])
        guess.append(overall_sentiment(probs[idx]))
    return np.array(true, int), np.array(guess, int)
