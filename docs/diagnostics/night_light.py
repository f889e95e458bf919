"""Does the visual path take the night shift for an anomaly? Frame-path surprise by hour.

Scores the same stations (a fresh simulator seed: never trained or calibrated on) over 3 minutes
of normal operation at 11:00 (day), 19:00 (evening light 0.95) and 23:10 UTC (night light 0.86,
a lens an hour dirty), with each checkpoint given, and prints the median and 99th percentile of
each frame component's surprise (nats, before the stations' baselines: what the tails alone say)
— the measure of "robust to global illumination" (docs/model.md, "Light").

    .venv/bin/python docs/diagnostics/night_light.py CHECKPOINT [CHECKPOINT ...] [--seed 71]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from models import checkpoint as ckpt
from models.fusion import COMPONENT_NAMES
from models.train import component_table
from services.training.dataset import SimSpec, simulate_dataset

DAY0 = 1767571200.0  # 2026-01-05 00:00 UTC
HOURS = {"day 11:00": 11 * 3600, "evening 19:00": 19 * 3600, "night 23:10": 23 * 3600 + 600}
FRAME_COMPONENTS = ("frames", "frame_stats", "frame_detail")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", type=Path, nargs="+")
    ap.add_argument("--seed", type=int, default=71)
    ap.add_argument("--assets", type=int, default=3)
    ap.add_argument("--duration", type=float, default=180.0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    for path in args.checkpoints:
        model = ckpt.load(path, device="cpu")[0]
        print(f"{path} (light normalisation {'on' if model.cfg.normalise_light and model.cfg.light_ref else 'off'}):")
        for name, offset in HOURS.items():
            data = simulate_dataset(SimSpec(assets=args.assets, seed=args.seed, duration_s=args.duration,
                                            start_time=DAY0 + offset), model.cfg.features)
            comps, masks = component_table(model, data)
            with torch.no_grad():
                surprise = model.tails(torch.as_tensor(comps)).numpy()
            cols = []
            for c in FRAME_COMPONENTS:
                j = COMPONENT_NAMES.index(c)
                v = surprise[masks[:, j], j]
                if len(v):
                    cols.append(f"{c} {np.median(v):5.2f} / {np.quantile(v, 0.99):5.2f}")
            print(f"  {name:14s} median / p99 surprise: " + ",  ".join(cols))


if __name__ == "__main__":
    main()
