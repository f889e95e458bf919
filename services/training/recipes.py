"""Training recipes: which data, which model size, how many steps — and the one function that
runs a recipe end to end into a checkpoint directory.

Where it sits: between the CLI (`fusionwatch train` / `eval`, and the first model of `fusionwatch up`)
and `models.train`. A run is: build (or load cached) datasets -> fit the normal-data
statistics -> train the autoencoders ("intra") and the fusion -> fit the frame-statistics density
-> standardise each score component on held-out normal windows -> calibrate thresholds for the
false-alarm budget on those windows -> save config, weights, calibration and model card.

Seeds: a simulator seed re-draws every station (camera scene, acoustics, timeline), so recipes
train on one seed, calibrate on a second and evaluate on a third; nothing is ever tuned on the
test seed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from models import checkpoint
from models.adaptation import table_phases
from models.calibration import Calibration, calibrate
from models.data import WindowArrays
from models.features import FeatureConfig
from models.fusion import FusionConfig, FusionModel, FusionVariant
from models.train import (
    TrainConfig,
    TrainResult,
    clear_train_state,
    component_table,
    fit_component_stats,
    fit_intra_statistics,
    fit_normalisers,
    train,
)
from schemas.errors import ConfigError
from services.training.dataset import DAY_START, SimSpec, simulate_dataset
from streamlogic.event_lifecycle import CLOSE_AFTER, OPEN_AFTER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    name: str
    train: SimSpec  # normal operation, training seed
    calib: SimSpec  # normal operation, validation seed: component scales and thresholds
    test: SimSpec  # every fault kind, test seed: evaluation only
    model: dict[str, Any] = field(default_factory=dict)  # FusionConfig overrides
    steps: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    tiny_model: bool = False
    per_asset: bool = False  # per-asset calibration (only when calib data come from the same plant)
    description: str = ""

    def model_config(self, variant: FusionVariant = "cross") -> FusionConfig:
        base = FusionConfig.tiny if self.tiny_model else FusionConfig
        return base(fusion=variant, **self.model)

    def train_config(self, **overrides: Any) -> TrainConfig:
        return TrainConfig(**{**self.steps, **{k: v for k, v in overrides.items() if v is not None}})


# The simulator's inspection camera: frames decoded at 160x120 (half the camera's 320x240), the
# scene path at 80x60, the belt band (rows 88-168 of 240) as the detail view (FusionConfig).
INSPECTION_VIEW: dict[str, Any] = dict(features=FeatureConfig(frame_width=160, frame_height=120), scene_pool=2,
                                       detail_rows=(44, 84))

RECIPES: dict[str, Recipe] = {
    "tiny": Recipe(
        "tiny", SimSpec(assets=2, seed=101, duration_s=40), SimSpec(assets=2, seed=102, duration_s=60),
        SimSpec(assets=4, seed=103, duration_s=95, faults="all"), tiny_model=True,
        model=dict(learn_windows=20, judge_after=5),
        steps=dict(intra_steps=8, fusion_steps=8, frames_per_step=8, windows_per_step=16, checkpoint_every=4),
        description="seconds; for tests and smoke runs (the model is not useful)"),
    "quick": Recipe(
        "quick", SimSpec(assets=8, seed=11, duration_s=180, day_slices=3, start_time=DAY_START),
        SimSpec(assets=4, seed=12, duration_s=360, day_slices=3, start_time=DAY_START),
        SimSpec(assets=4, seed=13, duration_s=900, faults="all", day_slices=3, start_time=DAY_START, lead_in_s=150),
        model=INSPECTION_VIEW, steps=dict(intra_steps=300, detail_steps=1500, fusion_steps=300),
        description="a few minutes on 2 CPU cores; what `fusionwatch up` trains on first start"),
    "standard": Recipe(
        # every run spans the day (6 slices, centred on 06:00, 10:00, ... 02:00 UTC: every shift's
        # light and lens dirt, each handover); the test run's stations learn their baselines first
        "standard", SimSpec(assets=10, seed=1, duration_s=600, day_slices=6, start_time=DAY_START),
        SimSpec(assets=8, seed=2, duration_s=480, day_slices=6, start_time=DAY_START),
        # seed 3 (same size) is the validation run design choices are checked on; the test seed 41
        # was written into docs/model.md before its one run (seeds 5 and earlier were looked at)
        SimSpec(assets=6, seed=41, duration_s=1800, faults="all", day_slices=6, start_time=DAY_START, lead_in_s=150),
        model=INSPECTION_VIEW, steps=dict(intra_steps=600, detail_steps=12000, fusion_steps=600),
        description="the evaluated recipe: <= 20 min on 2 CPU cores"),
}


def product_config(variant: FusionVariant = "cross") -> FusionConfig:
    """The architecture the shipped model has (the standard recipe's): what benchmarks measure."""
    return RECIPES["standard"].model_config(variant)


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}") from None


ProgressFn = Callable[[str, float, float, dict], None]  # (stage, done, total, info)


@dataclass
class TrainedModel:
    model: FusionModel
    calibration: Calibration
    info: dict[str, Any]


def load_datasets(recipe: Recipe, features: FeatureConfig, cache_dir: Path | None, progress: ProgressFn | None = None,
                  which: tuple[str, ...] = ("train", "calib")) -> dict[str, WindowArrays]:
    out = {}
    for name in which:
        spec = getattr(recipe, name)

        def p(done, total, name=name):
            if progress:
                progress(f"simulate {name}", done, total, {})

        out[name] = simulate_dataset(spec, features, cache_dir=cache_dir, progress=p)
    return out


def fit_model(model: FusionModel, train_data: WindowArrays, calib_data: WindowArrays, cfg: TrainConfig,
              progress: ProgressFn | None = None, state_dir: Path | None = None, phases=("intra", "detail", "fusion"),
              per_asset: bool = False, budget_events: float = 1.0, budget_hours: float = 8.0,
              open_after: int = OPEN_AFTER, close_after: int = CLOSE_AFTER, skip_normalisers: bool = False) -> tuple[Calibration, dict]:
    """Train `model` on normal windows and calibrate it on other normal windows."""
    t0 = time.perf_counter()
    if not skip_normalisers:
        fit_normalisers(model, train_data)

    def p(phase, step, steps, losses):
        if progress:
            progress(phase, step, steps, losses)

    result: TrainResult = train(model, train_data, cfg, p, state_dir=state_dir, phases=phases)
    if "intra" in phases:
        fit_intra_statistics(model, train_data, device=cfg.device)
    train_s = time.perf_counter() - t0
    if progress:
        progress("calibrate", 0, 1, {})
    table = component_table(model, calib_data, device=cfg.device)  # one pass serves both fits
    comp_stats = fit_component_stats(model, calib_data, device=cfg.device, table=table)
    calibration = calibrate_model(model, calib_data, per_asset=per_asset, budget_events=budget_events,
                                  budget_hours=budget_hours, open_after=open_after, close_after=close_after,
                                  device=cfg.device, table=table)
    if progress:
        progress("calibrate", 1, 1, {})
    info = {"train_seconds": round(train_s, 1), "total_seconds": round(time.perf_counter() - t0, 1),
            "steps": result.steps, "final_losses": result.final_losses, "component_stats": comp_stats,
            "threads": torch.get_num_threads()}
    return calibration, info


MIN_WATCHING_WINDOWS = 200


def calibrate_model(model: FusionModel, calib_data: WindowArrays, per_asset: bool = False, device: str = "cpu",
                    table: tuple[np.ndarray, np.ndarray] | None = None, **kw: Any) -> Calibration:
    comps, masks = table if table is not None else component_table(model, calib_data, device=device)
    raw, _, _ = model.combine_arrays(comps, masks, windows=(calib_data.asset_idx, calib_data.start))
    # thresholds are for watching assets: windows scored while a baseline is learned do not count
    # (unless a short recording holds little else: then every window is better than none)
    learning, _ = table_phases(calib_data.asset_idx, calib_data.start, model.cfg.baseline)
    if (~learning).sum() >= MIN_WATCHING_WINDOWS:
        raw = np.where(learning, np.nan, raw)
    else:
        log.warning("calibration data hold only %d windows past each station's learning phase: calibrating on all %d",
                    int((~learning).sum()), len(raw))
    assets = np.array(calib_data.assets)[calib_data.asset_idx]
    hop = float(calib_data.meta.get("spec", {}).get("hop_s", 1.0))
    return calibrate(raw, assets, calib_data.start, per_asset=per_asset, hop_s=hop, **kw)


def run_recipe(recipe: Recipe, out_dir: Path, variant: FusionVariant = "cross", cache_dir: Path | None = None,
               progress: ProgressFn | None = None, device: str = "cpu", resume: bool = True,
               train_data: WindowArrays | None = None, calib_data: WindowArrays | None = None,
               overrides: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
               per_asset: bool | None = None, budget_events: float = 1.0, budget_hours: float = 8.0) -> TrainedModel:
    """Train one model with a recipe and save it as a checkpoint directory."""
    overrides = overrides or {}
    cfg = recipe.train_config(device=device, **overrides)
    model_cfg = recipe.model_config(variant)
    datasets = {}
    if train_data is None or calib_data is None:
        datasets = load_datasets(recipe, model_cfg.features, cache_dir, progress)
    train_data = train_data if train_data is not None else datasets["train"]
    calib_data = calib_data if calib_data is not None else datasets["calib"]
    model = FusionModel(model_cfg)
    state_dir = out_dir.with_name(out_dir.name + ".train-state")
    if not resume:
        clear_train_state(state_dir)
    per_asset = recipe.per_asset if per_asset is None else per_asset
    calibration, info = fit_model(model, train_data, calib_data, cfg, progress, state_dir=state_dir, per_asset=per_asset,
                                  budget_events=budget_events, budget_hours=budget_hours)
    info.update(recipe=recipe.name, variant=variant, train_config=cfg.to_dict(),
                data={"train": _describe(train_data), "calibration": _describe(calib_data)}, source=source or {})
    from services.training.card import model_card

    version = checkpoint.model_version(model)
    card = model_card(version, model, calibration, info)
    checkpoint.save(out_dir, model, calibration, card=card, extra={"training": jsonable(info)}, version=version)
    clear_train_state(state_dir)
    try:
        state_dir.rmdir()
    except OSError:
        pass
    return TrainedModel(model, calibration, info | {"version": version, "path": str(out_dir)})


def train_variants(recipe: Recipe, variants: tuple[FusionVariant, ...], out_root: Path, cache_dir: Path | None = None,
                   progress: ProgressFn | None = None, device: str = "cpu", overrides: dict[str, Any] | None = None,
                   reuse: bool = True) -> dict[FusionVariant, Path]:
    """Baselines with the same encoders and budget: the autoencoders are trained once and copied
    into every variant; each fusion variant then gets the same number of fusion steps."""
    overrides = overrides or {}
    cfg = recipe.train_config(device=device, **overrides)
    paths = {v: out_root / v for v in variants}
    if reuse and all((p / "config.json").exists() for p in paths.values()):
        return paths
    data = load_datasets(recipe, recipe.model_config().features, cache_dir, progress)
    base = FusionModel(recipe.model_config("late"))
    fit_normalisers(base, data["train"])
    t0 = time.perf_counter()

    def p(phase, step, steps, losses):
        if progress:
            progress(f"{phase} (shared)" if phase in ("intra", "detail") else phase, step, steps, losses)

    train(base, data["train"], cfg, p, phases=("intra", "detail"))
    fit_intra_statistics(base, data["train"], device=device)
    intra_s = time.perf_counter() - t0
    from services.training.card import model_card

    for v in variants:
        model = FusionModel(recipe.model_config(v))
        fit_normalisers(model, data["train"])
        model.load_state_dict({k: val for k, val in base.state_dict().items()}, strict=False)

        def pv(phase, step, steps, losses, v=v):
            if progress:
                progress(f"{phase} ({v})", step, steps, losses)

        calibration, info = fit_model(model, data["train"], data["calib"], cfg, pv, phases=("fusion",),
                                      per_asset=recipe.per_asset, skip_normalisers=True)
        info["train_seconds"] = round(info["train_seconds"] + intra_s, 1)
        info["intra_seconds_shared"] = round(intra_s, 1)
        info.update(recipe=recipe.name, variant=v, train_config=cfg.to_dict(),
                    data={"train": _describe(data["train"]), "calibration": _describe(data["calib"])})
        version = checkpoint.model_version(model)
        checkpoint.save(paths[v], model, calibration, card=model_card(version, model, calibration, info),
                        extra={"training": jsonable(info)}, version=version)
    return paths


def _describe(data: WindowArrays) -> dict[str, Any]:
    return {"windows": len(data), "assets": data.assets, "source": data.meta.get("source", "?"),
            "spec": data.meta.get("spec", {k: v for k, v in data.meta.items() if k != "ground_truth"})}


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def spec_with(spec: SimSpec, **kw: Any) -> SimSpec:
    return replace(spec, **{k: v for k, v in kw.items() if v is not None})


