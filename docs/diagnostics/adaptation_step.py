"""How long should a station learn its baseline, and how fast should it follow drift? A sweep of
`FusionConfig.learn_windows` and `FusionConfig.adapt_step` (models/adaptation.py).

The evaluated models of a recipe (late, concat, cross) are scored on the validation run (seed 3,
the recipe's test-run shape: a day in slices, the stations learning first) and on a normal-only
day (seed 7, 4 stations, 12 two-hourly slices of 5 minutes), calibrated on the recipe's
calibration run, with each setting in turn (adapt_step 0 is no baseline at all). The forward
passes run once; the baselines work on the component tables. Every row adapts alike: a
baseline gets what the cross model gets. Never the test seed.

    .venv/bin/python docs/diagnostics/adaptation_step.py [--root var/eval/standard] [--learn 60 120 240] [--steps 0 0.01]

Results: docs/model.md ("The score": each station's own baseline).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from models import checkpoint as ckpt
from services.training.dataset import DAY_START, SimSpec, simulate_dataset
from services.training.evaluate import component_tables, evaluate
from services.training.recipes import get_recipe, load_datasets, spec_with


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("FW_VAR_DIR", "var")) / "eval" / "standard",
                    help="evaluated models (late, concat, cross)")
    ap.add_argument("--recipe", default="standard")
    ap.add_argument("--steps", type=float, nargs="+", default=[0.0, 0.01])
    ap.add_argument("--learn", type=int, nargs="+", default=[120], help="learn_windows values")
    args = ap.parse_args()
    torch.set_num_threads(2)
    r = get_recipe(args.recipe)
    models = {v: ckpt.load(args.root / v, device="cpu")[0] for v in ("late", "concat", "cross")}
    features, cache = models["cross"].cfg.features, Path(os.environ.get("FW_VAR_DIR", "var")) / "datasets"
    calib = load_datasets(r, features, cache, which=("calib",))["calib"]
    runs = {"validation": simulate_dataset(spec_with(r.test, seed=3), features, cache_dir=cache),
            "normal-only": simulate_dataset(SimSpec(assets=4, seed=7, duration_s=12 * 300, day_slices=12,
                                                    start_time=DAY_START), features, cache_dir=cache)}
    tables = {name: component_tables(models, calib, data) for name, data in runs.items()}
    for learn in args.learn:
        for step in args.steps:
            for m in models.values():
                m.cfg.adapt_step, m.cfg.learn_windows = step, learn
                m.cfg.judge_after = min(m.cfg.judge_after, learn)
            val = evaluate(models, calib, runs["validation"], tables=tables["validation"])
            normal = {row.name: row for row in evaluate(models, calib, runs["normal-only"], tables=tables["normal-only"]).rows}
            print(f"adapt_step {step:g}, learn_windows {learn}:")
            for row in val.rows:
                cm = np.mean([row.auroc[k] for k in val.cross_modal_kinds])
                print(f"  {row.name:16s} thr {row.threshold:6.2f} xi {row.calibration['tail']['xi']:5.2f}  "
                      f"mean AUROC {np.nanmean(list(row.auroc.values())):.3f} (cross-modal {cm:.3f}, "
                      f"min {min(row.auroc.values()):.3f})  AUPRC {np.nanmean(list(row.auprc.values())):.3f}  "
                      f"recall {row.recall:.3f}  false {row.false_events} late {row.late_events}  |  normal-only "
                      f"{normal[row.name].events} events ({normal[row.name].false_per_asset_hour:.2f} per asset-hour)")
                if row.name == "cross_attention":
                    print("    recall by kind: " + ", ".join(f"{k} {v:.2f}" for k, v in row.recall_by_kind.items()))


if __name__ == "__main__":
    main()
