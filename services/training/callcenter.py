"""Call-centre profile: labelled call windows, the sentiment/frustration recipe, the evaluation table.

Where it sits: beside `services.training.dataset` (the factory's data hop) for `fusionwatch train
--profile callcenter` / `fusionwatch eval --profile callcenter` and for the first start of
`fusionwatch up --profile callcenter`. Calls come from the call simulator
(`services.simulator.callcenter`), go through the monitor's own offline aligner and the model's
featurizer — exactly what the monitor will see live — and get one label per window:

- **sentiment**: the majority of the customer's labelled utterances heard in the window, each
  weighted by how long it is heard there; windows with less than `min_speech_s` of customer
  speech are unlabelled (-1): the agent's tone says nothing about the customer's mood;
- **frustration**: the highest frustration among those utterances (NaN where unlabelled).

Training (`train_call_model`) is supervised and end to end over the fusion part (state encoders,
log encoder, fusion, heads): the unsupervised consistency objective of the factory says nothing
about tone. Every row of the evaluation uses the same model class, encoders and step budget; the
single-modality rows train the same model with the other modality masked, the way a missing
modality is masked live.

Sarcasm protocol. The simulator draws every customer line from two phrasings per script stage; a
frozen sentence encoder plus a trained head would simply memorise that "Oh wonderful, another 40
minutes on hold" is negative, which says nothing about sarcasm it has not heard. So one phrasing of
each sarcastic stage (`HELD_OUT_PHRASINGS`) is never trained on: windows that hear it are dropped
from the training and validation sets. The sarcastic row of the test table reports both the held-out
phrasings (the honest test: positive words the text model has never seen labelled) and the seen
ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from models.data import WindowArrays
from models.features import FeatureConfig, Featurizer
from schemas.envelope import Kind, WireRecord
from schemas.errors import ConfigError

log = logging.getLogger(__name__)

SENTIMENT_CLASSES = ("negative", "neutral", "positive")
CALLCENTER_DATASET_VERSION = 1  # bump when labelling or the call simulator changes
DEFAULT_START = 1767600000.0  # 2026-01-05 08:00 UTC, as the factory datasets
# customer script stages whose second phrasing (index 1) is kept out of training: see module docstring
HELD_OUT_STAGES = ("sarc_open", "sarc_more", "sarc_close")
ProgressFn = Callable[[float, float], None]  # (done, total) in line-seconds


def _held_out_texts() -> list[str]:
    """Templates (with slots) of the held-out sarcastic phrasings."""
    from services.simulator.callcenter import LINES

    return [LINES[s][1][0] for s in HELD_OUT_STAGES]


def is_held_out_phrasing(text: str) -> bool:
    """Does this utterance use a held-out sarcastic phrasing? (slots filled in, so compare fixed parts)"""
    import re

    for template in _held_out_texts():
        pattern = "^" + re.sub(r"\\\{[a-z]+\\\}", ".+?", re.escape(template)) + "$"
        if re.match(pattern, text):
            return True
    return False


# ── datasets ────────────────────────────────────────────────────────────────────────────────

@dataclass(frozen=True)
class CallSpec:
    """Everything that defines a simulated call dataset (and its cache key)."""

    lines: int = 4  # concurrent calls (agents)
    seed: int = 0
    duration_s: float = 900.0
    start_time: float = DEFAULT_START
    mix: tuple[tuple[str, float], ...] = ()  # call-type weights; () = the simulator's default mix
    hop_s: float = 1.0
    min_speech_s: float = 0.5  # customer speech a window must hear to be labelled

    def key(self, features: FeatureConfig) -> str:
        blob = json.dumps({"spec": asdict(self), "features": features.to_dict(), "v": CALLCENTER_DATASET_VERSION},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def name(self, features: FeatureConfig) -> str:
        return f"calls-l{self.lines}-s{self.seed}-{int(self.duration_s)}s-{self.key(features)}"


def simulate_calls(spec: CallSpec, features: FeatureConfig, cache_dir: Path | None = None,
                   progress: ProgressFn | None = None, featurizer: Featurizer | None = None) -> WindowArrays:
    """Simulated calls -> featurized windows with per-window labels (cached under `cache_dir`).

    Labels: 'sentiment' (index into SENTIMENT_CLASSES, -1 = none), 'frustration' (NaN = none),
    'call_type' (index into CALL_TYPES), 'held_out' (window hears a held-out sarcastic phrasing),
    'has_line' (a transcript line of the customer starts in the window). The calls' ground truth
    is in meta['calls'].
    """
    from services.simulator.callcenter import CALL_TYPES, CallCenter
    from services.training.dataset import featurize_stream, windows_from_records

    path = cache_dir / spec.name(features) if cache_dir else None
    if path is not None and (path / "meta.json").exists():
        log.info("call dataset cache hit: %s", path)
        return WindowArrays.load(path)
    t0 = time.perf_counter()
    cc = CallCenter(spec.lines, seed=spec.seed, start_time=spec.start_time, mix=dict(spec.mix) or None)
    total = spec.duration_s * spec.lines

    def records() -> Iterator[tuple[Kind, WireRecord]]:
        done, step = 0.0, 10.0
        while done < spec.duration_s - 1e-9:
            d = min(step, spec.duration_s - done)
            yield from cc.records(d)
            done += d
            if progress:
                progress(done * spec.lines, total)

    feats = featurize_stream(windows_from_records(records(), features, spec.hop_s), features, featurizer)
    data = WindowArrays.from_features(feats, features, {"source": "callcenter-simulator", "spec": asdict(spec)})
    calls = [c.to_json() for c in cc.calls]
    data.meta["calls"] = calls
    data.meta["call_types"] = list(CALL_TYPES)
    data.labels.update(call_window_labels(data, calls, spec.min_speech_s))
    data.meta["build_seconds"] = round(time.perf_counter() - t0, 1)
    if path is not None:
        data.save(path)
        log.info("call dataset saved: %s (%d windows, %.0f s)", path, len(data), data.meta["build_seconds"])
    return data


def call_window_labels(data: WindowArrays, calls: list[dict], min_speech_s: float = 0.5) -> dict[str, np.ndarray]:
    """Per-window labels from the calls' utterance ground truth (see the module docstring)."""
    from services.simulator.callcenter import CALL_TYPES

    n, w = len(data), data.features.window_s
    sentiment = np.full(n, -1, np.int8)
    frustration = np.full(n, np.nan, np.float32)
    call_type = np.full(n, -1, np.int8)
    held_out = np.zeros(n, bool)
    has_line = np.zeros(n, bool)
    by_id = {c["call_id"]: c for c in calls}
    for i in range(n):
        call = by_id.get(data.assets[data.asset_idx[i]])
        if call is None:
            continue
        call_type[i] = CALL_TYPES.index(call["call_type"])
        s, e = float(data.start[i]), float(data.start[i]) + w
        votes = np.zeros(len(SENTIMENT_CLASSES))
        peak = -1.0
        for u in call["segments"]:
            if u["speaker"] != "customer":
                continue
            if s <= u["start"] < e:
                has_line[i] = True
            heard = min(e, u["end"]) - max(s, u["start"])
            if heard <= 0:
                continue
            votes[SENTIMENT_CLASSES.index(u["sentiment"])] += heard
            peak = max(peak, float(u["frustration"]))
            held_out[i] |= is_held_out_phrasing(u["text"])
        if votes.sum() >= min_speech_s:
            sentiment[i] = int(votes.argmax())
            frustration[i] = peak
    return {"sentiment": sentiment, "frustration": frustration, "call_type": call_type, "held_out": held_out,
            "has_line": has_line}


# ── training ────────────────────────────────────────────────────────────────────────────────

MODALITY_SETS = {"text": ("logs",), "audio": ("audio",), "fused": ("frames", "audio", "logs")}


@dataclass
class CallTrainConfig:
    steps: int = 600
    batch_size: int = 48
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 30
    frustration_weight: float = 2.0  # MSE on 0..1 is small next to cross-entropy
    balance_classes: bool = True  # draw each sentiment class equally often: positive windows are rare
    seed: int = 0
    threads: int | None = None  # torch CPU threads; None = leave as is
    device: str = "cpu"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CallTrainResult:
    steps: int
    seconds: float
    final_loss: float
    history: list[dict[str, float]] = field(default_factory=list)


def keep_modalities(batch, keep: tuple[str, ...]):
    """The batch with every modality not in `keep` masked out, exactly as a missing modality is
    masked live (the model sees no token of it, not zeros pretending to be silence)."""
    import torch

    if "frames" not in keep:
        batch.frame_mask = torch.zeros_like(batch.frame_mask)
    if "audio" not in keep:
        batch.audio_mask = torch.zeros_like(batch.audio_mask)
    if "logs" not in keep:
        batch.log_mask = torch.zeros_like(batch.log_mask)
        batch.log_present = torch.zeros_like(batch.log_present)
        batch.log_count = torch.zeros_like(batch.log_count)
    return batch


def trainable_windows(data: WindowArrays) -> np.ndarray:
    """Labelled windows that may be trained on: never one hearing a held-out sarcastic phrasing."""
    return np.flatnonzero((data.labels["sentiment"] >= 0) & ~data.labels["held_out"])


def train_call_model(model, data: WindowArrays, cfg: CallTrainConfig, keep: tuple[str, ...] = MODALITY_SETS["fused"],
                     progress: Callable[[int, int, dict], None] | None = None) -> CallTrainResult:
    """Supervised training of the fusion part and the sentiment/frustration heads on labelled
    windows. The intra-modal autoencoders are left alone (the call-centre profile does not score
    with them); log-mel normalisation and the other fitted buffers are set from `data` first."""
    import torch
    import torch.nn.functional as F

    from models.train import fit_normalisers

    if model.sentiment_head is None or model.frustration_head is None:
        raise ConfigError("the call-centre model needs sentiment_classes and frustration_head=True in its FusionConfig")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fit_normalisers(model, data)
    model.to(cfg.device)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    pool = trainable_windows(data)
    if not len(pool):
        raise ConfigError("no labelled call windows to train on; simulate longer (more calls)")
    y_all = data.labels["sentiment"]
    by_class = [pool[y_all[pool] == k] for k in range(len(SENTIMENT_CLASSES))]
    by_class = [p for p in by_class if len(p)]
    params = [p for n, p in model.named_parameters() if not n.startswith(model.INTRA_PREFIXES)]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []
    loss_value = float("nan")
    for step in range(cfg.steps):
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + np.cos(np.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        if cfg.balance_classes:
            idx = np.concatenate([p[rng.integers(len(p), size=cfg.batch_size // len(by_class))] for p in by_class])
        else:
            idx = pool[rng.integers(len(pool), size=cfg.batch_size)]
        model.train()
        batch = keep_modalities(data.batch(idx, model.code_vocab), keep).to(cfg.device)
        _, summary, _ = model.fuse(model.tokens(batch))
        y = torch.from_numpy(y_all[idx].astype(np.int64)).to(cfg.device)
        f = torch.from_numpy(data.labels["frustration"][idx].astype(np.float32)).to(cfg.device)
        ce = F.cross_entropy(model.sentiment_head(summary), y)
        mse = F.mse_loss(torch.sigmoid(model.frustration_head(summary)).squeeze(1), f)
        loss = ce + cfg.frustration_weight * mse
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss_value = float(loss.detach())
        if (step + 1) % 10 == 0:
            history.append({"step": step + 1, "loss": loss_value, "ce": float(ce), "mse": float(mse)})
        if progress:
            progress(step + 1, cfg.steps, {"loss": loss_value})
    model.eval()
    return CallTrainResult(cfg.steps, time.perf_counter() - t0, loss_value, history)


def predict(model, data: WindowArrays, keep: tuple[str, ...] = MODALITY_SETS["fused"], idx: np.ndarray | None = None,
            batch_size: int = 128, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Sentiment probabilities (n, 3) and frustration (n,) for windows `idx` (default: all)."""
    import torch

    idx = np.arange(len(data)) if idx is None else np.asarray(idx)
    model.eval().to(device)
    probs, frus = [], []
    with torch.inference_mode():
        for i in range(0, len(idx), batch_size):
            batch = keep_modalities(data.batch(idx[i:i + batch_size], model.code_vocab), keep).to(device)
            _, summary, _ = model.fuse(model.tokens(batch))
            probs.append(model.sentiment_head(summary).softmax(-1).float().cpu().numpy())
            frus.append(torch.sigmoid(model.frustration_head(summary)).squeeze(1).float().cpu().numpy())
    if not probs:
        return np.zeros((0, len(SENTIMENT_CLASSES)), np.float32), np.zeros(0, np.float32)
    return np.concatenate(probs), np.concatenate(frus)


# ── evaluation ──────────────────────────────────────────────────────────────────────────────

@dataclass
class CallRow:
    """One model or baseline on the held-out test calls."""

    name: str
    window_accuracy: float
    window_macro_f1: float
    call_accuracy: float
    call_macro_f1: float
    sarcastic_window_accuracy: float
    sarcastic_call_accuracy: float
    sarcastic_held_out_accuracy: float  # windows hearing a phrasing never trained on
    sarcastic_seen_accuracy: float  # sarcastic windows whose phrasing was trained on
    frustration_mae: float
    escalated: dict[str, float]  # call type -> fraction of calls with an escalation event
    confusion: list[list[int]]  # rows: true class, columns: predicted (SENTIMENT_CLASSES order)
    note: str = ""


@dataclass
class CallEvalReport:
    rows: list[CallRow]
    classes: list[str]
    windows: int  # labelled test windows
    calls: dict[str, int]  # call type -> test calls
    sarcastic_windows: int
    held_out_windows: int
    test: dict
    train: list[dict]
    validation: dict
    train_config: dict
    seconds: dict[str, float] = field(default_factory=dict)  # training time per trained model
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        from services.training.evaluate import _finite

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_finite(self.to_dict()), indent=2))

    def row(self, name: str) -> CallRow:
        return next(r for r in self.rows if r.name == name)


@dataclass
class Predictions:
    probs: np.ndarray  # (N, 3) for every window of the dataset
    frustration: np.ndarray  # (N,)


def call_labels(data: WindowArrays) -> dict[str, int]:
    """Call id -> call-level sentiment: the majority of its labelled windows (ties: the more
    negative class, the one a supervisor would want to hear about)."""
    y = data.labels["sentiment"]
    out = {}
    for a, asset in enumerate(data.assets):
        sel = (data.asset_idx == a) & (y >= 0)
        if sel.any():
            out[asset] = int(np.bincount(y[sel], minlength=len(SENTIMENT_CLASSES)).argmax())
    return out


def call_predictions(data: WindowArrays, probs: np.ndarray) -> dict[str, int]:
    """Call id -> predicted call sentiment: argmax of the mean probabilities over the windows where
    the customer speaks (a speaker-tagged transcript says where that is, live)."""
    y = data.labels["sentiment"]
    out = {}
    for a, asset in enumerate(data.assets):
        sel = (data.asset_idx == a) & (y >= 0)
        if sel.any():
            out[asset] = int(probs[sel].mean(0).argmax())
    return out


def escalations(data: WindowArrays, frustration: np.ndarray, threshold: float = 0.6, open_after: int = 2,
                close_after: int = 3) -> dict[str, int]:
    """Escalation events per call: the monitor's own hysteresis lifecycle over every window of
    the call (agent-only windows included, as live), frustration against `threshold`."""
    from services.training.evaluate import run_lifecycle

    events = run_lifecycle(frustration, np.full(len(data), threshold), data, open_after, close_after)
    out = {a: 0 for a in data.assets}
    for asset, _, _ in events:
        out[asset] += 1
    return out


def score_row(name: str, data: WindowArrays, pred: Predictions, threshold: float = 0.6, note: str = "") -> CallRow:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    from services.simulator.callcenter import CALL_TYPES

    y = data.labels["sentiment"]
    lab = y >= 0
    yp = pred.probs.argmax(1)
    sarc = lab & (data.labels["call_type"] == CALL_TYPES.index("sarcastic"))
    held = sarc & data.labels["held_out"]
    seen = sarc & ~data.labels["held_out"]

    def acc(sel) -> float:
        return float(accuracy_score(y[sel], yp[sel])) if sel.any() else float("nan")

    truth, guess = call_labels(data), call_predictions(data, pred.probs)
    ids = sorted(truth)
    ct = np.array([truth[i] for i in ids])
    cp = np.array([guess[i] for i in ids])
    types = {c["call_id"]: c["call_type"] for c in data.meta.get("calls", [])}
    sarc_calls = np.array([types.get(i) == "sarcastic" for i in ids], bool)
    esc = escalations(data, pred.frustration, threshold)
    escalated = {}
    for t in CALL_TYPES:
        calls_t = [i for i in ids if types.get(i) == t]
        escalated[t] = float(np.mean([esc.get(i, 0) > 0 for i in calls_t])) if calls_t else float("nan")
    f_true = data.labels["frustration"]
    return CallRow(
        name=name, window_accuracy=acc(lab), window_macro_f1=float(f1_score(y[lab], yp[lab], average="macro")),
        call_accuracy=float(accuracy_score(ct, cp)) if len(ids) else float("nan"),
        call_macro_f1=float(f1_score(ct, cp, average="macro")) if len(ids) else float("nan"),
        sarcastic_window_accuracy=acc(sarc),
        sarcastic_call_accuracy=float(accuracy_score(ct[sarc_calls], cp[sarc_calls])) if sarc_calls.any() else float("nan"),
        sarcastic_held_out_accuracy=acc(held), sarcastic_seen_accuracy=acc(seen),
        frustration_mae=float(np.abs(pred.frustration[lab] - f_true[lab]).mean()),
        escalated=escalated,
        confusion=confusion_matrix(y[lab], yp[lab], labels=list(range(len(SENTIMENT_CLASSES)))).tolist(),
        note=note,
    )


def late_fusion(text: Predictions, audio: Predictions, weight: float) -> Predictions:
    """Decision-level fusion: a weighted geometric mean of the two single-modality models'
    probabilities (weight on text) and the same weighting of their frustration."""
    logp = weight * np.log(text.probs.clip(1e-6)) + (1 - weight) * np.log(audio.probs.clip(1e-6))
    p = np.exp(logp - logp.max(1, keepdims=True))
    return Predictions(p / p.sum(1, keepdims=True), weight * text.frustration + (1 - weight) * audio.frustration)


def pick_late_weight(data: WindowArrays, text: Predictions, audio: Predictions) -> float:
    """Weight on text chosen on the validation calls (window macro-F1), never on the test calls."""
    from sklearn.metrics import f1_score

    y = data.labels["sentiment"]
    lab = y >= 0
    best, best_w = -1.0, 0.5
    for w in np.linspace(0, 1, 11):
        f1 = f1_score(y[lab], late_fusion(text, audio, w).probs[lab].argmax(1), average="macro")
        if f1 > best + 1e-9:
            best, best_w = f1, float(w)
    return best_w
