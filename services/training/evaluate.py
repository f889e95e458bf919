"""Evaluation harness: every model and baseline on a held-out simulator run, one table.

Where it sits: the last hop of `fusionwatch eval` (and of the training recipe's report). Inputs are
trained models (fusion variants "late", "concat", "cross"), a *calibration* dataset of normal
operation from a validation seed (thresholds are set there, never on the test run) and a *test*
dataset from another seed with every fault kind and its ground truth.

Rows (all with the same encoders, objectives and training budget):
- ``frames_only`` / ``audio_only`` / ``logs_only``: one modality's detector of the late model;
- ``late_fusion``: the three per-modality detectors' standardised scores, combined;
- ``concat_fusion``: early fusion by concatenation, with the same consistency objective;
- ``cross_attention``: the product model (MulT-style cross-modal attention).

Window level: AUROC and AUPRC per fault kind (positives: windows overlapping that fault for at
least half their length; negatives: windows touching no fault; windows too early in a station's
new baseline to be judged are left out). Event level: the monitor's own hysteresis lifecycle at
the calibrated threshold — the guard threshold while a station learns its baseline, exactly as
the monitor runs it. A fault is **detected** only by an event that *opens* (the moment the
monitor would publish it) no earlier than the fault's start and within `DETECT_WITHIN_S` of it,
before the fault has ended; an event already open when a fault starts, or one that opens where
no fault is, is **false**; one that opens later inside a fault is counted as **late** (neither).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.adaptation import table_phases
from models.calibration import calibrate
from models.data import WindowArrays
from models.fusion import COMPONENT_NAMES, INTRA_NAMES, FusionModel
from models.train import component_table, same_intra
from services.training.recipes import MIN_WATCHING_WINDOWS
from streamlogic.event_lifecycle import CLOSE_AFTER, OPEN_AFTER

DETECT_WITHIN_S = 10.0  # an event must open this soon after a fault starts to count as its detection
SHIFT_NAMES = ("day", "evening", "night")  # the simulator's shifts from 06:00, 14:00 and 22:00 UTC
SHIFT_ORIGIN_S, SHIFT_S = 6 * 3600.0, 8 * 3600.0
HANDOVER_S = 180.0  # "at a handover": an event opening within 3 minutes of a shift boundary

INTRA = INTRA_NAMES
BASELINES: dict[str, tuple[str, tuple[str, ...]]] = {
    "frames_only": ("late", ("frames", "frame_stats", "frame_detail")),
    "audio_only": ("late", ("audio", "audio_band")),
    "logs_only": ("late", ("logs", "log_rate")),
    "late_fusion": ("late", INTRA),
    "concat_fusion": ("concat", COMPONENT_NAMES),
    "cross_attention": ("cross", COMPONENT_NAMES),
}


@dataclass
class RowResult:
    name: str
    auroc: dict[str, float]
    auprc: dict[str, float]
    recall: float
    recall_by_kind: dict[str, float]
    false_events: int
    false_per_asset_hour: float
    events: int
    threshold: float
    calibration: dict = field(default_factory=dict)
    late_events: int = 0  # opened inside a fault, but later than DETECT_WITHIN_S
    learning_events: int = 0  # opened while the station learned its baseline (guard threshold)
    false_by_shift: dict[str, float] = field(default_factory=dict)  # false events per asset-hour of each shift
    false_at_handover: int = 0  # false events opening within HANDOVER_S of a shift boundary


@dataclass
class EvalReport:
    rows: list[RowResult]
    kinds: list[str]
    cross_modal_kinds: list[str]
    positives: dict[str, int]
    negatives: int
    test: dict
    calibration_data: dict
    asset_hours: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(self.to_dict()), indent=2))


def json_safe(x):
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 4)
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [json_safe(v) for v in x]
    return x


def variant_raw(model: FusionModel, comps: np.ndarray, masks: np.ndarray, names: tuple[str, ...],
                data: WindowArrays) -> np.ndarray:
    return model.combine_arrays(comps, masks, names, windows=(data.asset_idx, data.start))[0]


def component_tables(models: dict[str, FusionModel], calib: WindowArrays, test: WindowArrays,
                     device: str = "cpu") -> dict[str, tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """Per variant, the (components, masks) tables of the calibration and the test run."""
    tables: dict = {}
    for variant, model in models.items():
        # variants trained together share the autoencoders: compute intra-modal columns once
        donor = next((v for v in tables if same_intra(models[v], model)), None)
        if donor is None:
            tables[variant] = (component_table(model, calib, device=device), component_table(model, test, device=device))
        else:
            (cc, cm), (tc, tm) = tables[donor]
            tables[variant] = (component_table(model, calib, device=device, intra_from=(cc, cm)),
                               component_table(model, test, device=device, intra_from=(tc, tm)))
    return tables


def window_metrics(scores: np.ndarray, data: WindowArrays, kinds: list[str]) -> tuple[dict, dict, dict, int]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    kind = data.labels["fault_kind"]
    overlap = data.labels["fault_overlap"]
    half = data.features.window_s / 2
    ok = np.isfinite(scores)
    neg = ok & (overlap <= 0)
    auroc, auprc, positives = {}, {}, {}
    for k, name in enumerate(kinds):
        pos = ok & (kind == k) & (overlap >= half)
        positives[name] = int(pos.sum())
        if pos.sum() == 0 or neg.sum() == 0:
            auroc[name] = auprc[name] = float("nan")
            continue
        y = np.concatenate([np.ones(pos.sum()), np.zeros(neg.sum())])
        s = np.concatenate([scores[pos], scores[neg]])
        auroc[name] = float(roc_auc_score(y, s))
        auprc[name] = float(average_precision_score(y, s))
    return auroc, auprc, positives, int(neg.sum())


@dataclass(frozen=True)
class EvalEvent:
    asset: str
    start: float  # the first over-threshold window's start
    end: float
    opened_at: float  # end of the window that opened it: when the monitor would publish it
    learning: bool  # opened by the guard threshold while the station learned its baseline


def run_lifecycle(scores: np.ndarray, thresholds: np.ndarray, data: WindowArrays, open_after: int = OPEN_AFTER,
                  close_after: int = CLOSE_AFTER, judged: np.ndarray | None = None,
                  learning: np.ndarray | None = None) -> list[EvalEvent]:
    """Events from the monitor's hysteresis lifecycle over each asset's windows."""
    from streamlogic.event_lifecycle import EventLifecycle, ScoredWindow

    events: list[EvalEvent] = []
    w = data.features.window_s
    judged = np.ones(len(data), bool) if judged is None else judged
    learning = np.zeros(len(data), bool) if learning is None else learning
    for a, asset in enumerate(data.assets):
        idx = np.flatnonzero(data.asset_idx == a)
        idx = idx[np.argsort(data.start[idx])]
        life = EventLifecycle(open_after=open_after, close_after=close_after)
        opened: dict[str, tuple[float, bool]] = {}
        for i in idx:
            s = float(scores[i]) if np.isfinite(scores[i]) else -1e9
            sw = ScoredWindow(asset, float(data.start[i]), float(data.start[i] + w), s, float(thresholds[i]), "eval",
                              learning=bool(learning[i]), judged=bool(judged[i]))
            for ch in life.update(sw):
                if ch.change == "opened":
                    opened[ch.data.event_id] = (sw.end, ch.data.learning)
                if ch.change == "closed":
                    at, was_learning = opened.pop(ch.data.event_id)
                    end = ch.data.end_time or ch.data.start_time  # a closed event has its end
                    events.append(EvalEvent(asset, ch.data.start_time.timestamp(), end.timestamp(), at, was_learning))
        st = life.state(asset)
        if st["open"] is not None:  # still open at the end of the run
            at, was_learning = opened[st["open"]["id"]]
            events.append(EvalEvent(asset, st["open"]["start"], st["open"]["end"], at, was_learning))
    return events


def classify_event(ev: EvalEvent, faults: list[dict], window_s: float) -> tuple[str, int | None]:
    """("detection", fault index) | ("late", fault index) | ("false", None) — the counting rule above."""
    late = None
    for j, f in enumerate(faults):
        if f["asset"] != ev.asset or not (f["start"] <= ev.opened_at <= f["end"] + window_s):
            continue
        if ev.opened_at <= f["start"] + DETECT_WITHIN_S:
            return "detection", j
        late = j
    return ("late", late) if late is not None else ("false", None)


def shift_of(t: float) -> str:
    return SHIFT_NAMES[int((t - SHIFT_ORIGIN_S) // SHIFT_S) % 3]


def near_handover(t: float) -> bool:
    into = (t - SHIFT_ORIGIN_S) % SHIFT_S
    return min(into, SHIFT_S - into) <= HANDOVER_S


def asset_hours_by_shift(data: WindowArrays) -> dict[str, float]:
    hop = _hop(data)
    shifts = [shift_of(float(t)) for t in data.start]
    return {name: shifts.count(name) * hop / 3600.0 for name in SHIFT_NAMES}


def event_metrics(events: list[EvalEvent], faults: list[dict], asset_hours: float, window_s: float,
                  kinds: list[str], hours_by_shift: dict[str, float] | None = None) -> dict:
    detected = [False] * len(faults)
    false: list[EvalEvent] = []
    late = 0
    for ev in events:
        verdict, j = classify_event(ev, faults, window_s)
        if verdict == "detection" and j is not None:
            detected[j] = True
        elif verdict == "late":
            late += 1
        else:
            false.append(ev)
    by_kind = {}
    for k in kinds:
        hits = [d for d, f in zip(detected, faults) if f["kind"] == k]
        by_kind[k] = float(np.mean(hits)) if hits else float("nan")
    by_shift = {}
    for name, hours in (hours_by_shift or {}).items():
        n = sum(shift_of(ev.opened_at) == name for ev in false)
        by_shift[name] = n / hours if hours > 0 else float("nan")
    return {"recall": float(np.mean(detected)) if detected else float("nan"), "recall_by_kind": by_kind,
            "false_events": len(false), "false_per_asset_hour": len(false) / max(asset_hours, 1e-9), "events": len(events),
            "late_events": late, "learning_events": sum(ev.learning for ev in events), "false_by_shift": by_shift,
            "false_at_handover": sum(near_handover(ev.opened_at) for ev in false)}


def evaluate(models: dict[str, FusionModel], calib: WindowArrays, test: WindowArrays, budget_events: float = 1.0,
             budget_hours: float = 8.0, open_after: int = OPEN_AFTER, close_after: int = CLOSE_AFTER, per_asset: bool = False,
             rows: dict[str, tuple[str, tuple[str, ...]]] | None = None, device: str = "cpu",
             tables: dict | None = None) -> EvalReport:
    """Score every row on `test`, calibrated on `calib` (normal operation, another seed).

    `per_asset=False` by default here: a simulator seed re-draws each station (camera, acoustics),
    so "L1-S1" of the validation seed is not the same machine as "L1-S1" of the test seed, and
    per-asset statistics would not transfer. The product calibrates per asset on its own plant.
    `tables` (from `component_tables`) saves the forward passes when the same models are scored
    again with other settings (the adaptation, say: it works on the tables).
    """
    rows = rows or {k: v for k, v in BASELINES.items() if v[0] in models}
    kinds = list(test.meta.get("fault_kinds") or [])
    from services.simulator.faults import CROSS_MODAL_KINDS

    faults = test.meta.get("ground_truth", [])
    duration = float(test.meta.get("spec", {}).get("duration_s", (test.start.max() - test.start.min() + 2)))
    asset_hours = len(test.assets) * duration / 3600.0
    hours_by_shift = asset_hours_by_shift(test)
    tables = tables or component_tables(models, calib, test, device)
    results = []
    positives: dict[str, int] = {}
    negatives = 0
    for name, (variant, comps) in rows.items():
        model = models[variant]
        (cc, cm), (tc, tm) = tables[variant]
        raw_c = variant_raw(model, cc, cm, comps, calib)
        raw_t = variant_raw(model, tc, tm, comps, test)
        base = model.cfg.baseline
        calib_learning = table_phases(calib.asset_idx, calib.start, base)[0]
        if (~calib_learning).sum() >= MIN_WATCHING_WINDOWS:  # as calibrate_model
            raw_c = np.where(calib_learning, np.nan, raw_c)
        learning, judged = table_phases(test.asset_idx, test.start, base)
        cal = calibrate(raw_c, np.array(calib.assets)[calib.asset_idx], calib.start, budget_events=budget_events,
                        budget_hours=budget_hours, hop_s=_hop(calib), open_after=open_after, close_after=close_after,
                        per_asset=per_asset)
        test_assets = np.array(test.assets)[test.asset_idx]
        scores = np.array([float(cal.normalise(a, r)) for a, r in zip(test_assets, raw_t)])
        thresholds = np.array([cal.threshold(a) for a in test_assets]) * np.where(learning, model.cfg.learning_guard, 1.0)
        auroc, auprc, positives, negatives = window_metrics(np.where(judged, scores, np.nan), test, kinds)
        events = run_lifecycle(scores, thresholds, test, open_after, close_after, judged=judged, learning=learning)
        em = event_metrics(events, faults, asset_hours, test.features.window_s, kinds, hours_by_shift)
        results.append(RowResult(name, auroc, auprc, em["recall"], em["recall_by_kind"], em["false_events"],
                                 em["false_per_asset_hour"], em["events"], cal.pooled.threshold,
                                 {"tail": asdict(cal.tail), "loc": cal.pooled.loc, "scale": cal.pooled.scale},
                                 late_events=em["late_events"], learning_events=em["learning_events"],
                                 false_by_shift=em["false_by_shift"], false_at_handover=em["false_at_handover"]))
    return EvalReport(results, kinds, sorted(k for k in kinds if k in CROSS_MODAL_KINDS), positives, negatives,
                      test=test.meta.get("spec", {}), calibration_data=calib.meta.get("spec", {}), asset_hours=asset_hours)


def _hop(data: WindowArrays) -> float:
    return float(data.meta.get("spec", {}).get("hop_s", 1.0))


def render(report: EvalReport):
    """A rich table: AUROC per fault kind (cross-modal kinds marked), then event metrics."""
    from rich.table import Table

    table = Table(title="fusionwatch eval — window AUROC per fault kind (AUPRC in the JSON); events at the calibrated threshold")
    table.add_column("fault kind")
    for r in report.rows:
        table.add_column(r.name.replace("_", " "), justify="right")
    for k in report.kinds:
        label = f"{k} ×" if k in report.cross_modal_kinds else k
        table.add_row(f"{label} ({report.positives.get(k, 0)})",
                      *[_fmt(r.auroc.get(k)) for r in report.rows])
    table.add_section()
    table.add_row("mean AUROC", *[_fmt(np.nanmean(list(r.auroc.values()))) for r in report.rows])
    table.add_row("mean AUPRC", *[_fmt(np.nanmean(list(r.auprc.values()))) for r in report.rows])
    table.add_row("event recall", *[_fmt(r.recall) for r in report.rows])
    table.add_row("false events / asset-h", *[f"{r.false_per_asset_hour:.2f}" for r in report.rows])
    table.add_row("events (false, late)", *[f"{r.events} ({r.false_events}, {r.late_events})" for r in report.rows])
    for shift in SHIFT_NAMES:
        table.add_row(f"false / asset-h, {shift}", *[_fmt(r.false_by_shift.get(shift)) for r in report.rows])
    table.add_row("false at handovers", *[str(r.false_at_handover) for r in report.rows])
    table.caption = (f"× cross-modal kind. Negatives: {report.negatives} normal windows; "
                     f"{report.asset_hours:.2f} asset-hours. Thresholds from a separate normal validation run. "
                     f"Detection: an event opening within {DETECT_WITHIN_S:.0f} s of a fault's start; false: any "
                     "other event but those opening later inside a fault (late).")
    return table


def _fmt(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.3f}"
