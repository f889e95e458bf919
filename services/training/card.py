"""The model card written into every checkpoint directory (model_card.md).

Where it sits: the last step of a training run (`services.training.recipes`), and again after
`fusionwatch eval` appends measured metrics. Fills the template documented in docs/model.md with
what this checkpoint actually is: data, objectives, training budget, calibration, metrics.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from models.calibration import Calibration
from models.fusion import COMPONENTS, FusionModel


def model_card(version: str, model: FusionModel, calibration: Calibration, info: dict[str, Any],
               metrics_md: str = "") -> str:
    cfg = model.cfg
    n_params = sum(p.numel() for p in model.parameters())
    data = info.get("data", {})
    tr, ca = data.get("train", {}), data.get("calibration", {})
    tail = calibration.tail
    comps = "\n".join(f"| `{name}` | {modality} | {'cross-modal' if cross else 'intra-modal'} |"
                      for name, modality, cross in COMPONENTS if not cross or model.fusion is not None)
    stats = info.get("component_stats", {})
    stat_rows = "\n".join(f"| `{k}` | {v['median']:.4g} | {v['u']:.4g} | {v['p_u']:.3f} | {v['xi']:.3f} | {v['sigma']:.4g} |"
                          for k, v in stats.items() if v.get("median") is not None)
    return f"""# fusionwatch model `{version}`

Created {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by recipe **{info.get('recipe', '?')}**, fusion
variant **{cfg.fusion}**, {n_params:,} parameters (MiniLM text encoder, frozen, not counted).
Template and design rationale: `docs/model.md`.

## Intended use
Unsupervised anomaly scoring of 2 s windows of one asset's camera frames, audio and log lines
(fusionwatch wire contract v1), for the fusionwatch monitor. Not a safety function: events are
advisory and need review.

## Data
- Training (normal operation only): {tr.get('windows', '?')} windows, assets {_assets(tr)}, source
  {tr.get('source', '?')} {_spec(tr)}.
- Calibration (normal operation, a different seed/period): {ca.get('windows', '?')} windows,
  assets {_assets(ca)} {_spec(ca)}.
- Inputs: frames {cfg.features.frame_width}x{cfg.features.frame_height} (up to {cfg.features.max_frames} per
  window; the scene seen at 1/{cfg.scene_pool} of that{_detail(cfg)}), audio {cfg.features.sample_rate} Hz as {cfg.features.n_mels}-band log-mel, up to
  {cfg.features.max_lines} log lines embedded by all-MiniLM-L6-v2; {len(model.code_vocab)} known log codes.

## Objectives (no labels)
- Intra-modal normality: frame autoencoder (window-median residual error), the same on the detail view
  when there is one, density of frame feature
  statistics, log-mel autoencoder, nearest-neighbour novelty of log lines against
  {int(model.line_bank.shape[0])} normal lines plus unseen codes, log rate.
- Cross-modal consistency ({'none: late fusion' if model.fusion is None else cfg.fusion}): replaced-modality
  detection (one modality swapped with a same-asset window) and a contrastive auxiliary loss.

## Score components
| component | modality | kind |
|---|---|---|
{comps}

Each component becomes a surprise, -log P(X >= x) under normal operation (calibration data):
empirical quantiles up to u, a generalised Pareto tail (shape xi, scale sigma) beyond.{_memory(cfg)}

| component | median | u | P(X >= u) | xi | sigma |
|---|---|---|---|---|---|
{stat_rows}

## Training
{info.get('steps', '?')} steps ({_steps(info, cfg.detail_rows is not None)}), {info.get('train_seconds', '?')} s of training on
{info.get('threads', '?')} CPU thread(s) (device {info.get('train_config', {}).get('device', '?')}).

## Calibration
Budget: at most {calibration.budget_events:g} false event(s) per asset per {calibration.budget_hours:g} h
(an event opens after {calibration.open_after} consecutive windows over the threshold).
Method: {tail.method}; threshold {calibration.pooled.threshold:.3f} (normalised units);
POT threshold u = {tail.u:.3f}, GPD shape {tail.xi:.3f}, scale {tail.sigma:.3f}, {tail.clusters} exceedance runs
in {calibration.windows} windows; per-asset normalisation for {len(calibration.assets)} asset(s).

## Metrics
{metrics_md or '_Not evaluated yet: run `fusionwatch eval --checkpoint <this dir> --json report.json`._'}

## Limitations
- Trained on simulated normal operation unless the card says otherwise; a real plant needs its own
  normal data (`fusionwatch train --source kafka --since ... --until ...`).
- A window sees 2 s: evidence sparser than that (an error line every few seconds) is only caught
  at event level, by the monitor's hysteresis.
- Thresholds assume normal operation looks like the calibration data; recalibrate after changes.{_slow_change(cfg)}
"""


def _assets(d: dict) -> str:
    a = d.get("assets") or []
    return ", ".join(a[:6]) + (f" … ({len(a)})" if len(a) > 6 else "") if a else "?"


def _spec(d: dict) -> str:
    s = d.get("spec") or {}
    if "seed" in s:
        return f"(seed {s['seed']}, {s.get('duration_s', '?')} s per asset, faults {s.get('faults', 'none')})"
    return ""


def _steps(info: dict, detail: bool) -> str:
    tc = info.get("train_config", {})
    detail_steps = f"{tc.get('detail_steps', '?')} detail autoencoder + " if detail else ""
    return f"{tc.get('intra_steps', '?')} autoencoder + {detail_steps}{tc.get('fusion_steps', '?')} fusion"


def _detail(cfg) -> str:
    if cfg.detail_rows is None:
        return ""
    r0, r1 = cfg.detail_rows
    return f", rows {r0}-{r1} at full size as the detail view of the product"


def _slow_change(cfg) -> str:
    if not cfg.adapt_step:
        return ""
    return (f"\n- Scores adapt to each station (about {1 / cfg.adapt_step:.0f} windows per nat): a change that "
            "develops over hours is learned as that station's normal; watch `fusionwatch_asset_adaptation_nats`.")


def _memory(cfg) -> str:
    text = ""
    if cfg.log_memory_s:
        text += (f"\nThe log novelty of a window is held over the asset's windows of the next {cfg.log_memory_s:g} s "
                 "(a log line is a point event in a continuing fault).")
    if cfg.adapt_step:
        text += (f"\nEach asset learns its own baseline from its first {cfg.learn_windows} windows (none judged "
                 f"before {cfg.judge_after}; meanwhile only {cfg.learning_guard:g}x the threshold opens an event): each "
                 "component's surprise is re-centred on the exact median of those windows and re-scaled by their "
                 f"spread, then the median follows slow change by sign steps of {cfg.adapt_step:g} nats per window. "
                 "`fusionwatch baseline reset` starts learning again after maintenance.")
    if getattr(cfg, "normalise_light", False) and cfg.light_ref:
        text += (f"\nEach frame is scaled to the normal frames' mean brightness ({cfg.light_ref:.3f}) before any "
                 "frame path sees it: a dimmer shift, a lamp dip or an exposure step is not a visual anomaly.")
    return text
