"""Attribution: why a window scored high, as plain data a narrator and a reviewer can use.

Where it sits: inside `models.scorer.AnomalyScorer.score`, after the forward pass. It reads the
score decomposition (softmax weights of the smooth maximum over components), the frame
reconstruction error maps, the per-band log-mel error, the per-line novelty and the attention the
fused modalities paid to each other's tokens, and turns them into modality shares, the frames and
image region, the audio band and the log lines that contributed most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.features import FeatureConfig, WindowFeatures
from models.fusion import COMPONENTS

MODALITIES = ("frames", "audio", "logs")


@dataclass
class WindowAttribution:
    modality_shares: dict[str, float]
    cross_modal_share: float
    top_frame_times: list[float]
    frame_region: tuple[float, float, float, float] | None
    audio_band_hz: tuple[float, float] | None
    top_log_lines: list[str]
    log_codes: list[str]


@dataclass
class DetailEvidence:
    """One window's detail view: per-frame scores (T_f,), error maps (T_f, h, W) over the rows
    `rows` of a frame `height` rows high."""

    scores: np.ndarray
    error: np.ndarray
    rows: tuple[int, int]
    height: int

    def region(self, frame: int) -> tuple[float, float, float, float] | None:
        """`frame_region` of one frame's detail map, in fractions of the whole frame."""
        box = frame_region(self.error[frame])
        if box is None:
            return None
        (r0, r1), H = self.rows, self.height
        y = lambda f: round((r0 + f * (r1 - r0)) / H, 3)  # noqa: E731
        return (box[0], y(box[1]), box[2], y(box[3]))


def shares(weights: np.ndarray, present: dict[str, bool]) -> tuple[dict[str, float], float]:
    """Component weights (7,) -> per-modality shares (summing to 1 over present ones) and the
    cross-modal part of the score."""
    out = {m: 0.0 for m in MODALITIES if present.get(m)}
    cross = 0.0
    for w, (_, modality, is_cross) in zip(weights, COMPONENTS):
        if modality in out:
            out[modality] += float(w)
            if is_cross:
                cross += float(w)
    total = sum(out.values())
    if total <= 0:
        n = max(len(out), 1)
        return {m: 1.0 / n for m in out}, 0.0
    return {m: round(v / total, 4) for m, v in out.items()}, round(cross / total, 4)


def frame_region(error_map: np.ndarray, rel: float = 0.5) -> tuple[float, float, float, float] | None:
    """Bounding box (x0, y0, x1, y1 in 0..1) of the pixels within `rel` of the peak error."""
    peak = float(error_map.max())
    if peak <= 0:
        return None
    ys, xs = np.nonzero(error_map >= rel * peak)
    H, W = error_map.shape
    return (round(xs.min() / W, 3), round(ys.min() / H, 3), round((xs.max() + 1) / W, 3), round((ys.max() + 1) / H, 3))


def audio_band(mel_error: np.ndarray, cfg: FeatureConfig, rel: float = 0.5) -> tuple[float, float] | None:
    """[low, high] Hz of the contiguous mel bands around the band with the largest error."""
    profile = mel_error.mean(1)  # (n_mels,)
    if profile.max() <= 0:
        return None
    k = int(profile.argmax())
    lo = hi = k
    while lo > 0 and profile[lo - 1] >= rel * profile[k]:
        lo -= 1
    while hi < len(profile) - 1 and profile[hi + 1] >= rel * profile[k]:
        hi += 1
    edges = cfg.mel_centres_hz()  # band i spans edges[i] .. edges[i + 2]
    return (round(float(edges[lo]), 1), round(float(edges[hi + 2]), 1))


def attribute(feat: WindowFeatures, cfg: FeatureConfig, weights: np.ndarray, frame_scores: np.ndarray,
              frame_error: np.ndarray, mel_error: np.ndarray, line_novelty: np.ndarray,
              attention_to: dict[str, np.ndarray], top_k: int = 3, detail: DetailEvidence | None = None) -> WindowAttribution:
    """One window. Arrays are this window's slices of the batch outputs; `detail`, the detail
    view's, when the model has one."""
    present = feat.present
    mod_shares, cross_share = shares(weights, present)
    comp = {name: float(w) for w, (name, _, _) in zip(weights, COMPONENTS)}
    n_f = len(feat.frames)
    top_times: list[float] = []
    region = None
    if n_f:
        # intra-modal evidence ranks frames by reconstruction error; cross-modal evidence by the
        # attention the other modalities paid to them — mixed in proportion to their weights
        fs = frame_scores[:n_f] / max(float(frame_scores[:n_f].max()), 1e-9)
        att = attention_to.get("frames")
        at = att[:n_f] / max(float(att[:n_f].max()), 1e-9) if att is not None and att[:n_f].max() > 0 else np.zeros(n_f)
        rank = comp["frames"] * fs + (comp["cross_frames"] + comp["cross_audio"] + comp["cross_logs"]) * at
        if detail is not None:
            rank = rank + comp["frame_detail"] * detail.scores[:n_f] / max(float(detail.scores[:n_f].max()), 1e-9)
        order = np.argsort(-rank)[:top_k]
        top_times = [round(feat.start + float(feat.frame_times[i]), 3) for i in order]  # float64: epoch seconds
        if detail is not None and comp["frame_detail"] > comp["frames"]:
            region = detail.region(int(np.argmax(detail.scores[:n_f])))
        else:
            region = frame_region(frame_error[int(np.argmax(frame_scores[:n_f]))])
    band = audio_band(mel_error, cfg) if present["audio"] else None
    lines: list[str] = []
    codes: list[str] = []
    n_l = len(feat.log_text)
    if n_l:
        nov = line_novelty[:n_l]
        att = attention_to.get("logs")
        at = att[1:n_l + 1] if att is not None else np.zeros(n_l)  # token 0 is the rate token
        rank = nov + 0.1 * at / max(float(at.max()), 1e-9)
        for i in np.argsort(-rank)[:top_k]:
            if nov[i] > 0.05 or comp["cross_logs"] > 0.2 or comp["log_rate"] > 0.3:
                lines.append(feat.log_text[i])
                if feat.log_codes[i] and feat.log_codes[i] not in codes:
                    codes.append(feat.log_codes[i])
    return WindowAttribution(mod_shares, cross_share, top_times, region, band, lines, codes)
