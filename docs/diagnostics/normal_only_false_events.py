"""False events on a day of normal operation, at the thresholds `fusionwatch eval` calibrates.

The evaluation's test run holds a few asset-hours of normal windows: zero false events there bound
the rate only loosely. This scores a separate run without any fault — by default **seed 43**
(never a training, calibration, validation or test seed), 4 stations, **the 24 hours sampled**:
24 slices of 2½ minutes, one centred on every hour from 06:00 UTC, so every shift's light and
lens dirt and every handover (06:00, 14:00, 22:00) are in it, and each station's baseline
carries on from slice to slice as if it were monitored all day — with the evaluated models of a
recipe, and counts the events the monitor's lifecycle would open (the guard threshold while a
station learns its baseline), per row, per shift and at handovers, with the dominant score
component of each (why it fired).

    .venv/bin/python docs/diagnostics/normal_only_false_events.py [--root var/eval/standard] [--seed 43]

Results and the machine they were measured on: docs/model.md, Evaluation.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from models import checkpoint as ckpt
from models.adaptation import table_phases
from models.fusion import COMPONENT_NAMES
from models.train import component_table
from services.training.dataset import DAY_START, SimSpec, simulate_dataset
from services.training.evaluate import BASELINES, SHIFT_NAMES, evaluate, run_lifecycle, shift_of, variant_raw
from services.training.recipes import get_recipe, load_datasets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    var = Path(os.environ.get("FW_VAR_DIR", "var"))
    ap.add_argument("--root", type=Path, default=var / "eval" / "standard", help="evaluated models (late, concat, cross)")
    ap.add_argument("--recipe", default="standard")
    ap.add_argument("--seed", type=int, default=43)
    ap.add_argument("--assets", type=int, default=4)
    ap.add_argument("--slices", type=int, default=24, help="slices spread over the 24 hours")
    ap.add_argument("--slice-s", type=float, default=150.0,
                    help="seconds per slice (the whole day is held in memory: 4 x 24 x 150 s needs ~12 GB)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    r = get_recipe(args.recipe)
    models = {v: ckpt.load(args.root / v, device="cpu")[0] for v in ("late", "concat", "cross")}
    features = models["cross"].cfg.features
    cache = var / "datasets"
    calib = load_datasets(r, features, cache, which=("calib",))["calib"]
    spec = SimSpec(assets=args.assets, seed=args.seed, duration_s=args.slices * args.slice_s, day_slices=args.slices,
                   start_time=DAY_START)
    normal = simulate_dataset(spec, features, cache_dir=cache)
    report = evaluate(models, calib, normal)
    print(f"normal-only day, seed {args.seed}: {args.assets} stations x {args.slices} slices of {args.slice_s:.0f} s "
          f"= {report.asset_hours:.2f} asset-hours, {len(normal)} windows")
    tables = {v: component_table(m, normal) for v, m in models.items()}
    assets = np.array(normal.assets)[normal.asset_idx]
    for row in report.rows:
        shifts = ", ".join(f"{s} {row.false_by_shift.get(s, float('nan')):.2f}" for s in SHIFT_NAMES)
        print(f"{row.name:16s} threshold {row.threshold:6.2f}: {row.events} events ({row.learning_events} while "
              f"learning), {row.false_per_asset_hour:.3f} false per asset-hour ({shifts}); {row.false_at_handover} "
              "at handovers")
        if not row.events:
            continue
        variant, names = BASELINES[row.name]
        model = models[variant]
        comps, masks = tables[variant]
        raw = variant_raw(model, comps, masks, names, normal)
        scores = (raw - row.calibration["loc"]) / row.calibration["scale"]
        learning, judged = table_phases(normal.asset_idx, normal.start, model.cfg.baseline)
        thresholds = row.threshold * np.where(learning, model.cfg.learning_guard, 1.0)
        _, _, weights = model.combine_arrays(comps, masks, names, windows=(normal.asset_idx, normal.start))
        for ev in run_lifecycle(scores, thresholds, normal, judged=judged, learning=learning):
            sel = np.flatnonzero((assets == ev.asset) & (normal.start >= ev.start - 0.5) & (normal.start < ev.end))
            i = sel[np.argmax(scores[sel])]
            hhmm = f"{int(ev.start % 86400 // 3600):02d}:{int(ev.start % 3600 // 60):02d}"
            print(f"    {ev.asset} at {hhmm} UTC ({shift_of(ev.opened_at)}), {ev.end - ev.start:3.0f} s, peak "
                  f"{scores[i]:.1f}, mostly {COMPONENT_NAMES[int(np.argmax(weights[i]))]}"
                  f"{' (learning)' if ev.learning else ''}")


if __name__ == "__main__":
    main()
