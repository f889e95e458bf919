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
    model = model.to("cuda")  # build_model leaves it on the CPU (FLOPs are counted there)
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


def test_bf16_scores_of_the_shipped_model_match_fp32_on_cuda():
    """The same tolerance on the shipped model and simulator windows, whose reconstruction errors
    are small (random-init noise frames above have large ones, which hide bf16's rounding). Needs
    MiniLM for log lines (the simulator's frames are Pillow JPEGs); the CPU twin of this test runs
    in every `make test` (tests/test_models.py)."""
    pytest.importorskip("transformers")
    import torch

    from models.features import collate
    from models.scorer import AnomalyScorer
    from services.profiles.factory import SHIPPED_CHECKPOINT as SHIPPED_MODEL
    from services.simulator.plant import Fault, Plant
    from streamlogic.windows import offline_windows

    scorer = AnomalyScorer.load(SHIPPED_MODEL, device="cuda")
    start = 1767600000.0
    plant = Plant(4, seed=22, start_time=start, faults=[Fault("L1-S2", "cavitation", start + 15, start + 30)])
    windows = list(offline_windows(plant.records(60), options=scorer.decode_options))
    model = scorer.model
    batch = collate(scorer.featurizer.featurize_many(windows), model.cfg.features, model.code_vocab).to("cuda")
    with torch.inference_mode():
        a = model.combine(model(batch))[0].float().cpu().numpy()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            b = model.combine(model(batch))[0].float().cpu().numpy()
    rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-3)
    print(f"shipped model, bf16 vs fp32 raw score: median rel err {np.median(rel):.4f}, "
          f"p99 {np.quantile(rel, 0.99):.4f}, spearman {_spearman(a, b):.5f}")
    assert np.median(rel) <= MAX_MEDIAN_REL_ERR and np.quantile(rel, 0.99) <= MAX_P99_REL_ERR
    assert _spearman(a, b) >= MIN_SPEARMAN


def test_detail_view_trains_and_scores_on_cuda():
    """The detail autoencoder's own training phase runs on CUDA under bf16 autocast, and its
    evidence (float32 under autocast, like the rest of the intra-modal part) is the same in bf16."""
    import torch

    from models.data import WindowArrays
    from models.fusion import COMPONENT_NAMES
    from models.train import TrainConfig, fit_intra_statistics, fit_normalisers, train
    from tests.test_models import DETAIL_FC, detail_tiny, synthetic_features

    data = WindowArrays.from_features([synthetic_features(i, asset="AB"[i % 2], fc=DETAIL_FC) for i in range(32)], DETAIL_FC)
    model = detail_tiny()
    fit_normalisers(model, data)
    result = train(model, data, TrainConfig(intra_steps=5, detail_steps=20, fusion_steps=5, frames_per_step=8,
                                            windows_per_step=8, group_size=4, device="cuda", bf16=True))
    assert result.steps == 30 and next(model.detail.parameters()).device.type == "cuda"
    fit_intra_statistics(model, data, device="cuda")
    batch = data.batch(np.arange(8), model.code_vocab).to("cuda")
    with torch.inference_mode():
        a = model.eval()(batch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            b = model(batch)
    d = COMPONENT_NAMES.index("frame_detail")
    assert bool(a.component_mask[:, d].all())
    torch.testing.assert_close(a.components[:, d], b.components[:, d])
    torch.testing.assert_close(a.detail_error, b.detail_error)
