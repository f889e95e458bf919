"""The inference module the monitor calls: windows in, calibrated scores with attribution out.

Where it sits: the score hop of the monitor (`services.monitor.service`), between the aligner and
the event lifecycle. Plain inference, separate from the training code (anomalib's torch_model /
training split): load a checkpoint directory, featurize a batch of `WindowInputs`, one forward
pass under `torch.inference_mode()` (bf16 autocast on CUDA), the log novelty held over each
asset's next windows (`models.logmemory`), each component's surprise adapted to its asset
(`models.adaptation`), calibrate per asset, attribute. The two memories are per-asset stream
state (`stream_state`), committed by the monitor with its offsets.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import checkpoint
from models.adaptation import SurpriseAdapter, WindowPhase
from models.attribution import DetailEvidence, attribute
from models.calibration import AssetCalibration, Calibration
from models.features import CHANNELS, FeatureConfig, Featurizer, WindowFeatures, collate, speech_seconds
from models.fusion import COMPONENT_NAMES, FusionModel, combine_components
from models.inputs import WindowInputs
from models.logmemory import Held, LogMemory
from schemas.envelope import DecodeOptions

log = logging.getLogger(__name__)


@dataclass
class WindowScore:
    score: float  # calibrated per-asset anomaly score; >= threshold means anomalous
    threshold: float  # threshold in force for this asset (checkpoint calibration)
    raw: float  # uncalibrated model score
    present: dict[str, bool]  # modality present (not masked)
    modality_shares: dict[str, float]  # contribution per modality, sums to 1 over present ones
    cross_modal_share: float  # part of the score coming from cross-modal inconsistency
    top_frame_times: list[float]
    frame_region: tuple[float, float, float, float] | None  # x0, y0, x1, y1 in 0..1
    audio_band_hz: tuple[float, float] | None
    top_log_lines: list[str]
    log_codes: list[str]
    kind: str | None = None  # defect-kind head, when trained
    sentiment: dict[str, float] | None = None  # call-centre heads, when trained
    frustration: float | None = None
    # the asset's baseline when this window was scored (models/adaptation.py): "learning" while it
    # is learned from the asset's first windows (then `threshold` is the guard threshold), or
    # "watching"; `judged` False: too few windows seen yet for any judgement
    baseline: str = "watching"
    judged: bool = True
    guard: float = 1.0  # the factor `threshold` carries while learning (FusionConfig.learning_guard)
    # seconds of speech heard on each channel of a stereo call (models.features.CHANNELS); None: mono
    speech_s: dict[str, float] | None = None


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from schemas.errors import ConfigError

        raise ConfigError("device 'cuda' was asked for but torch sees no GPU; use --device cpu or auto")
    return device


class AnomalyScorer:
    def __init__(self, model: FusionModel, calibration: Calibration | None, version: str, device: str = "cpu",
                 bf16: bool = True):
        self.model = model.to(device).eval()
        if not device.startswith("cuda"):
            # NHWC weights for the frame autoencoder, the model's largest cost on CPU: oneDNN's
            # faster convolutions, bit-identical scores (`fusionwatch bench`; docs/performance.md)
            self.model.frames.to(memory_format=torch.channels_last)
            if self.model.detail is not None:
                self.model.detail.to(memory_format=torch.channels_last)
            # each frame is in two overlapping windows: encode it once (models/framememo.py)
            from models.framememo import FrameMemo

            self.model.frame_memo = FrameMemo()
        self.device = device
        self.bf16 = bf16 and device.startswith("cuda")
        self.version = version
        self.cfg = model.cfg.features
        if calibration is None:  # an uncalibrated model still scores; thresholds are only a guess
            log.warning("checkpoint has no calibration.json: scores are raw, threshold defaults to 3.0")
            calibration = Calibration(pooled=AssetCalibration(0.0, 1.0, 3.0))
        self.calibration = calibration
        self.log_memory = LogMemory(model.cfg.log_memory_s)
        self.adapter = SurpriseAdapter(model.cfg.baseline)
        from models.text import TextEncoder

        self.featurizer = Featurizer(self.cfg, TextEncoder(device=device))

    @property
    def frame_memo(self):
        """The model's per-frame memo (None on CUDA); `max_frames = 0` turns it off."""
        return self.model.frame_memo

    @classmethod
    def load(cls, checkpoint_dir: Path, device: str = "auto") -> "AnomalyScorer":
        device = pick_device(device)
        model, calibration, config = checkpoint.load(checkpoint_dir, device=device)
        return cls(model, calibration, config["version"], device)

    @property
    def decode_options(self) -> DecodeOptions:
        # a model that reads a stereo call's channels asks for them, channel 0 / 1 named as the
        # offline call folders default to; the monitor renames them from monitor.call_channels
        names = CHANNELS if self.model.cfg.channel_audio else ()
        return DecodeOptions(frame_size=self.cfg.frame_size, sample_rate=self.cfg.sample_rate, channel_names=names)

    def threshold(self, asset: str) -> float:
        return self.calibration.threshold(asset)

    def score(self, windows: list[WindowInputs]) -> list[WindowScore]:
        if not windows:
            return []
        feats = self.featurizer.featurize_many(windows)
        # uint8 frames on CPU: the model converts only the frames its memo has not seen
        batch = collate(feats, self.cfg, self.model.code_vocab, float_frames=self.frame_memo is None).to(self.device)
        with torch.inference_mode(), self._autocast():
            out = self.model(batch, want_weights=True)
            order = _by_start(windows)  # a window may hold the log evidence of an earlier one in the batch
            held, own = self._hold_log_novelty(windows, order, out)
            phases = [self.adapter.phase(w.asset) for w in windows]  # before `_adapt` counts this batch
            if self.adapter.enabled:  # a window's phase is its position in its asset's stream
                seen: dict[str, int] = {}
                for i in order:
                    k = seen[windows[i].asset] = seen.get(windows[i].asset, -1) + 1
                    phases[i] = self._phase_after(phases[i], k)
            surprise = self._adapt(windows, order, self.model.tails(out.components.float()), out.component_mask)
            raw, _, weights = combine_components(surprise, out.component_mask, self.model.cfg.smooth_max_tau)
        raw_np = raw.float().cpu().numpy()
        weights_np = weights.float().cpu().numpy()
        fs, fe, me, nov = (x.float().cpu().numpy() for x in (out.frame_scores, out.frame_error, out.mel_error, out.line_novelty))
        detail_rows = self.model.cfg.detail_rows  # not None exactly when the model scores a detail view
        if out.detail_scores is not None:
            ds, de = out.detail_scores.float().cpu().numpy(), out.detail_error.float().cpu().numpy()
        att = {k: v.cpu().numpy() for k, v in out.attention_to.items()}
        kinds = out.kind_logits.softmax(-1).cpu().numpy() if out.kind_logits is not None else None
        sent = out.sentiment_logits.softmax(-1).cpu().numpy() if out.sentiment_logits is not None else None
        frus = out.frustration.cpu().numpy() if out.frustration is not None else None
        results: dict[int, WindowScore] = {}  # by index into `windows`, filled in `order`
        for i in order:
            w, f, ph = windows[i], feats[i], phases[i]
            guard = self.model.cfg.learning_guard if ph.phase == "learning" else 1.0
            thr = self.threshold(w.asset) * guard
            if not math.isfinite(float(raw_np[i])):  # nothing present: nothing to judge
                results[i] = WindowScore(0.0, thr, 0.0, f.present, {}, 0.0, [], None, None, [], [],
                                         baseline=ph.phase, judged=False, guard=guard)
                continue
            detail = (DetailEvidence(ds[i], de[i], detail_rows, self.cfg.frame_height)
                      if out.detail_scores is not None and detail_rows is not None else None)
            a = attribute(f, self.cfg, weights_np[i], fs[i], fe[i], me[i], nov[i], {k: v[i] for k, v in att.items()},
                          detail=detail)
            own[i].lines, own[i].codes = a.top_log_lines, a.log_codes
            if held[i] is not own[i]:  # the log evidence in force is an earlier window's line
                a.top_log_lines, a.log_codes = held[i].lines, held[i].codes
            results[i] = WindowScore(
                score=float(self.calibration.normalise(w.asset, raw_np[i])), threshold=thr, raw=float(raw_np[i]),
                present=f.present, modality_shares=a.modality_shares, cross_modal_share=a.cross_modal_share,
                top_frame_times=a.top_frame_times, frame_region=a.frame_region, audio_band_hz=a.audio_band_hz,
                top_log_lines=a.top_log_lines, log_codes=a.log_codes,
                kind=self.model.cfg.kind_classes[int(kinds[i].argmax())] if kinds is not None else None,
                sentiment={c: round(float(p), 4) for c, p in zip(self.model.cfg.sentiment_classes, sent[i])} if sent is not None else None,
                frustration=float(frus[i]) if frus is not None else None,
                baseline=ph.phase, judged=ph.judged, guard=guard, speech_s=_speech(f, self.cfg),
            )
        return [results[i] for i in range(len(windows))]

    def _phase_after(self, first: WindowPhase, k: int) -> WindowPhase:
        """The phase of the asset's k-th window of this batch, given the phase of its first."""
        seen = first.seen + k
        cfg = self.adapter.cfg
        return WindowPhase("learning" if seen < cfg.learn_windows else "watching", seen >= cfg.judge_after, seen)

    def baseline_phase(self, asset: str) -> WindowPhase:
        """Where the asset's baseline stands now: learning (and how far) or watching."""
        return self.adapter.phase(asset)

    def _hold_log_novelty(self, windows: list[WindowInputs], order: list[int], out) -> tuple[list[Held], list[Held]]:
        """Replace each window's log-novelty component by the one `LogMemory` holds in force for it."""
        col = COMPONENT_NAMES.index("logs")
        values = out.components[:, col].float().cpu().numpy()
        present = out.component_mask[:, col].cpu().numpy()
        held: dict[int, Held] = {}  # by index into `windows`, filled in `order`
        own: dict[int, Held] = {}
        for i in order:
            held[i], own[i] = self.log_memory.hold(windows[i].asset, windows[i].start, values[i], bool(present[i]))
        index = range(len(windows))
        out.components[:, col] = torch.tensor([held[i].value for i in index], dtype=out.components.dtype,
                                              device=out.components.device)
        return [held[i] for i in index], [own[i] for i in index]

    def _adapt(self, windows: list[WindowInputs], order: list[int], surprise: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        """Each window's component surprise adapted to its asset, in window order (`SurpriseAdapter`)."""
        if not self.adapter.enabled:
            return surprise
        s, m = surprise.float().cpu().numpy(), mask.cpu().numpy()
        adapted = np.empty(s.shape, dtype=np.float64)
        for i in order:
            adapted[i] = self.adapter.adapt(windows[i].asset, s[i], m[i])
        return torch.as_tensor(adapted, dtype=surprise.dtype, device=surprise.device)

    # ── per-asset stream state: what the monitor commits with its offsets ──────────────────
    def stream_state(self, asset: str) -> dict:
        """JSON of what this scorer remembers of an asset's stream (log memory, adaptation)."""
        return {"log_memory": self.log_memory.state(asset), "adaptation": self.adapter.state(asset)}

    def adaptation(self, asset: str) -> dict[str, float]:
        """Surprise (nats) the asset's baseline takes off each component at its median: a station
        that sits off the calibration stations' normal, or one that changed slowly."""
        off = self.adapter.offset(asset)
        return {} if off is None else {n: float(v) for n, v in zip(COMPONENT_NAMES, off)}

    def restore_stream(self, asset: str, state: dict) -> None:
        self.log_memory.restore(asset, state.get("log_memory", []))
        self.adapter.restore(asset, state.get("adaptation", {}))

    def rebaseline(self, asset: str) -> None:
        """A new normal (after maintenance, a new camera position): learn the baseline again."""
        self.adapter.forget(asset)

    def forget_stream(self, asset: str) -> None:
        self.log_memory.forget(asset)
        self.adapter.forget(asset)

    def _autocast(self):
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)


def _by_start(windows: list[WindowInputs]) -> list[int]:
    return sorted(range(len(windows)), key=lambda i: windows[i].start)


def _speech(f: WindowFeatures, cfg: FeatureConfig) -> dict[str, float] | None:
    if f.channel_mel is None or f.channel_mask is None or not f.channel_mask.any():
        return None
    return {c: round(float(v), 3) for c, v in zip(CHANNELS, speech_seconds(f.channel_mel, f.channel_mask, cfg))}
