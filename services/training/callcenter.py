"""Call-centre profile: labelled call windows, the sentiment/frustration recipe, the evaluation table.

Where it sits: beside `services.training.dataset` (the factory's data hop) for `fusionwatch train
--profile callcenter` / `fusionwatch eval --profile callcenter` and for the first start of
`fusionwatch up --profile callcenter`. Calls come from the call simulator
(`services.simulator.callcenter`), go through the monitor's own offline aligner and the model's
featurizer — exactly what the monitor will see live — and get one label per window:

- **sentiment**: the majority of the customer's labelled utterances heard in the window, each
  weighted by how long it is heard there; windows with less than `min_speech_s` of customer
  speech are unlabelled (-1): the agent's tone says nothing about the customer's mood;
- **frustration**: the highest frustration among those utterances (NaN where unlabelled);
- the call's **mood** for every window (the customer's latest utterance so far): the monitor
  scores agent-only windows too, so a share of each training batch teaches their *sentiment* to
  follow the call (their frustration stays untrained: an agent-only window cannot know it).

Training (`train_call_model`) is supervised and end to end over the fusion part (state encoders,
log encoder, fusion, heads): the unsupervised consistency objective of the factory says nothing
about tone. Every row of the evaluation uses the same model class, encoders and step budget; the
single-modality rows train the same model with the other modality masked, the way a missing
modality is masked live. Measured figures and how to read them: docs/callcenter.md.

Sarcasm protocol. The simulator draws every customer line from two phrasings per script stage; a
frozen sentence encoder plus a trained head would simply memorise that "Oh wonderful, another 40
minutes on hold" is negative, which says nothing about sarcasm it has not heard. So one phrasing of
each sarcastic stage (`HELD_OUT_PHRASINGS`) is never trained on: windows that hear it are dropped
from the training and validation sets. The sarcastic row of the test table reports both the held-out
phrasings (the honest test: positive words the text model has never seen labelled) and the seen
ones.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from models.data import WindowArrays
from models.features import FeatureConfig, Featurizer
from schemas.errors import ConfigError
from services.training.callcenter_data import SENTIMENT_CLASSES, CallDirConfig, featurize_recordings, read_call_dir, recording_from_sim
from services.training.callcenter_eval import (
    Predictions,
    call_outcomes,
    escalation_events,
    escalation_score,
    turn_predictions,
    turn_truth,
    vader_predictions,
)
from streamlogic.escalation import EscalationRule

if TYPE_CHECKING:
    from models.fusion import FusionConfig, FusionModel, FusionVariant

log = logging.getLogger(__name__)

CALLCENTER_DATASET_VERSION = 2  # bump when featurization or the call simulator changes (cached datasets)
LABELS_VERSION = 3  # labels are re-derived on load; bump when they change (trained eval rows are redone)
DEFAULT_START = 1767600000.0  # 2026-01-05 08:00 UTC, as the factory datasets
# customer script stages whose second phrasing (index 1) is kept out of training: see module docstring
HELD_OUT_STAGES = ("sarc_open", "sarc_more", "sarc_close")
ProgressFn = Callable[[float, float], None]  # (done, total) in line-seconds


@functools.lru_cache(maxsize=1)
def _held_out_patterns() -> tuple["re.Pattern[str]", ...]:
    """The held-out sarcastic phrasings as patterns: their slots ({minutes}, {product}) match anything."""
    from services.simulator.callcenter import AGENT_STAGES, LINES, SEEN_PHRASINGS

    templates = [LINES[s][1][0] for s in HELD_OUT_STAGES]
    # the unseen third phrasings are never trained on either (no training spec says them)
    templates += [t for stage, v in LINES.items() if stage not in AGENT_STAGES for t, _, _ in v[SEEN_PHRASINGS:]]
    return tuple(re.compile("^" + re.sub(r"\\\{[a-z]+\\\}", ".+?", re.escape(t)) + "$") for t in templates)


def is_held_out_phrasing(text: str) -> bool:
    """Does this utterance use a held-out sarcastic phrasing?"""
    return any(p.match(text) for p in _held_out_patterns())


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
    # "unseen": every customer line in a third phrasing no recipe trains on (held-out wording)
    phrasings: str = "seen"

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
    'has_line' (a transcript line of the customer starts in the window), and the call's *mood*
    for every window ('mood_sentiment', 'mood_frustration': the labels where the customer speaks,
    else the customer's latest utterance so far). The calls' ground truth is in meta['calls'].
    """
    from services.simulator.callcenter import CALL_TYPES, CallCenter

    path = cache_dir / spec.name(features) if cache_dir else None
    if path is not None and (path / "meta.json").exists():
        log.info("call dataset cache hit: %s", path)
        data = WindowArrays.load(path)
        # labels are cheap to derive from the stored ground truth: a labelling change needs no re-simulation
        data.labels.update(call_window_labels(data, data.meta["calls"], spec.min_speech_s))
        return data
    t0 = time.perf_counter()
    cc = CallCenter(spec.lines, seed=spec.seed, start_time=spec.start_time, mix=dict(spec.mix) or None,
                    sample_rate=features.sample_rate, phrasings=spec.phrasings)
    total = spec.duration_s * spec.lines

    def recordings():
        for call in cc.complete_calls(spec.duration_s):
            yield recording_from_sim(call)
            call.audio = call.channels = None
            if progress:
                progress(min(total, (call.start - spec.start_time) * spec.lines), total)

    data = featurize_recordings(recordings(), features, spec.hop_s, featurizer,
                                {"source": "callcenter-simulator", "spec": asdict(spec)})
    data.meta["call_types"] = list(CALL_TYPES)
    data.labels.update(call_window_labels(data, data.meta["calls"], spec.min_speech_s))
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
    mood_sentiment = np.full(n, SENTIMENT_CLASSES.index("neutral"), np.int8)
    mood_frustration = np.zeros(n, np.float32)
    mood_held_out = np.zeros(n, bool)  # the mood comes from a held-out phrasing: not trained on either
    in_call = np.zeros(n, bool)
    by_id = {c["call_id"]: c for c in calls}
    for i in range(n):
        call = by_id.get(data.assets[data.asset_idx[i]])
        if call is None:
            continue
        in_call[i] = True
        call_type[i] = CALL_TYPES.index(call["call_type"]) if call.get("call_type") in CALL_TYPES else -1
        s, e = float(data.start[i]), float(data.start[i]) + w
        votes = np.zeros(len(SENTIMENT_CLASSES))
        peak = -1.0
        for u in call["segments"]:
            if u["speaker"] != "customer" or u.get("sentiment") not in SENTIMENT_CLASSES:
                continue  # the agent's tone, or a turn nobody labelled
            if s <= u["start"] < e:
                has_line[i] = True
            heard = min(e, u["end"]) - max(s, u["start"])
            if heard <= 0:
                continue
            votes[SENTIMENT_CLASSES.index(u["sentiment"])] += heard
            if u.get("frustration") is not None:
                peak = max(peak, float(u["frustration"]))
            held_out[i] |= is_held_out_phrasing(u["text"])
        if votes.sum() >= min_speech_s:
            sentiment[i] = int(votes.argmax())
            frustration[i] = peak if peak >= 0 else np.nan
            mood_sentiment[i], mood_frustration[i] = sentiment[i], max(peak, 0.0)
        else:  # the call's mood: the customer's latest utterance by the window's end (neutral before any)
            latest = [u for u in call["segments"] if u["speaker"] == "customer" and u["start"] < e
                      and u.get("sentiment") in SENTIMENT_CLASSES]
            if latest:
                mood_sentiment[i] = SENTIMENT_CLASSES.index(latest[-1]["sentiment"])
                mood_frustration[i] = float(latest[-1].get("frustration") or 0.0)
                mood_held_out[i] = is_held_out_phrasing(latest[-1]["text"])
    return {"sentiment": sentiment, "frustration": frustration, "call_type": call_type, "held_out": held_out,
            "has_line": has_line, "mood_sentiment": mood_sentiment, "mood_frustration": mood_frustration,
            "mood_held_out": mood_held_out, "in_call": in_call}


# ── training ────────────────────────────────────────────────────────────────────────────────

# "channels": a stereo call's agent and customer channels are seen apart (else only their mix)
MODALITY_SETS = {"text": ("logs",), "audio": ("audio", "channels"), "fused": ("frames", "audio", "logs", "channels"),
                 "mono": ("frames", "audio", "logs")}


@dataclass
class CallTrainConfig:
    steps: int = 600
    batch_size: int = 48
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 30
    frustration_weight: float = 2.0  # MSE on 0..1 is small next to cross-entropy
    balance_classes: bool = True  # draw each sentiment class equally often: positive windows are rare
    # share of each batch drawn from windows without customer speech, whose *sentiment* is trained
    # towards the call's mood (the customer's latest utterance): the monitor scores those windows
    # too, and the call's sentiment curve and outcome must not swing whenever the agent talks
    mood_fraction: float = 0.25
    # share of stereo windows shown as their mono mix (channels masked): the live monitor decodes
    # audio to mono until the wire carries channels, and mono recordings exist
    mono_fraction: float = 0.3
    seed: int = 0
    # torch CPU threads while training (restored after); None = leave as is. One by default: at
    # these tensor sizes a second thread costs more in synchronisation than it gains (measured on
    # the 2-core box: 300 steps took 41 CPU-s on one thread, 340 CPU-s on two)
    threads: int | None = 1
    device: str = "cpu"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CallTrainResult:
    steps: int
    seconds: float
    final_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    cpu_seconds: float = 0.0  # process CPU time: comparable on a shared machine, unlike wall time


def keep_modalities(batch, keep: tuple[str, ...]):
    """The batch with every modality not in `keep` masked out, exactly as a missing modality is
    masked live (the model sees no token of it, not zeros pretending to be silence)."""
    import torch

    if "frames" not in keep:
        batch.frame_mask = torch.zeros_like(batch.frame_mask)
    if "audio" not in keep:
        batch.audio_mask = torch.zeros_like(batch.audio_mask)
        if batch.channel_mask is not None:
            batch.channel_mask = torch.zeros_like(batch.channel_mask)
    if "channels" not in keep and batch.channel_mask is not None:  # a mono line: the mix only
        batch.channel_mask = torch.zeros_like(batch.channel_mask)
    if "logs" not in keep:
        batch.log_mask = torch.zeros_like(batch.log_mask)
        batch.log_present = torch.zeros_like(batch.log_present)
        batch.log_count = torch.zeros_like(batch.log_count)
    return batch


def trainable_windows(data: WindowArrays) -> np.ndarray:
    """Labelled windows that may be trained on: never one hearing a held-out sarcastic phrasing."""
    return np.flatnonzero((data.labels["sentiment"] >= 0) & ~data.labels["held_out"])


def mood_windows(data: WindowArrays) -> np.ndarray:
    """Windows without (enough) customer speech, trained towards the call's mood. Never one that
    hears a held-out phrasing, nor one whose mood comes from such an utterance."""
    if "mood_sentiment" not in data.labels:
        return np.zeros(0, np.int64)
    unlabelled = (data.labels["sentiment"] < 0) & data.labels.get("in_call", data.labels["call_type"] >= 0)
    return np.flatnonzero(unlabelled & ~data.labels["held_out"] & ~data.labels["mood_held_out"])


def train_call_model(model, data: WindowArrays, cfg: CallTrainConfig, keep: tuple[str, ...] = MODALITY_SETS["fused"],
                     progress: Callable[[int, int, dict], None] | None = None) -> CallTrainResult:
    """Supervised training of the fusion part and the sentiment/frustration heads on labelled
    windows. The intra-modal autoencoders are left alone (the call-centre profile does not score
    with them); log-mel normalisation and the other fitted buffers are set from `data` first."""
    import torch

    if model.sentiment_head is None or model.frustration_head is None:
        raise ConfigError("the call-centre model needs sentiment_classes and frustration_head=True in its FusionConfig")
    previous_threads = torch.get_num_threads()
    if cfg.threads and cfg.device == "cpu":
        torch.set_num_threads(cfg.threads)
    try:
        return _train_call_model(model, data, cfg, keep, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _train_call_model(model, data: WindowArrays, cfg: CallTrainConfig, keep: tuple[str, ...],
                      progress: Callable[[int, int, dict], None] | None) -> CallTrainResult:
    import torch
    import torch.nn.functional as F

    from models.train import fit_normalisers, set_lr, warmup_cosine_lr

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
    mood_pool = mood_windows(data)
    n_mood = int(round(cfg.batch_size * cfg.mood_fraction)) if len(mood_pool) else 0
    n_lab = cfg.batch_size - n_mood
    y_mood = np.where(y_all >= 0, y_all, data.labels["mood_sentiment"]).astype(np.int64)
    # frustration is a property of the customer's voice: trained only where the customer speaks (an
    # agent-only window cannot tell how angry the customer is, and guessing would open escalations)
    f_all = data.labels["frustration"].astype(np.float32)
    params = [p for n, p in model.named_parameters() if not n.startswith(model.INTRA_PREFIXES)]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    t0, cpu0 = time.perf_counter(), time.process_time()
    history: list[dict[str, float]] = []
    loss_value = float("nan")
    for step in range(cfg.steps):
        set_lr(opt, warmup_cosine_lr(cfg.lr, step, cfg.steps, cfg.warmup_steps))
        if cfg.balance_classes:
            idx = np.concatenate([p[rng.integers(len(p), size=n_lab // len(by_class))] for p in by_class])
        else:
            idx = pool[rng.integers(len(pool), size=n_lab)]
        if n_mood:
            idx = np.concatenate([idx, mood_pool[rng.integers(len(mood_pool), size=n_mood)]])
        model.train()
        batch = keep_modalities(data.batch(idx, model.code_vocab), keep)
        if batch.channel_mask is not None and cfg.mono_fraction > 0:
            mono = torch.from_numpy(rng.random(len(idx)) < cfg.mono_fraction)
            batch.channel_mask = batch.channel_mask & ~mono[:, None, None]
        batch = batch.to(cfg.device)
        _, summary, _ = model.fuse(model.tokens(batch))
        y = torch.from_numpy(y_mood[idx]).to(cfg.device)
        f = torch.from_numpy(f_all[idx]).to(cfg.device)
        heard = ~torch.isnan(f)
        ce = F.cross_entropy(model.sentiment_head(summary), y)
        mse = F.mse_loss(torch.sigmoid(model.frustration_head(summary)).squeeze(1)[heard], f[heard])
        loss = ce + cfg.frustration_weight * mse
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss_value = float(loss.detach())
        if (step + 1) % 10 == 0:
            history.append({"step": step + 1, "loss": loss_value, "ce": ce.item(), "mse": mse.item()})
        if progress:
            progress(step + 1, cfg.steps, {"loss": loss_value})
    model.eval()
    return CallTrainResult(cfg.steps, time.perf_counter() - t0, loss_value, history, time.process_time() - cpu0)


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
    # where the customer's transcript line is in the window (text has the words) and where it is
    # not (the line is stamped at the utterance's start; later windows of it only hear it)
    with_line_accuracy: float
    without_line_accuracy: float
    sarcastic_held_out_with_line_accuracy: float  # positive words never trained on, in the window
    frustration_mae: float
    outcome_accuracy: float  # the call summary's "overall" (monitor's rule) vs how the call ended
    escalated: dict[str, float]  # call type -> fraction of complete calls with an escalation event
    events_per_escalated_call: float  # > 1: the event closed and opened again within one call
    confusion: list[list[int]]  # rows: true class, columns: predicted (SENTIMENT_CLASSES order)
    note: str = ""
    # per labelled customer turn: the windows' probabilities weighted by how much of the turn each hears
    turn_accuracy: float = float("nan")
    turn_macro_f1: float = float("nan")
    escalation_recall: float = float("nan")  # complete calls that should escalate with an event
    spurious_per_100_calls: float = float("nan")  # events where none was due + repeats within a call


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
    source: str = "sim"  # "sim" (the simulator's test seed) or "dir:PATH" (labelled call folders)
    turns: int = 0  # labelled customer turns of the test calls

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        from services.training.evaluate import json_safe

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(self.to_dict()), indent=2))

    def row(self, name: str) -> CallRow:
        return next(r for r in self.rows if r.name == name)


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


def score_row(name: str, data: WindowArrays, pred: Predictions, rule: EscalationRule | None = None,
              note: str = "") -> CallRow:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    from services.simulator.callcenter import CALL_TYPES

    y = data.labels["sentiment"]
    lab = y >= 0
    yp = pred.probs.argmax(1)
    sarc = lab & (data.labels["call_type"] == CALL_TYPES.index("sarcastic"))
    held = sarc & data.labels["held_out"]
    seen = sarc & ~data.labels["held_out"]
    line = data.labels["has_line"]

    def acc(sel) -> float:
        return float(accuracy_score(y[sel], yp[sel])) if sel.any() else float("nan")

    truth, guess = call_labels(data), call_predictions(data, pred.probs)
    ids = sorted(truth)
    ct = np.array([truth[i] for i in ids])
    cp = np.array([guess[i] for i in ids])
    types = {c["call_id"]: c["call_type"] for c in data.meta.get("calls", [])}
    sarc_calls = np.array([types.get(i) == "sarcastic" for i in ids], bool)
    esc = escalation_events(data, pred.frustration, rule or EscalationRule())
    run_end = float(data.start.max()) + data.features.window_s if len(data) else 0.0
    complete = {c["call_id"] for c in data.meta.get("calls", []) if c["end"] <= run_end}  # not cut by the run's end
    escalated = {}
    for t in CALL_TYPES:
        calls_t = [i for i in ids if types.get(i) == t and i in complete]
        escalated[t] = float(np.mean([esc.get(i, 0) > 0 for i in calls_t])) if calls_t else float("nan")
    f_true = data.labels["frustration"]
    outcome_true, outcome_pred = call_outcomes(data, pred.probs, complete)
    per_call = [esc[i] for i in ids if i in complete and esc.get(i, 0) > 0]
    esc_score = escalation_score(data, esc, complete)
    yt = turn_truth(data)
    tp = (pred.turn_probs if pred.turn_probs is not None else turn_predictions(data, pred.probs)).argmax(1) \
        if len(yt) else np.zeros(0, int)
    return CallRow(
        name=name, window_accuracy=acc(lab), window_macro_f1=float(f1_score(y[lab], yp[lab], average="macro")),
        call_accuracy=float(accuracy_score(ct, cp)) if len(ids) else float("nan"),
        call_macro_f1=float(f1_score(ct, cp, average="macro")) if len(ids) else float("nan"),
        sarcastic_window_accuracy=acc(sarc),
        sarcastic_call_accuracy=float(accuracy_score(ct[sarc_calls], cp[sarc_calls])) if sarc_calls.any() else float("nan"),
        sarcastic_held_out_accuracy=acc(held), sarcastic_seen_accuracy=acc(seen),
        with_line_accuracy=acc(lab & line), without_line_accuracy=acc(lab & ~line),
        sarcastic_held_out_with_line_accuracy=acc(held & line),
        frustration_mae=float(np.abs(pred.frustration[lab] - f_true[lab]).mean()),
        outcome_accuracy=float(np.mean(outcome_true == outcome_pred)) if len(outcome_true) else float("nan"),
        escalated=escalated, events_per_escalated_call=float(np.mean(per_call)) if per_call else float("nan"),
        confusion=confusion_matrix(y[lab], yp[lab], labels=list(range(len(SENTIMENT_CLASSES)))).tolist(),
        note=note,
        turn_accuracy=float(accuracy_score(yt, tp)) if len(yt) else float("nan"),
        turn_macro_f1=float(f1_score(yt, tp, average="macro")) if len(yt) else float("nan"),
        escalation_recall=esc_score.recall, spurious_per_100_calls=esc_score.spurious_per_100_calls,
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


# ── recipes ─────────────────────────────────────────────────────────────────────────────────

# Video calls are optional: two frame slots per 2 s window (1 fps) keep a face in view without
# paying for eight empty slots on every audio-only call.
# Telephony is 8 kHz: the call-centre features are computed at 8 kHz (the telephone band, up to
# 4 kHz; 20 ms hop, 32 ms FFT, 40 mel bands), so a narrowband call is never upsampled and a
# wideband one is downsampled to what every phone line carries.
CALL_FEATURES = FeatureConfig(max_frames=2, sample_rate=8000, n_fft=256, hop_length=160, n_mels=40, f_max=4000.0)
StageFn = Callable[[str, float, float, dict], None]  # (stage, done, total, info), as services.training.ui


@dataclass(frozen=True)
class CallRecipe:
    name: str
    train: tuple[CallSpec, ...]  # training seeds
    validation: CallSpec  # model checks and the late-fusion weight; never trained on
    test: CallSpec  # evaluation only
    model: tuple[tuple[str, object], ...] = ()  # FusionConfig overrides
    steps: tuple[tuple[str, object], ...] = ()  # CallTrainConfig overrides
    tiny_model: bool = False
    description: str = ""

    def model_config(self, variant: FusionVariant = "cross") -> FusionConfig:
        from models.fusion import FusionConfig

        base = FusionConfig.tiny if self.tiny_model else FusionConfig
        kw: dict[str, Any] = {"dropout": 0.0, **dict(self.model)}  # weight decay regularises; attention dropout doubles CPU time
        return base(fusion=variant, sentiment_classes=list(SENTIMENT_CLASSES), frustration_head=True,
                    speaker_embedding=True, channel_audio=True, features=CALL_FEATURES, **kw)

    def train_config(self, **overrides) -> CallTrainConfig:
        return CallTrainConfig(**{**dict(self.steps), **{k: v for k, v in overrides.items() if v is not None}})

    def summary(self) -> dict:
        return {"name": self.name, "train": [asdict(s) for s in self.train], "validation": asdict(self.validation),
                "test": asdict(self.test), "steps": dict(self.steps), "description": self.description}


CALL_RECIPES: dict[str, CallRecipe] = {
    "tiny": CallRecipe(
        "tiny", (CallSpec(lines=2, seed=201, duration_s=180),), CallSpec(lines=2, seed=202, duration_s=90),
        CallSpec(lines=2, seed=203, duration_s=180), tiny_model=True, steps=(("steps", 120), ("batch_size", 24)),
        description="about a minute; tests and smoke runs"),
    "quick": CallRecipe(
        "quick", (CallSpec(lines=4, seed=1, duration_s=600),), CallSpec(lines=4, seed=3, duration_s=300),
        CallSpec(lines=4, seed=4, duration_s=1800), steps=(("steps", 300),),
        description="a few minutes on 2 CPU cores; what `fusionwatch up --profile callcenter` trains on first start"),
    "standard": CallRecipe(
        "standard", (CallSpec(lines=4, seed=1, duration_s=900), CallSpec(lines=4, seed=2, duration_s=900)),
        CallSpec(lines=4, seed=3, duration_s=900), CallSpec(lines=4, seed=11, duration_s=900, phrasings="unseen"),
        steps=(("steps", 300),), description="the evaluated recipe"),
}


def get_call_recipe(name: str) -> CallRecipe:
    try:
        return CALL_RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown call-centre recipe {name!r}; choose one of {', '.join(CALL_RECIPES)}") from None


def load_call_data(recipe: CallRecipe, cache_dir: Path | None, progress: StageFn | None = None,
                   which: tuple[str, ...] = ("train", "validation")) -> dict[str, WindowArrays]:
    """The recipe's datasets (simulated once, then cached): 'train' (seeds concatenated), 'validation', 'test'."""
    out: dict[str, WindowArrays] = {}
    for name in which:
        specs = recipe.train if name == "train" else (getattr(recipe, name),)
        parts = []
        for spec in specs:
            def p(done, total, stage=f"simulate {name} (seed {spec.seed})"):
                if progress:
                    progress(stage, done, total, {})

            parts.append(simulate_calls(spec, CALL_FEATURES, cache_dir, p))
        out[name] = parts[0] if len(parts) == 1 else WindowArrays.concat(parts)
    return out


ROWS: dict[str, tuple[FusionVariant, tuple[str, ...]]] = {  # row -> (fusion variant, modalities the model sees)
    "text_only": ("cross", MODALITY_SETS["text"]),
    "audio_only": ("cross", MODALITY_SETS["audio"]),
    "concat_fusion": ("concat", MODALITY_SETS["fused"]),
    "cross_attention": ("cross", MODALITY_SETS["fused"]),
}


EVAL_ROWS = ("vader", "text_only", "audio_only", "late_fusion", "concat_fusion", "cross_attention",
             "cross_attention_mono")


@dataclass
class TrainedCallModel:
    model: FusionModel
    path: Path
    info: dict


def train_call_checkpoint(recipe: CallRecipe, out_dir: Path, row: str = "cross_attention", cache_dir: Path | None = None,
                          progress: StageFn | None = None, device: str = "cpu", data: dict | None = None,
                          overrides: dict | None = None) -> TrainedCallModel:
    """Train one row's model with a recipe and save it as a checkpoint directory the monitor loads."""
    from models import checkpoint
    from models.calibration import AssetCalibration, Calibration
    from models.fusion import FusionModel
    from services.training.recipes import jsonable

    variant, keep = ROWS[row]
    data = data or load_call_data(recipe, cache_dir, progress)
    cfg = recipe.train_config(device=device, **(overrides or {}))
    model = FusionModel(recipe.model_config(variant))

    def p(step, steps, info):
        if progress:
            progress(f"train {row}", step, steps, info)

    result = train_call_model(model, data["train"], cfg, keep, p)
    val = score_row(row, data["validation"], Predictions(*predict(model, data["validation"], keep, device=device)))
    info = {"profile": "callcenter", "recipe": recipe.name, "row": row, "modalities": list(keep),
            "train_seconds": round(result.seconds, 1), "train_cpu_seconds": round(result.cpu_seconds, 1),
            "steps": result.steps, "final_loss": round(result.final_loss, 4),
            "threads": cfg.threads or _threads(), "train_config": cfg.to_dict(), "recipe_spec": recipe.summary(),
            "train_windows": int(len(trainable_windows(data["train"]))),
            "validation": {"window_accuracy": val.window_accuracy, "window_macro_f1": val.window_macro_f1,
                           "call_accuracy": val.call_accuracy, "sarcastic_window_accuracy": val.sarcastic_window_accuracy,
                           "escalated": val.escalated}}
    # The anomaly score is not what the call-centre profile alerts on (escalation = frustration
    # against monitor.escalation_threshold), so the calibration is a pass-through.
    calibration = Calibration(pooled=AssetCalibration(0.0, 1.0, 3.0))
    version = checkpoint.model_version(model)
    checkpoint.save(out_dir, model, calibration, card=call_model_card(version, model, info),
                    extra={"training": jsonable(info), "callcenter": {"modalities": list(keep)}}, version=version)
    return TrainedCallModel(model, Path(out_dir), info | {"version": version})


def train_quick_callcenter(out_dir: Path, progress: bool = True, cache_dir: Path | None = None,
                           device: str = "auto", recipe: str = "quick") -> Path:
    """The first-start model of `fusionwatch up --profile callcenter`; returns the checkpoint dir."""
    from models.scorer import pick_device
    from services.settings import get_settings
    from services.training.ui import progress_bars

    cache_dir = cache_dir or get_settings().var_dir / "datasets"
    with progress_bars(progress) as bar:
        train_call_checkpoint(get_call_recipe(recipe), Path(out_dir), cache_dir=cache_dir, progress=bar,
                              device=pick_device(device))
    return Path(out_dir)


def evaluate_callcenter(recipe: CallRecipe, out_root: Path, cache_dir: Path | None = None,
                        progress: StageFn | None = None, device: str = "cpu", reuse: bool = True,
                        test: CallSpec | None = None, rule: EscalationRule | None = None,
                        rows: tuple[str, ...] = EVAL_ROWS, test_data: WindowArrays | None = None,
                        source: str = "sim") -> CallEvalReport:
    """Every row on held-out calls: VADER on the transcript, single-modality models, late fusion
    of those two, concatenation and cross-attention (also fed the mono mix, as a mono line or
    today's monitor gives it), all trained with the same model class, encoders and step budget on
    the recipe's simulated calls. Test calls: the recipe's test seed (or `test`), or `test_data`
    (a user's labelled call folders). The late-fusion weight is chosen on the validation calls."""
    from models import checkpoint

    rule = rule or EscalationRule()
    test = test or recipe.test
    if test_data is None and test.seed in {s.seed for s in recipe.train} | {recipe.validation.seed}:
        raise ConfigError(f"test seed {test.seed} is a training or validation seed of recipe {recipe.name}; "
                          "evaluate on a held-out seed")
    data = load_call_data(recipe, cache_dir, progress, which=("train", "validation"))

    def pt(stage, done, total, info):
        if progress:
            progress("simulate test", done, total, info)

    data["test"] = test_data if test_data is not None else \
        load_call_data(replace_test(recipe, test), cache_dir, pt, which=("test",))["test"]
    trained_rows = [r for r in rows if r in ROWS]
    if "late_fusion" in rows:
        trained_rows = list(dict.fromkeys(trained_rows + ["text_only", "audio_only"]))
    if "cross_attention_mono" in rows:
        trained_rows = list(dict.fromkeys(trained_rows + ["cross_attention"]))
    preds: dict[str, dict[str, Predictions]] = {}
    models: dict[str, object] = {}
    seconds: dict[str, float] = {}
    for row in trained_rows:
        path = out_root / row
        key = _eval_key(recipe, row)
        if reuse and (path / "config.json").exists() and _stored_key(path) == key:
            model, _, config = checkpoint.load(path, device=device)
            seconds[row] = config.get("training", {}).get("train_seconds", float("nan"))
        else:
            trained = train_call_checkpoint(recipe, path, row, cache_dir, progress, device, data=data)
            _store_key(path, key)
            model, seconds[row] = trained.model, trained.info["train_seconds"]
        keep = ROWS[row][1]
        models[row] = model
        preds[row] = {split: Predictions(*predict(model, data[split], keep, device=device))
                      for split in ("validation", "test")}
    results: dict[str, CallRow] = {}
    if "vader" in rows:
        results["vader"] = score_row("vader", data["test"], vader_predictions(data["test"]), rule,
                                     note="lexicon on the customer's latest transcript line; no audio, no training")
    for row in trained_rows:
        results[row] = score_row(row, data["test"], preds[row]["test"], rule)
    if "late_fusion" in rows:
        w = pick_late_weight(data["validation"], preds["text_only"]["validation"], preds["audio_only"]["validation"])
        late = late_fusion(preds["text_only"]["test"], preds["audio_only"]["test"], w)
        results["late_fusion"] = score_row("late_fusion", data["test"], late, rule,
                                           note=f"weight on text {w:.1f} (chosen on the validation calls)")
    if "cross_attention_mono" in rows:
        mono = Predictions(*predict(models["cross_attention"], data["test"], MODALITY_SETS["mono"], device=device))
        results["cross_attention_mono"] = score_row("cross_attention_mono", data["test"], mono, rule,
                                                    note="the cross-attention model fed the mono mix")
    order = [r for r in ("vader", "text_only", "audio_only", "late_fusion", "concat_fusion", "cross_attention",
                         "cross_attention_mono") if r in results]
    t = data["test"]
    lab = t.labels["sentiment"] >= 0
    from services.simulator.callcenter import CALL_TYPES

    sarc = lab & (t.labels["call_type"] == CALL_TYPES.index("sarcastic"))
    calls: dict[str, int] = {}
    for c in t.meta.get("calls", []):
        calls[c.get("call_type") or "unknown"] = calls.get(c.get("call_type") or "unknown", 0) + 1
    stereo = sum(bool(c.get("stereo")) for c in t.meta.get("calls", []))
    return CallEvalReport(
        rows=[results[r] for r in order], classes=list(SENTIMENT_CLASSES), windows=int(lab.sum()), calls=calls,
        sarcastic_windows=int(sarc.sum()), held_out_windows=int((sarc & t.labels["held_out"]).sum()),
        test=asdict(test) if test_data is None else {"source": source}, train=[asdict(s) for s in recipe.train],
        validation=asdict(recipe.validation), train_config=recipe.train_config(device=device).to_dict(), seconds=seconds,
        notes=[f"threads {_threads()}, device {device}",
               f"escalation: open at >= {rule.open_threshold:g} for {rule.open_after} windows, close below "
               f"{rule.close_threshold:g} for {rule.close_after}, counting windows with >= "
               f"{rule.min_customer_speech_s:g} s of the customer (up to {rule.silence_after} without held) "
               "(monitor.escalation_*)",
               f"{stereo} of {len(t.meta.get('calls', []))} test calls stereo"],
        source=source, turns=int(len(turn_truth(t))))


def replace_test(recipe: CallRecipe, test: CallSpec) -> CallRecipe:
    from dataclasses import replace

    return replace(recipe, test=test)


def _eval_key(recipe: CallRecipe, row: str) -> str:
    blob = json.dumps({"recipe": recipe.summary(), "model": recipe.model_config(ROWS[row][0]).to_dict(), "row": row,
                       "train": {k: v for k, v in recipe.train_config().to_dict().items() if k not in ("threads", "device")},
                       "v": CALLCENTER_DATASET_VERSION,
                       "labels": LABELS_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _stored_key(path: Path) -> str | None:
    f = path / "callcenter_eval_key"
    return f.read_text().strip() if f.exists() else None


def _store_key(path: Path, key: str) -> None:
    (path / "callcenter_eval_key").write_text(key + "\n")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ── presentation ────────────────────────────────────────────────────────────────────────────

def render_call_report(report: CallEvalReport):
    """A rich table: one column per row (text-only ... cross-attention), metrics down the side."""
    from rich.table import Table

    where = "held-out simulated calls" if report.source == "sim" else f"labelled calls ({report.source})"
    table = Table(title=f"fusionwatch eval --profile callcenter — customer sentiment on {where}")
    table.add_column("metric")
    names = {"cross_attention_mono": "cross-attn (mono mix)", "vader": "VADER"}
    for r in report.rows:
        table.add_column(names.get(r.name, r.name.replace("_", " ")), justify="right")

    def line(label, get, fmt="{:.3f}"):
        table.add_row(label, *[_fmt(get(r), fmt) for r in report.rows])

    line(f"customer turns: macro-F1 ({report.turns})", lambda r: r.turn_macro_f1)
    line("customer turns: accuracy", lambda r: r.turn_accuracy)
    line("escalation recall", lambda r: r.escalation_recall)
    line("spurious escalations / 100 calls", lambda r: r.spurious_per_100_calls, "{:.1f}")
    table.add_section()
    line(f"window accuracy ({report.windows})", lambda r: r.window_accuracy)
    line("window macro-F1", lambda r: r.window_macro_f1)
    line("  with the customer's line", lambda r: r.with_line_accuracy)
    line("  without it (speech only)", lambda r: r.without_line_accuracy)
    line(f"call accuracy ({sum(report.calls.values())})", lambda r: r.call_accuracy)
    line("call macro-F1", lambda r: r.call_macro_f1)
    table.add_section()
    line(f"sarcastic windows ({report.sarcastic_windows})", lambda r: r.sarcastic_window_accuracy)
    line(f"  held-out phrasing ({report.held_out_windows})", lambda r: r.sarcastic_held_out_accuracy)
    line("    with the customer's line", lambda r: r.sarcastic_held_out_with_line_accuracy)
    line("  seen phrasing", lambda r: r.sarcastic_seen_accuracy)
    line(f"sarcastic calls ({report.calls.get('sarcastic', 0)})", lambda r: r.sarcastic_call_accuracy)
    table.add_section()
    line("frustration MAE", lambda r: r.frustration_mae)
    line("call outcome (summary rule)", lambda r: r.outcome_accuracy)
    for t in ("calm", "frustrated", "escalating", "sarcastic"):
        line(f"calls escalated: {t}", lambda r, t=t: r.escalated.get(t))
    line("events per escalated call", lambda r: r.events_per_escalated_call, "{:.2f}")
    notes = "; ".join(f"{r.name}: {r.note}" for r in report.rows if r.note)
    simulated = ("every trained row learned from simulated speech (eSpeak voices, scripted calls); "
                 + ("the test calls are simulated too, so every row but VADER rests on simulated speech, "
                    "and VADER on simulated transcripts" if report.source == "sim" else
                    f"the test calls are {report.source}: VADER alone uses nothing simulated"))
    table.caption = ("Customer sentiment (negative/neutral/positive) per customer turn, per window where the customer "
                     "speaks, and per call; escalations: the monitor's escalation lifecycle (streamlogic/escalation.py) "
                     "on predicted frustration, complete calls only. Same model class, encoders and training steps for "
                     "every trained row; the single-modality rows see the other modality masked. "
                     + simulated + ". " + notes)
    return table


def _fmt(x, fmt: str) -> str:
    return "—" if x is None or not np.isfinite(x) else fmt.format(x)


def call_model_card(version: str, model, info: dict) -> str:
    cfg = model.cfg
    n_params = sum(p.numel() for p in model.parameters())
    val = info.get("validation", {})
    spec = info.get("recipe_spec", {})
    seeds = ", ".join(str(s["seed"]) for s in spec.get("train", []))
    return f"""# fusionwatch call-centre model `{version}`

Recipe **{info.get('recipe')}** (`services/training/callcenter.py`), row **{info.get('row')}**, fusion
variant **{cfg.fusion}**, modalities {', '.join(info.get('modalities', []))}; {n_params:,} parameters
(MiniLM text encoder, frozen, not counted). Profile: `callcenter`.

## Intended use
Per-window customer sentiment (negative / neutral / positive) and frustration (0..1) of a call,
from its audio and speaker-tagged transcript lines (wire contract v1; the call id is the asset).
The monitor opens an *escalation* when frustration stays at or above `monitor.escalation_threshold`
and keeps a sentiment curve per call. Advisory: a person decides what to do with a call.

## Data
Simulated calls only (`services.simulator.callcenter`: eSpeak NG voices, four scripted call
types), training seeds {seeds}; {info.get('train_windows')} labelled windows (customer speech
≥ {CallSpec().min_speech_s} s per window). One phrasing of each sarcastic line is never trained on.
Real customers, accents, noise and transcription errors are not represented: validate on your own
calls before trusting it.

## Training
Supervised, end to end over the state encoders, fusion and heads: {info.get('steps')} steps of
{info.get('train_config', {}).get('batch_size')} class-balanced windows, {info.get('train_seconds')} s
on {info.get('threads')} CPU thread(s). The intra-modal autoencoders are not trained: the anomaly
score of this checkpoint is not used by the call-centre profile (calibration is a pass-through).

## Metrics (validation seed {spec.get('validation', {}).get('seed')})
Window accuracy {_fmt(val.get('window_accuracy', float('nan')), '{:.3f}')}, window macro-F1
{_fmt(val.get('window_macro_f1', float('nan')), '{:.3f}')}, call accuracy
{_fmt(val.get('call_accuracy', float('nan')), '{:.3f}')}, sarcastic windows
{_fmt(val.get('sarcastic_window_accuracy', float('nan')), '{:.3f}')}. Test-seed figures: `fusionwatch eval
--profile callcenter`.
"""


# ── labelled call folders (`--source dir:PATH`; format: services/training/callcenter_data.py) ──

def call_source(source: str) -> Path | None:
    """None for the simulator ("sim"), the folder for "dir:PATH"."""
    if source == "sim":
        return None
    if source.startswith("dir:") and len(source) > 4:
        return Path(source[4:]).expanduser()
    raise ConfigError(f"--source {source!r}: the call-centre profile learns from labelled calls: 'sim' (the call "
                      "simulator) or 'dir:PATH' (call folders, docs/callcenter.md); Kafka ranges carry no labels")


def load_call_dir(folder: Path, features: FeatureConfig | None = None, hop_s: float = 1.0, min_speech_s: float = 0.5,
                  cfg: CallDirConfig = CallDirConfig()) -> WindowArrays:
    """A user's labelled call folders as featurized, labelled windows (not cached: read each time)."""
    features = features or CALL_FEATURES
    data = featurize_recordings(read_call_dir(folder, cfg), features, hop_s,
                                meta={"source": f"dir:{folder}"})
    data.labels.update(call_window_labels(data, data.meta["calls"], min_speech_s))
    return data


def split_calls(data: WindowArrays, validation_share: float = 0.2) -> dict[str, WindowArrays]:
    """Whole calls (never windows of one call on both sides): the last `validation_share` of them
    (at least one) validate, the rest train."""
    n = len(data.assets)
    if n < 2:
        raise ConfigError("training on call folders needs at least two calls (one is kept for validation)")
    k = max(1, int(round(n * validation_share)))
    val = np.isin(data.asset_idx, np.arange(n - k, n))
    out = {"train": data.subset(np.flatnonzero(~val)), "validation": data.subset(np.flatnonzero(val))}
    for part in out.values():
        present = {part.assets[a] for a in np.unique(part.asset_idx)}
        part.meta = dict(part.meta) | {"calls": [c for c in data.meta["calls"] if c["call_id"] in present]}
    return out


# ── command bodies (`fusionwatch train/eval --profile callcenter`, see services/training/cli.py) ──

def train_command(recipe: str = "standard", out: Path | None = None, variant: str = "cross", source: str = "sim",
                  device: str = "auto", threads: int | None = None, progress: bool = True,
                  steps: int | None = None) -> TrainedCallModel:
    """Train the call-centre model of a recipe into a checkpoint directory and say how it did."""
    import torch
    from rich.console import Console

    from models.scorer import pick_device
    from services.settings import get_settings
    from services.training.ui import progress_bars

    folder = call_source(source)
    rows = {"cross": "cross_attention", "concat": "concat_fusion"}
    if variant not in rows:
        raise ConfigError(f"--variant {variant!r}: the call-centre heads sit on a fused summary; use cross or concat")
    if threads:
        torch.set_num_threads(threads)
    settings = get_settings()
    out = out or settings.checkpoint_dir
    console = Console(stderr=True)
    data = split_calls(load_call_dir(folder)) if folder else None
    with progress_bars(progress, console) as bar:
        trained = train_call_checkpoint(get_call_recipe(recipe), out, rows[variant], settings.var_dir / "datasets", bar,
                                        pick_device(device), data=data, overrides={"steps": steps, "threads": threads})
    v = trained.info["validation"]
    console.print(f"[bold green]call-centre model {trained.info['version']}[/] → {out}\n"
                  f"  trained {trained.info['train_seconds']:.0f} s ({trained.info['steps']} steps, "
                  f"{trained.info['threads']} thread(s)); validation: window accuracy {v['window_accuracy']:.3f}, "
                  f"macro-F1 {v['window_macro_f1']:.3f}, call accuracy {v['call_accuracy']:.3f}")
    return trained


def eval_command(recipe: str = "standard", json_path: Path | None = None, retrain: bool = False,
                 test_seed: int | None = None, test_duration: float | None = None, test_lines: int | None = None,
                 device: str = "auto", threads: int | None = None, progress: bool = True,
                 source: str = "sim") -> CallEvalReport:
    """Train (or reuse) every row's model under var/eval/callcenter-<recipe>/ and print the table."""
    from dataclasses import replace

    import torch
    from rich.console import Console

    from models.scorer import pick_device
    from services.settings import get_settings
    from services.training.ui import progress_bars

    if threads:
        torch.set_num_threads(threads)
    settings = get_settings()
    r = get_call_recipe(recipe)
    given: dict[str, Any] = {"seed": test_seed, "duration_s": test_duration, "lines": test_lines}
    test = replace(r.test, **{k: v for k, v in given.items() if v is not None})
    folder = call_source(source)
    console = Console(stderr=True)
    with progress_bars(progress, console) as bar:
        report = evaluate_callcenter(r, settings.var_dir / "eval" / f"callcenter-{r.name}", settings.var_dir / "datasets",
                                     bar, pick_device(device), reuse=not retrain, test=test,
                                     rule=EscalationRule.from_settings(settings.monitor),
                                     test_data=load_call_dir(folder) if folder else None, source=source)
    Console(width=max(140, Console().width)).print(render_call_report(report))
    if json_path:
        report.save(json_path)
        console.print(f"report written to {json_path}")
    return report
