"""Why the shipped model does not see surface defects (docs/model.md, "Limitations").

Run from the repository root (about 3 minutes on 2 cores; the dataset is cached in var/datasets):

    .venv/bin/python docs/diagnostics/surface_defect.py

Written for the sixth session's checkpoint (frames at 80x60, no detail view): the figures in
docs/model.md are that model's. On a checkpoint with a detail view it examines the scene path
(the 80x60 view) alone; the detail view's own check is `surface_defect_resolution.py`.

Uses the validation seed (3) only, never the test seed. Prints:
1. the window AUROC of the frame components for the product-fault kinds;
2. the same for other reductions of the frame error map (top-k pixel counts, the two worst frames,
   the belt band only) — is the reduction the limit?
3. what a synthetic defect painted on normal frames adds to the residual, against the frames' own
   residual — is the defect above the normal error floor?
4. a PatchCore-style score instead of the residual: each patch's distance to its nearest
   neighbour in a per-station memory bank of normal patches of the autoencoder's own encoder
   features — is the information in those features? (`--layer 1`: the 40x30 layer, ~8 minutes)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from models import checkpoint
from models.fusion import COMPONENT_NAMES
from services.training.dataset import SimSpec, simulate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, choices=(1, 2), default=2, help="encoder layer of part 4")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, _, _ = checkpoint.load(Path("models/pretrained/factory-standard"))
    model.eval()
    val = simulate_dataset(SimSpec(assets=6, seed=3, duration_s=900, faults="all"), model.cfg.features,
                           cache_dir=Path("var/datasets"))
    kinds = list(val.meta["fault_kinds"])
    kind, overlap = val.labels["fault_kind"], val.labels["fault_overlap"]
    neg = overlap <= 0

    def auroc(score: np.ndarray, name: str) -> float:  # windows without a score (NaN) left out
        scored = np.isfinite(score)
        pos = scored & (kind == kinds.index(name)) & (overlap >= val.features.window_s / 2)
        y = np.r_[np.ones(pos.sum()), np.zeros((neg & scored).sum())]
        return round(float(roc_auc_score(y, np.r_[score[pos], score[neg & scored]])), 3)

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
    frames = model.scene_frames(val.batch(np.flatnonzero(neg)[:200:10], model.code_vocab).frames[:, 0]).contiguous()
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


    print(f"4. nearest-neighbour patch distance, encoder layer h{args.layer} (belt band), AUROC")
    rows = slice(5, 11) if args.layer == 2 else slice(10, 22)  # the belt band at 20x15 / 40x30
    t_rel = val.start - val.start.min()
    scores = np.full(len(val), np.nan)

    def patches(idx: np.ndarray):  # (frames, patches, C) per batch of 8 windows, and the frame mask
        with torch.inference_mode():
            for i in range(0, len(idx), 8):
                b = val.batch(idx[i:i + 8], model.code_vocab)
                h = ae.enc[0](model.scene_frames(b.frames.flatten(0, 1)))
                h = F.avg_pool2d(h if args.layer == 1 else ae.enc[1](h), 3, 1, 1)  # local aggregation
                yield h[:, :, rows].permute(0, 2, 3, 1).flatten(1, 2), b.frame_mask.flatten(), i

    for a in range(len(val.assets)):  # a bank per station from the first 40 % of its normal windows
        mine = np.flatnonzero(val.asset_idx == a)
        early = t_rel[mine] < 0.4 * t_rel.max()
        bank = torch.cat([p[m].flatten(0, 1) for p, m, _ in patches(mine[early & neg[mine]][::2])])
        bank = bank[torch.randperm(len(bank), generator=torch.Generator().manual_seed(0))[:4000]]
        later = mine[~early]
        for p, m, i in patches(later):
            d = torch.cdist(p, bank[None]).min(-1).values.max(-1).values  # worst patch per frame
            per_window = d.view(-1, val.features.max_frames).masked_fill(~m.view(-1, val.features.max_frames), -1)
            scores[later[i:i + len(per_window)]] = per_window.max(1).values.numpy()
    print("  ", {k: auroc(scores, k) for k in ("surface_defect", "missing_component", "misaligned_part")})


if __name__ == "__main__":
    main()
