"""What a profile is: one way of reading the same contract, model and services.

A profile says what a window means (the monitor's `WindowPolicy`), how its model is trained and
evaluated, what its simulator produces, and what `fusionwatch up` trains on a first start. The
factory (stations: anomalies of frames, audio and logs) and the call centre (calls: customer
sentiment and frustration) are the two implementations; the CLI picks one from the registry in
`services.profiles`. To add a profile: implement `Profile`, register it there, and add its
simulator and training modules (CONTRIBUTING.md).

Heavy parts (torch, training, simulators) are imported inside the methods that need them, so the
monitor loads a profile without pulling training code in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from models.inputs import WindowInputs
    from models.scorer import WindowScore
    from services.monitor.sink import CallPoint
    from services.settings import MonitorSettings
    from streamlogic.event_lifecycle import EventLifecycle


@dataclass(frozen=True)
class Judgement:
    """What one scored window means for the event lifecycle."""

    score: float
    threshold: float
    kind: str | None
    learning: bool  # judged against the guard threshold while the asset learns its baseline
    judged: bool  # False: too early for any judgement


class WindowPolicy(Protocol):
    """The monitor's side of a profile: pure decisions on scored windows."""

    reports_baseline: bool  # log each asset's learning → watching transition
    skips_partial_windows: bool  # a window where a stream starts or comes back mid-way is not judged

    def lifecycle(self) -> EventLifecycle: ...

    def judge(self, window: WindowInputs, score: WindowScore, threshold: float) -> Judgement:
        """`threshold`: the asset's threshold in force (an operator's override, or the model's)."""
        ...

    def evidence_lines(self, window: WindowInputs) -> list[str]: ...

    def call_point(self, window: WindowInputs, score: WindowScore) -> CallPoint | None: ...


@dataclass
class TrainRequest:
    """`fusionwatch train`'s options (`--help` explains each); a profile refuses those it has no use
    for, by name (`refuse`)."""

    recipe: str = "standard"
    source: str = "sim"
    variant: str = "cross"
    out: Path | None = None
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    fusion_steps: int | None = None
    # factory: normal operation from Kafka or a saved dataset, simulator sizes, recipe overrides
    since: str | None = None
    until: str | None = None
    bootstrap: str | None = None
    dataset: Path | None = None
    calib_fraction: float = 0.2
    save_dataset: Path | None = None
    assets: int | None = None
    seed: int | None = None
    duration: float | None = None
    intra_steps: int | None = None
    detail_steps: int | None = None
    detail_rows: str | None = None
    resume: bool = True
    budget: float = 1.0
    budget_hours: float = 8.0


@dataclass
class EvalRequest:
    """`fusionwatch eval`'s options; a profile refuses those it has no use for."""

    recipe: str = "standard"
    source: str = "sim"
    json_path: Path | None = None
    retrain: bool = False
    test_seed: int | None = None
    test_duration: float | None = None
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    # factory: evaluate given checkpoints, the test run's size, per-asset calibration
    checkpoint: list[Path] = field(default_factory=list)
    test_assets: int | None = None
    per_asset: bool = False


class Profile(Protocol):
    name: str
    summary: str  # one line for --help
    default_faults: str  # `fusionwatch up`'s simulated schedule
    shipped_checkpoint: Path | None  # copied on a first start instead of training, when present

    def window_policy(self, cfg: MonitorSettings) -> WindowPolicy: ...

    def simulator(self, assets: int, seed: int, start_time: float, faults: str | list, horizon_s: float) -> Any:
        """The simulated source: `records(seconds)`, `time`, and its ground truth."""
        ...

    def ground_truth(self, source: Any) -> list[Any]:
        """The ground-truth rows (`to_json()`) the simulated source has started so far, in order."""
        ...

    def train(self, request: TrainRequest) -> None: ...

    def evaluate(self, request: EvalRequest) -> None: ...

    def train_first_model(self, out_dir: Path, progress: bool = True, cache_dir: Path | None = None,
                          device: str = "auto") -> Path:
        """The model `fusionwatch up` trains when none exists (minutes on 2 CPU cores)."""
        ...


def refuse(profile: str, request: TrainRequest | EvalRequest, names: tuple[str, ...]) -> None:
    """One sentence for options a profile has no use for, when they were given (not defaults)."""
    from schemas.errors import ConfigError

    defaults = type(request)()
    used = sorted(n for n in names if getattr(request, n) != getattr(defaults, n))
    if used:
        options = ", ".join("--" + n.replace("_", "-") for n in used)
        raise ConfigError(f"{options} {'does' if len(used) == 1 else 'do'} not apply to the {profile} profile")
