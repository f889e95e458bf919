"""`train_quick`: the first-start model of `fusionwatch up` (a few minutes on 2 CPU cores).

Where it sits: called by `services.stack.up` when no checkpoint exists yet. Trains the "quick"
recipe (simulated normal operation of other stations than the demo's, calibrated on a third
seed) into the checkpoint directory, with progress bars.
"""

from __future__ import annotations

from pathlib import Path

from services.training.recipes import RECIPES, run_recipe
from services.training.ui import progress_bars


def train_quick(out_dir: Path, profile: str = "factory", progress: bool = True, recipe: str = "quick",
                cache_dir: Path | None = None, device: str = "auto") -> Path:
    """Train and save a usable model for the default 4-asset demo; returns the checkpoint dir."""
    from models.scorer import pick_device
    from services.settings import get_settings

    if profile != "factory":
        from services.training.callcenter import train_quick_callcenter

        return train_quick_callcenter(Path(out_dir), progress=progress, cache_dir=cache_dir, device=device)
    out_dir = Path(out_dir)
    cache_dir = cache_dir or get_settings().var_dir / "datasets"
    with progress_bars(progress) as bar:
        run_recipe(RECIPES[recipe], out_dir, "cross", cache_dir=cache_dir, progress=bar, device=pick_device(device))
    return out_dir
