"""Checkpoint directory: config.json + model.safetensors + calibration.json + model_card.md.

Where it sits: written by `fusionwatch train`, read by `models.scorer.AnomalyScorer.load` (the
monitor) and `fusionwatch eval`. The save_pretrained / from_pretrained habit: a typed JSON config
rebuilds the module, safetensors holds every tensor (weights and fitted buffers), and nothing is
ever unpickled. Writes go to a temporary directory that is renamed into place, so a monitor never
loads a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from models.calibration import Calibration
from models.fusion import FusionConfig, FusionModel
from schemas.errors import FusionwatchError

FORMAT_VERSION = 2  # 2: component tails (surprise) replace location/scale; audio_band component
FILES = ("config.json", "model.safetensors", "calibration.json", "model_card.md")


class CheckpointError(FusionwatchError):
    pass


def model_version(model: FusionModel) -> str:
    """Stable id: variant, creation date and a hash of the weights (fits the 64-char SQL column)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return f"fw-{model.cfg.fusion}-{datetime.now(timezone.utc):%Y%m%d%H%M}-{h.hexdigest()[:10]}"


def save(path: str | Path, model: FusionModel, calibration: Calibration | None, card: str = "",
         extra: dict[str, Any] | None = None, version: str | None = None) -> str:
    from safetensors.torch import save_file

    path = Path(path)
    version = version or model_version(model)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = {"format": FORMAT_VERSION, "version": version, "created": datetime.now(timezone.utc).isoformat(),
              "model": model.cfg.to_dict(), "code_vocab": sorted(model.code_vocab), **(extra or {})}
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"version": version})
    if calibration is not None:
        calibration.save(tmp / "calibration.json")
    (tmp / "model_card.md").write_text(card or f"# fusionwatch model {version}\n")
    if path.exists():  # swap in place: old -> .old, new -> path, drop old
        old = path.with_name(f".{path.name}.old-{int(time.time())}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(path)
    return version


def load(path: str | Path, device: str = "cpu") -> tuple[FusionModel, Calibration | None, dict[str, Any]]:
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"no checkpoint in {path} (config.json missing); train one with `fusionwatch train`")
    config = json.loads(cfg_path.read_text())
    if config.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {config.get('format')}, this fusionwatch reads "
                              f"{FORMAT_VERSION}; retrain with `fusionwatch train`")
    model = FusionModel(FusionConfig.from_dict(config["model"]))
    tensors = load_file(str(path / "model.safetensors"), device="cpu")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}/model.safetensors does not match its config.json (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); the checkpoint is corrupt or mixed, retrain it")
    model.code_vocab = frozenset(config.get("code_vocab", []))
    model.to(device).eval()
    cal_path = path / "calibration.json"
    calibration = Calibration.load(cal_path) if cal_path.exists() else None
    return model, calibration, config


