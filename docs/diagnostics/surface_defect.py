"""Why the shipped model does not see surface defects (docs/model.md, "Limitations").

Run from the repository root (about 3 minutes on 2 cores; the dataset is cached in var/datasets):

    .venv/bin/python docs/diagnostics/surface_defect.py

Uses the validation seed (3) only, never the test seed. Prints:
1. the window AUROC of the frame components for the product-fault kinds;
2. the same for other reductions of the frame error map (top-k pixel counts, the two worst frames,
   the belt band only) — is the reduction the limit?
3. what a synthetic defect painted on normal frames adds to the residual, against the frames' own
   residual — is the defect above the normal error floor?
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from models import checkpoint
from models.fusion import COMPONENT_NAMES
from services.training.dataset import SimSpec, simulate_dataset


def main() -> None:
    torch.set_num_threads(1)
    model, _, _ = checkpoint.load(Path("models/pretrained/factory-standard"))
    model.eval()
    val = simulate_dataset(SimSpec(assets=6, seed=3, duration_s=900, faults="all"), model.cfg.features,
                           cache_dir=Path("var/datasets"))
    kinds = list(val.meta["fault_kinds"])
    kind, overlap = val.labels["fault_kind"], val.labels["fault_overlap"]
    neg = overlap <= 0

    def auroc(score: np.ndarray, name: str) -> float:
        pos = (kind == kinds.index(name)) & (overlap >= val.features.window_s / 2)
        y = np.r_[np.ones(pos.sum()), np.zeros(neg.sum())]
        return round(float(roc_auc_score(y, np.r_[score[pos], score[neg]])), 3)

    maps, fmask, comps = [], [], []
    with torch.inference_mode():
        for i in range(0, len(val), 64):
            batch = val.batch(np.arange(i, min(i + 64, len(val))), model.code_vocab)
            out = model(batch)
            maps.append(out.frame_error.numpy())
            fmask.append(batch.frame_mask.numpy())
            comps.append(out.components.numpy())
    maps, fmask, comps = np.concatenate(maps), np.concatenate(fmask), np.concatenate(comps)

    print("1. frame components")
    for name in ("surface_defect", "missing_component", "misaligned_part"):
        print(f"   {name}:", {c: auroc(comps[:, j], name) for j, c in enumerate(COMPONENT_NAMES)
                                if c in ("frames", "frame_stats", "cross_frames")})

    def frame_component(m: np.ndarray, k: int, worst: int = 1) -> np.ndarray:
        """Mean of the top-k residual pixels per frame, then the worst frame (or the two worst)."""
        per_frame = -np.sort(-m.reshape(*m.shape[:2], -1), axis=-1)[..., :k].mean(-1)  # (B, T)
        ranked = -np.sort(-np.where(fmask, per_frame, -np.inf), axis=1)  # worst first
        if worst == 1:
            return ranked[:, 0]
        return np.where(np.isfinite(ranked[:, 1]), ranked[:, :2].mean(1), ranked[:, 0])

    print("2. other reductions of the error map, surface_defect AUROC")
    for k in (1, 2, 4, 8, 16, 32, 64):
        print(f"   top-{k} pixels: worst frame {auroc(frame_component(maps, k), 'surface_defect')}, "
              f"two worst {auroc(frame_component(maps, k, 2), 'surface_defect')}, "
              f"belt band only {auroc(frame_component(maps[:, :, 20:44], k), 'surface_defect')}")

    print("3. a synthetic defect on normal frames (median over 20 frames)")
    ae = model.frames
    frames = val.batch(np.flatnonzero(neg)[:200:10], model.code_vocab).frames[:, 0].contiguous()
    with torch.inference_mode():
        base, _ = ae.residual(frames)
        for label, h, w, delta in (("dark 2x2 blob, -0.3", 2, 2, -0.3), ("1x5 scratch, -0.1", 1, 5, -0.1)):
            rows = []
            for i in range(len(frames)):
                lum = frames[i].mean(0)[24:40, 8:72]  # the belt band, where parts pass
                y, x = np.unravel_index(int(lum.argmax()), lum.shape)
                y, x = y + 24, x + 8
                painted = frames[i:i + 1].clone()
                painted[0, :, y:y + h, x:x + w] += delta
                err, _ = ae.residual(painted.clamp_(0, 1))
                rows.append(((err[0] - base[i]).max().item(), base[i].max().item(),
                             base[i].flatten().topk(ae.topk).values.mean().item(),
                             err[0].flatten().topk(ae.topk).values.mean().item()))
            added, floor, top_before, top_after = np.median(np.array(rows), 0)
            print(f"   {label}: adds {added:.3f} at its pixels; the frame's own residual max {floor:.3f}, "
                  f"top-{ae.topk} mean {top_before:.3f} -> {top_after:.3f} with the defect")


if __name__ == "__main__":
    main()
