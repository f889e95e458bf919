"""CUDA checks (marked gpu: skipped without a GPU; run with `pytest -m gpu` on a GPU box).

bf16 autocast must give the same anomaly scores as float32 within a stated tolerance: the
threshold decision of a window must not depend on the dtype the monitor happens to run in.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

# Stated tolerance: relative error of the raw score per window, and rank agreement over a batch.
MAX_MEDIAN_REL_ERR = 0.02
MAX_P99_REL_ERR = 0.10
MIN_SPEARMAN = 0.99


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a.argsort().argsort(), b.argsort().argsort()
    return float(np.corrcoef(ra, rb)[0, 1])


def test_bf16_scores_match_fp32_on_cuda():
    import torch

    from services.bench.model import ModelBenchConfig, build_model, forward_fn, make_batch, synthetic_features

    cfg = ModelBenchConfig(device="cuda")
    model, _ = build_model(cfg)
    feats = synthetic_features(model, cfg, n=256)
    batch = make_batch(model, feats, 256)
    batch = batch.to("cuda") if hasattr(batch, "to") else batch
    _, raw32, _ = forward_fn(model, "fp32", "cuda")(batch)
    _, raw16, _ = forward_fn(model, "bf16", "cuda")(batch)
    a, b = raw32.float().cpu().numpy(), raw16.float().cpu().numpy()
    rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-3)
    print(f"bf16 vs fp32 raw score: median rel err {np.median(rel):.4f}, p99 {np.quantile(rel, 0.99):.4f}, "
          f"max {rel.max():.4f}, spearman {_spearman(a, b):.5f}")
    assert np.median(rel) <= MAX_MEDIAN_REL_ERR
    assert np.quantile(rel, 0.99) <= MAX_P99_REL_ERR
    assert _spearman(a, b) >= MIN_SPEARMAN
    assert torch.cuda.is_available()
