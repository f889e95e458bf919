"""Call recordings → featurized, labelled windows: the call-folder format and its reader.

One code path for every call the call-centre profile learns from or is evaluated on: a simulated
call (`services.simulator.callcenter`) and a user's labelled call (a folder on disk) both become a
`CallRecording` — audio (stereo channels kept apart when there are two) and speaker-tagged turns
with optional labels — and `featurize_recordings` cuts it into the monitor's windows (window_s,
hop_s), with each turn's text stamped at its start as a streaming ASR line is live.

The call-folder format (`fusionwatch train|eval --profile callcenter --source dir:PATH`), one
folder per call under PATH:

- `call.wav`: PCM 16-bit or float32 WAV, mono or stereo, any rate the contract accepts (8 kHz
  telephony is the native rate of the call-centre features; other rates are resampled to it);
- `transcript.jsonl`: one turn per line, `{"speaker": "agent"|"customer", "start": s, "end": s,
  "text": ...}` with times in seconds from the start of call.wav, and optionally `"sentiment"`
  (negative / neutral / positive) and `"frustration"` (0..1) of the customer's turns;
- `labels.json` (optional): `{"channels": {"agent": 0, "customer": 1}}` for a stereo call (else
  `CallDirConfig.channels`), `"overall"` (the call's sentiment, how it ended), `"escalation"`
  (true/false: should it have been escalated), `"call_type"`, `"start_time"` (RFC 3339).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from models.data import WindowArrays
from models.features import CHANNELS, FeatureConfig, Featurizer, WindowFeatures
from models.inputs import WindowInputs
from schemas.envelope import ContractLimits, LogPayload, format_time, parse_time, parse_wav
from schemas.errors import ConfigError

log = logging.getLogger(__name__)

SENTIMENT_CLASSES = ("negative", "neutral", "positive")
DEFAULT_CALL_START = 1767600000.0  # calls without a start_time are laid out from here, a minute apart
MAX_CALL_S = 4 * 3600.0  # longest call.wav read


@dataclass(frozen=True)
class CallDirConfig:
    """How a call folder is read when its labels.json does not say."""

    channels: tuple[str, str] = ("agent", "customer")  # speaker of channel 0 and 1 of a stereo call.wav


@dataclass
class Turn:
    speaker: str
    start: float  # epoch seconds
    end: float
    text: str
    sentiment: str | None = None  # customer turns of a labelled call
    frustration: float | None = None

    def to_json(self) -> dict:
        return {"speaker": self.speaker, "start": self.start, "end": self.end, "text": self.text,
                "sentiment": self.sentiment, "frustration": self.frustration}


@dataclass
class CallRecording:
    call_id: str
    start: float  # epoch seconds of the first sample
    sample_rate: int
    mono: np.ndarray  # (N,) float32: the mix, what a mono line carries
    channels: dict[str, np.ndarray]  # speaker -> (N,) float32; empty for a mono call
    turns: list[Turn]
    labels: dict = field(default_factory=dict)  # labels.json (call level)
    call_type: str | None = None

    @property
    def end(self) -> float:
        return self.start + len(self.mono) / self.sample_rate

    def meta(self) -> dict:
        """The call's ground truth as the labeller and the evaluation read it (`data.meta['calls']`)."""
        return {"call_id": self.call_id, "call_type": self.call_type, "start": self.start, "end": self.end,
                "start_time": format_time(self.start), "stereo": bool(self.channels), "labels": self.labels,
                "segments": [t.to_json() for t in self.turns]}


# ── reading ──────────────────────────────────────────────────────────────────────────────────

def read_call_folder(folder: Path, cfg: CallDirConfig = CallDirConfig(), start: float | None = None) -> CallRecording:
    folder = Path(folder)
    wav, transcript, labels_path = folder / "call.wav", folder / "transcript.jsonl", folder / "labels.json"
    if not wav.exists() or not transcript.exists():
        raise ConfigError(f"{folder}: a call folder needs call.wav and transcript.jsonl (docs/callcenter.md)")
    labels = json.loads(labels_path.read_text()) if labels_path.exists() else {}
    # a whole recorded call, not a wire chunk: only its length limit differs from the contract's
    samples, rate, n_channels = parse_wav(wav.read_bytes(), replace(ContractLimits(), max_audio_s=MAX_CALL_S))
    if n_channels > 2:
        raise ConfigError(f"{wav}: {n_channels} channels; a call is mono or stereo (agent and customer)")
    channels: dict[str, np.ndarray] = {}
    if n_channels == 2:
        which = labels.get("channels") or {name: i for i, name in enumerate(cfg.channels)}
        if set(which) != set(CHANNELS) or sorted(which.values()) != [0, 1]:
            raise ConfigError(f"{folder}: channels must map agent and customer to 0 and 1, not {which}")
        channels = {name: np.ascontiguousarray(samples[:, i]) for name, i in which.items()}
        mono = np.clip(samples.sum(1), -1, 1).astype(np.float32)
    else:
        mono = np.ascontiguousarray(samples[:, 0])
    t0 = parse_time(labels["start_time"]) if labels.get("start_time") else (DEFAULT_CALL_START if start is None else start)
    turns = []
    for k, line in enumerate(transcript.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            t = json.loads(line)
            turn = Turn(str(t["speaker"]).lower(), t0 + float(t["start"]), t0 + float(t["end"]), str(t["text"]),
                        t.get("sentiment"), None if t.get("frustration") is None else float(t["frustration"]))
        except (KeyError, ValueError, TypeError) as e:
            raise ConfigError(f"{transcript}:{k + 1}: a turn needs speaker, start, end and text ({e})") from None
        if turn.sentiment is not None and turn.sentiment not in SENTIMENT_CLASSES:
            raise ConfigError(f"{transcript}:{k + 1}: sentiment {turn.sentiment!r} is not one of {SENTIMENT_CLASSES}")
        turns.append(turn)
    turns.sort(key=lambda u: u.start)
    return CallRecording(labels.get("call_id") or folder.name, t0, rate, mono, channels, turns, labels,
                         labels.get("call_type"))


def read_call_dir(root: Path, cfg: CallDirConfig = CallDirConfig()) -> list[CallRecording]:
    """Every call folder under `root` (sorted by name); calls without a start_time a minute apart."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if (p / "call.wav").exists()) if root.is_dir() else []
    if not folders:
        raise ConfigError(f"{root}: no call folders (each needs call.wav and transcript.jsonl; docs/callcenter.md)")
    calls, t = [], DEFAULT_CALL_START
    for f in folders:
        rec = read_call_folder(f, cfg, start=t)
        calls.append(rec)
        t = max(t, rec.end) + 60.0
    return calls


def recording_from_sim(call) -> CallRecording:
    """A whole simulated call (`CallCenter.complete_calls`) as a stereo recording."""
    from services.simulator.callcenter import CHANNEL_ORDER

    turns = [Turn(u.speaker, u.start, u.end, u.text, u.sentiment, u.frustration) for u in call.utterances]
    channels = {name: call.channels[i].astype(np.float32) for i, name in enumerate(CHANNEL_ORDER)}
    said = [u for u in call.utterances if u.speaker == "customer"]
    labels = {"overall": said[-1].sentiment if said else "neutral", "source": "simulator"}
    return CallRecording(call.call_id, call.start, call.sample_rate, call.audio.astype(np.float32), channels, turns,
                         labels, call.call_type)


# ── windows ──────────────────────────────────────────────────────────────────────────────────

def call_windows(rec: CallRecording, features: FeatureConfig, hop_s: float = 1.0) -> Iterator[WindowInputs]:
    """The monitor's windows over one call: `window_s` long every `hop_s` from the call's start,
    audio sliced per channel, each turn's text as a transcript line at the turn's start."""
    sr, w = rec.sample_rate, features.window_s
    n = max(1, int(np.ceil((len(rec.mono) / sr - w) / hop_s)) + 1)
    lines = [(u.start, LogPayload(msg=u.text, speaker=u.speaker)) for u in rec.turns]
    for k in range(n):
        s = rec.start + k * hop_s
        lo, hi = int(round(k * hop_s * sr)), int(round((k * hop_s + w) * sr))
        win = WindowInputs(rec.call_id, s, s + w, audio=[(s, rec.mono[lo:hi])], sample_rate=sr,
                           logs=[(t, p) for t, p in lines if s <= t < s + w])
        if rec.channels:
            win.channels = {name: [(s, x[lo:hi])] for name, x in rec.channels.items()}
        yield win


def featurize_recordings(recs: Iterable[CallRecording], features: FeatureConfig, hop_s: float = 1.0,
                         featurizer: Featurizer | None = None, meta: dict | None = None,
                         batch: int = 256) -> WindowArrays:
    """Featurized windows of every call, `meta['calls']` holding each call's ground truth."""
    fz = featurizer or Featurizer(features)
    feats: list[WindowFeatures] = []
    calls: list[dict] = []
    pending: list[WindowInputs] = []
    for rec in recs:
        calls.append(rec.meta())
        pending.extend(call_windows(rec, features, hop_s))
        while len(pending) >= batch:
            feats.extend(fz.featurize_many(pending[:batch]))
            pending = pending[batch:]
    if pending:
        feats.extend(fz.featurize_many(pending))
    data = WindowArrays.from_features(feats, features, dict(meta or {}))
    data.meta["calls"] = calls
    return data


def customer_turns(data: WindowArrays) -> list[dict]:
    """Every labelled customer turn of the dataset's calls: {call_id, start, end, sentiment,
    frustration, text, call_type} (per-turn evaluation)."""
    out = []
    for c in data.meta.get("calls", []):
        for u in c["segments"]:
            if u["speaker"] == "customer" and u.get("sentiment") in SENTIMENT_CLASSES:
                out.append({"call_id": c["call_id"], "call_type": c.get("call_type"), **u})
    return out
