"""The factory profile: stations on a line, anomalies of their frames, audio and machine logs.

A window is judged against its asset's threshold (an operator's override, else the model's
calibration); while the station learns its own baseline only the guard threshold opens an event.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.profiles.base import EvalRequest, Judgement, TrainRequest

if TYPE_CHECKING:
    from models.inputs import WindowInputs
    from models.scorer import WindowScore
    from services.monitor.sink import CallPoint
    from services.settings import MonitorSettings

ALERT_LEVELS = ("WARN", "WARNING", "ERROR", "CRITICAL")
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "pretrained" / "factory-standard"


class StationPolicy:
    reports_baseline = True
    skips_partial_windows = True  # a reconnecting camera's first windows are a view never trained on

    def __init__(self, cfg: MonitorSettings):
        self.cfg = cfg

    def lifecycle(self):
        from streamlogic.event_lifecycle import EventLifecycle

        return EventLifecycle(self.cfg.open_after, self.cfg.close_after)

    def judge(self, window: WindowInputs, score: WindowScore, threshold: float) -> Judgement:
        # while learning, the model reports its guard threshold: an override scales the same way
        return Judgement(float(score.score), threshold * score.guard, score.kind,
                         learning=score.baseline == "learning", judged=score.judged)

    def evidence_lines(self, window: WindowInputs) -> list[str]:
        """Machine log lines worth a reviewer's eye: coded ones and warnings or worse."""
        return [p.msg for _, p in window.logs if p.code or (p.level or "").upper() in ALERT_LEVELS]

    def call_point(self, window: WindowInputs, score: WindowScore) -> CallPoint | None:
        return None


class FactoryProfile:
    name = "factory"
    summary = "stations on a line: anomalies of camera frames, machine sound and PLC logs"
    default_faults = "demo"
    shipped_checkpoint: Path | None = SHIPPED_CHECKPOINT

    def window_policy(self, cfg: MonitorSettings) -> StationPolicy:
        return StationPolicy(cfg)

    def simulator(self, assets: int, seed: int, start_time: float, faults: str | list, horizon_s: float) -> Any:
        from services.simulator.faults import fault_schedule
        from services.simulator.plant import Plant, asset_names

        names = asset_names(assets)
        if isinstance(faults, str):  # a preset laid out over the run, or a schedule file
            faults = fault_schedule(faults, names, start_time, horizon_s, seed)
        return Plant(names, seed=seed, start_time=start_time, faults=faults)

    def ground_truth(self, source: Any) -> list[Any]:
        return [f for f in source.ground_truth if f.start < source.time]  # the faults injected so far

    def train(self, request: TrainRequest) -> None:
        from services.training.factory import train_command

        train_command(request)

    def evaluate(self, request: EvalRequest) -> None:
        from services.training.factory import eval_command

        eval_command(request)

    def train_first_model(self, out_dir: Path, progress: bool = True, cache_dir: Path | None = None,
                          device: str = "auto") -> Path:
        from models.scorer import pick_device
        from services.settings import get_settings
        from services.training.recipes import RECIPES, run_recipe
        from services.training.ui import progress_bars

        cache_dir = cache_dir or get_settings().var_dir / "datasets"
        with progress_bars(progress) as bar:
            run_recipe(RECIPES["quick"], Path(out_dir), "cross", cache_dir=cache_dir, progress=bar,
                       device=pick_device(device))
        return Path(out_dir)
