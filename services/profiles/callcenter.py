"""The call-centre profile: calls (the call id is the asset), the customer's sentiment and
frustration from the call audio and the speaker-tagged transcript (docs/callcenter.md).

A window's score is the customer's frustration; a call escalates on sustained frustration with
hysteresis (streamlogic/escalation.py), and its evidence is what was said, by whom.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.profiles.base import EvalRequest, Judgement, TrainRequest, refuse

if TYPE_CHECKING:
    from models.inputs import WindowInputs
    from models.scorer import WindowScore
    from services.monitor.sink import CallPoint
    from services.settings import MonitorSettings

FACTORY_ONLY_TRAIN = ("since", "until", "bootstrap", "dataset", "calib_fraction", "save_dataset", "assets", "seed",
                      "duration", "intra_steps", "detail_steps", "detail_rows", "budget", "budget_hours")
FACTORY_ONLY_EVAL = ("checkpoint", "test_assets", "per_asset")


class CallPolicy:
    reports_baseline = False  # a call is scored against the escalation threshold, not a learned baseline
    skips_partial_windows = False  # every call starts mid-window; the escalation's hysteresis absorbs it

    def __init__(self, cfg: MonitorSettings):
        from streamlogic.escalation import EscalationRule

        self.cfg, self.rule = cfg, EscalationRule.from_settings(cfg)

    def lifecycle(self):
        return self.rule.lifecycle()

    def judge(self, window: WindowInputs, score: WindowScore, threshold: float) -> Judgement:
        if score.frustration is None:  # a model without the call heads: judged as a station would be
            return Judgement(float(score.score), threshold * score.guard, score.kind, learning=False, judged=True)
        # a window that does not hear the customer is scored (the curve) but not judged (the escalation)
        return Judgement(float(score.frustration), self.rule.open_threshold, "escalation", learning=False,
                         judged=self.rule.hears_customer(score.speech_s))

    def evidence_lines(self, window: WindowInputs) -> list[str]:
        return [f"{p.speaker}: {p.msg}" if p.speaker else p.msg for _, p in window.logs]

    def call_point(self, window: WindowInputs, score: WindowScore) -> CallPoint | None:
        if score.frustration is None or not score.sentiment:
            return None
        from services.monitor.sink import CallPoint

        return CallPoint(window.end, score.sentiment, float(score.frustration), window.start,
                         tuple((t, p.speaker, p.msg) for t, p in window.logs), self.rule.hears_customer(score.speech_s))


class CallCentreProfile:
    name = "callcenter"
    summary = "calls: the customer's sentiment and frustration from call audio and the transcript"
    default_faults = "none"  # calls carry their own labels
    shipped_checkpoint: Path | None = None

    def window_policy(self, cfg: MonitorSettings) -> CallPolicy:
        return CallPolicy(cfg)

    def simulator(self, assets: int, seed: int, start_time: float, faults: str | list, horizon_s: float) -> Any:
        from schemas.errors import ConfigError
        from services.simulator.callcenter import CallCenter

        if faults not in ("none", [], None):
            raise ConfigError("--faults applies to the factory profile; the call centre's labels are its ground truth")
        return CallCenter(assets, seed=seed, start_time=start_time)

    def ground_truth(self, source: Any) -> list[Any]:
        return list(source.calls)  # the calls started so far

    def train(self, request: TrainRequest) -> None:
        from services.training.callcenter import train_command

        refuse(self.name, request, FACTORY_ONLY_TRAIN)
        train_command(request.recipe, request.out, request.variant, request.source, request.device, request.threads,
                      request.progress, request.fusion_steps)

    def evaluate(self, request: EvalRequest) -> None:
        from services.training.callcenter import eval_command

        refuse(self.name, request, FACTORY_ONLY_EVAL)
        eval_command(request.recipe, request.json_path, request.retrain, request.test_seed, request.test_duration, None,
                     request.device, request.threads, request.progress, request.source)

    def train_first_model(self, out_dir: Path, progress: bool = True, cache_dir: Path | None = None,
                          device: str = "auto") -> Path:
        from services.training.callcenter import train_quick_callcenter

        return train_quick_callcenter(Path(out_dir), progress=progress, cache_dir=cache_dir, device=device)
