"""How fast should each station's scores adapt to it? A sweep of `FusionConfig.adapt_step`.

The evaluated models of a recipe (late, concat, cross) are scored on the validation run (seed 3)
and on a normal-only run (seed 7, 8 stations x 900 s = 2 asset-hours), calibrated on the recipe's
calibration run, with each step in turn (models/adaptation.py; 0 is no adaptation). The forward
passes run once; the adaptation works on the component tables. Every row adapts alike: a
baseline gets what the cross model gets. Never the test seed.

    .venv/bin/python docs/diagnostics/adaptation_step.py [--root var/eval/standard] [--steps 0 0.005 0.01 0.02]

Measured (ninth session, ~5 minutes with the models trained; docs/model.md has the whole table):
with the models trained on whole windows, adapt_step 0 -> 0.01 keeps the cross model's
validation recall at 0.906 (threshold 6.22 -> 6.21) and takes the normal-only run's false events
from 4 to 1 (concatenation 5 -> 1, late fusion 4 -> 0); with the eighth session's models it took
the threshold from 9.45 to 7.02 and recall from 0.671 to 0.765.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from models import checkpoint as ckpt
from services.training.dataset import simulate_dataset
from services.training.evaluate import component_tables, evaluate
from services.training.recipes import get_recipe, load_datasets, spec_with


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("var/eval/standard"), help="evaluated models (late, concat, cross)")
    ap.add_argument("--recipe", default="standard")
    ap.add_argument("--steps", type=float, nargs="+", default=[0.0, 0.005, 0.01, 0.02, 0.05])
    ap.add_argument("--warmup", type=int, nargs="+", default=[60])
    args = ap.parse_args()
    torch.set_num_threads(2)
    r = get_recipe(args.recipe)
    models = {v: ckpt.load(args.root / v, device="cpu")[0] for v in ("late", "concat", "cross")}
    features, cache = models["cross"].cfg.features, Path("var/datasets")
    calib = load_datasets(r, features, cache, which=("calib",))["calib"]
    runs = {"validation": simulate_dataset(spec_with(r.test, seed=3), features, cache_dir=cache),
            "normal-only": simulate_dataset(spec_with(r.test, seed=7, assets=8, duration_s=900, faults="none"),
                                            features, cache_dir=cache)}
    tables = {name: component_tables(models, calib, data) for name, data in runs.items()}
    for warmup in args.warmup:
        for step in args.steps:
            for m in models.values():
                m.cfg.adapt_step, m.cfg.adapt_warmup = step, warmup
            val = evaluate(models, calib, runs["validation"], tables=tables["validation"])
            normal = {row.name: row for row in evaluate(models, calib, runs["normal-only"], tables=tables["normal-only"]).rows}
            print(f"adapt_step {step:g}, warm-up {warmup}:")
            for row in val.rows:
                cm = np.mean([row.auroc[k] for k in val.cross_modal_kinds])
                print(f"  {row.name:16s} thr {row.threshold:6.2f} xi {row.calibration['tail']['xi']:5.2f}  "
                      f"mean AUROC {np.nanmean(list(row.auroc.values())):.3f} (cross-modal {cm:.3f}, "
                      f"min {min(row.auroc.values()):.3f})  AUPRC {np.nanmean(list(row.auprc.values())):.3f}  "
                      f"recall {row.recall:.3f}  false {row.false_events}  |  normal-only {normal[row.name].events} events")
                if row.name == "cross_attention":
                    print("    recall by kind: " + ", ".join(f"{k} {v:.2f}" for k, v in row.recall_by_kind.items()))


if __name__ == "__main__":
    main()
