"""`fusionwatch train` and `fusionwatch eval`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()

_RECIPE_HELP = "Training recipe: 'tiny' (seconds, tests), 'quick' (minutes, what `up` trains), 'standard' (the evaluated one)."
_PROFILE_HELP = ("'factory' (anomalies of frames/audio/logs) or 'callcenter' (customer sentiment and frustration from "
                 "call audio + transcript, trained on labelled calls). Default: FW_PROFILE, else factory.")


@app.command()
def train(
    recipe: str = typer.Option("standard", "--recipe", "-r", help=_RECIPE_HELP),
    source: str = typer.Option("sim", "--source",
                               help="Where normal operation comes from: 'sim' (the plant simulator, in-process), "
                                    "'kafka' (a time range of the input topics, --since/--until) or 'dataset' "
                                    "(a directory saved with --save-dataset)."),
    variant: str = typer.Option("cross", "--variant",
                                help="Fusion: 'cross' (cross-attention, the product), 'concat' or 'late' (baselines)."),
    out: Path = typer.Option(None, "--out", "-o", file_okay=False,
                             help="Checkpoint directory to write (default: FW_MODEL_DIR or var/model)."),
    since: str = typer.Option(None, "--since", help="Kafka source: RFC 3339 start of the normal-operation range."),
    until: str = typer.Option(None, "--until", help="Kafka source: RFC 3339 end of the range (default: now)."),
    bootstrap: str = typer.Option(None, "--bootstrap", "-b", help="Kafka bootstrap HOST:PORT (default FW_KAFKA_BOOTSTRAP)."),
    dataset: Path = typer.Option(None, "--dataset", file_okay=False,
                                 help="Dataset source: directory of featurized windows (from --save-dataset)."),
    calib_fraction: float = typer.Option(0.2, "--calib-fraction", min=0.05, max=0.5,
                                         help="Kafka/dataset sources: the last part of the range (by time) held out "
                                              "to calibrate thresholds, never trained on."),
    save_dataset: Path = typer.Option(None, "--save-dataset", file_okay=False,
                                      help="Also save the training windows here (reuse with --source dataset)."),
    assets: int = typer.Option(None, "--assets", min=1, help="Simulator source: stations to simulate (recipe default)."),
    seed: int = typer.Option(None, "--seed", help="Simulator source: training seed (calibration uses the recipe's other seed)."),
    duration: float = typer.Option(None, "--duration", min=10, help="Simulator source: seconds of normal operation per station."),
    intra_steps: int = typer.Option(None, "--intra-steps", min=0, help="Autoencoder training steps (recipe default)."),
    fusion_steps: int = typer.Option(None, "--fusion-steps", min=0, help="Fusion training steps (recipe default)."),
    detail_steps: int = typer.Option(None, "--detail-steps", min=0, help="Detail autoencoder steps (recipe default)."),
    detail_rows: str = typer.Option(None, "--detail-rows", metavar="R0:R1",
                                    help="Rows of the decoded frame (160x120 for the standard and quick recipes) that "
                                         "show the product — the belt band an inspection camera looks at — scored "
                                         "at full size for small defects; 'none' switches the detail view off. "
                                         "Recipe default: the simulator's belt band, 44:84."),
    device: str = typer.Option("auto", "--device", help="'auto' (CUDA when present), 'cpu' or 'cuda' (bf16 autocast)."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice)."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue an interrupted run from its saved training state (next to --out)."),
    budget: float = typer.Option(1.0, "--budget", min=0.01,
                                 help="False-alarm budget for the thresholds: events per asset per --budget-hours."),
    budget_hours: float = typer.Option(8.0, "--budget-hours", min=0.1, help="Period of the budget (default: an 8 h shift)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    profile: str = typer.Option(None, "--profile", help=_PROFILE_HELP),
) -> None:
    """Train the fusion model on normal operation and save a calibrated checkpoint.

    Unsupervised: only normal data is needed. The checkpoint directory holds config.json,
    model.safetensors, calibration.json and model_card.md; the monitor loads it.

    Examples:

      fusionwatch train                                   # simulator, standard recipe

      fusionwatch train --recipe quick --out var/model

      fusionwatch train --source kafka --since 2026-01-05T06:00:00Z --until 2026-01-05T14:00:00Z

      fusionwatch train --profile callcenter --recipe quick
    """
    from services.profiles import get_profile
    from services.profiles.base import TrainRequest

    get_profile(profile).train(TrainRequest(
        recipe=recipe, source=source, variant=variant, out=out, device=device, threads=threads, progress=progress,
        fusion_steps=fusion_steps, since=since, until=until, bootstrap=bootstrap, dataset=dataset,
        calib_fraction=calib_fraction, save_dataset=save_dataset, assets=assets, seed=seed, duration=duration,
        intra_steps=intra_steps, detail_steps=detail_steps, detail_rows=detail_rows, resume=resume, budget=budget,
        budget_hours=budget_hours))


@app.command()
def calibrate(
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", file_okay=False,
                                    help="The trained model to commission (default: var/model)."),
    source: str = typer.Option("kafka", "--source", help="'kafka': a time range of the input topics; 'dataset': a "
                               "directory saved by `train --save-dataset`."),
    since: str = typer.Option(None, "--since", help="Kafka source: RFC 3339 start of a period of normal operation."),
    until: str = typer.Option(None, "--until", help="Kafka source: RFC 3339 end of the range (default: now)."),
    bootstrap: str = typer.Option(None, "--bootstrap", "-b", help="Kafka bootstrap HOST:PORT (default FW_KAFKA_BOOTSTRAP)."),
    dataset: Path = typer.Option(None, "--dataset", file_okay=False, help="Dataset source: the directory."),
    out: Path = typer.Option(None, "--out", "-o", file_okay=False, help="Where to write the commissioned model "
                             "(default: over --checkpoint; the monitor reloads it on restart)."),
    budget: float = typer.Option(1.0, "--budget", min=0.01, help="False events allowed per asset per --budget-hours."),
    budget_hours: float = typer.Option(8.0, "--budget-hours", min=0.1, help="Period of the budget (default: a shift)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Commission a site: fit a trained model's normal tails and per-station thresholds to a time
    range of this site's normal operation, keeping its trained weights — a forward pass over the
    range, minutes where `train --source kafka` takes a full training. The site's normal log lines
    and codes join the model's memory. Windows inside events reviewers confirmed as real are left out.
    """
    import numpy as np
    import torch
    from rich.console import Console

    from models import checkpoint as ckpt
    from models.data import WindowArrays
    from models.train import component_table, fit_component_stats
    from schemas.errors import ConfigError
    from services.settings import get_settings
    from services.training.card import model_card
    from services.training.factory import kafka_windows, without_confirmed_anomalies
    from services.training.recipes import calibrate_model, jsonable
    from services.training.ui import progress_bars

    settings = get_settings()
    console = Console(stderr=True)
    checkpoint = checkpoint or settings.checkpoint_dir
    model, _, config = ckpt.load(checkpoint, device="cpu")
    with progress_bars(progress, console) as bar:
        if source == "kafka":
            data = kafka_windows(settings, bootstrap, since, until, model.cfg.features, bar)
        elif source == "dataset":
            if dataset is None:
                raise ConfigError("--source dataset needs --dataset DIR")
            data = WindowArrays.load(dataset)
        else:
            raise ConfigError(f"--source must be kafka or dataset, not {source!r}")
    data = without_confirmed_anomalies(settings, data, console)
    if len(data) < 200:
        raise ConfigError(f"only {len(data)} windows in that range: commission on at least a few minutes of normal "
                          "operation per station (an hour or a shift is better)")
    bank = np.concatenate([model.line_bank.numpy(), data.unique_lines()])
    model.line_bank = torch.from_numpy(np.unique(bank, axis=0))
    model.code_vocab = frozenset(model.code_vocab) | data.code_vocab()
    console.print(f"commissioning {checkpoint} on {len(data)} windows of {len(data.assets)} stations …")
    table = component_table(model, data)
    stats = fit_component_stats(model, data, table=table)
    calibration = calibrate_model(model, data, per_asset=True, table=table, budget_events=budget,
                                  budget_hours=budget_hours)
    info = dict(config.get("training", {}))
    info["commissioned"] = {"source": source, "since": since, "until": until, "dataset": str(dataset) if dataset else None,
                            "windows": len(data), "assets": data.assets}
    info["component_stats"] = stats
    info.setdefault("data", {})["calibration"] = {"windows": len(data), "assets": data.assets, "source": source}
    version = ckpt.model_version(model)
    target = out or checkpoint
    ckpt.save(target, model, calibration, card=model_card(version, model, calibration, info),
              extra={"training": jsonable(info)}, version=version)
    console.print(f"[bold green]model {version}[/] → {target}: normal tails and per-station scales of "
                  f"{len(calibration.assets)} stations, threshold {calibration.pooled.threshold:.2f} ({calibration.tail.method}, "
                  f"budget {budget:g} per {budget_hours:g} h). Restart the monitor to use it; each station still "
                  "learns its own baseline when the monitor starts.")


@app.command("eval")
def evaluate_cmd(
    recipe: str = typer.Option("standard", "--recipe", "-r", help=_RECIPE_HELP),
    checkpoint: list[Path] = typer.Option(None, "--checkpoint", "-c", file_okay=False,
                                          help="Evaluate these checkpoint directories (repeatable; each is a row by its "
                                               "fusion variant). Default: train every variant with the recipe, same "
                                               "encoders and budget, under var/eval/RECIPE/."),
    json_path: Path = typer.Option(None, "--json", dir_okay=False, help="Also write the full report (AUROC, AUPRC, events) here."),
    retrain: bool = typer.Option(False, "--retrain", help="Retrain the recipe's models even if var/eval has them."),
    test_seed: int = typer.Option(None, "--test-seed", help="Held-out simulator seed (recipe default; never a training seed)."),
    test_assets: int = typer.Option(None, "--test-assets", min=1, help="Stations in the held-out run (recipe default)."),
    test_duration: float = typer.Option(None, "--test-duration", min=60, help="Seconds of the held-out run (recipe default)."),
    per_asset: bool = typer.Option(False, "--per-asset/--pooled",
                                   help="Per-asset calibration. Off by default: another seed re-draws every station, "
                                        "so per-asset statistics from the validation seed do not transfer."),
    device: str = typer.Option("auto", "--device", help="'auto', 'cpu' or 'cuda'."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    profile: str = typer.Option(None, "--profile", help=_PROFILE_HELP + " The callcenter table: sentiment accuracy "
                                "and macro-F1 per window and per call, and on sarcastic calls, for text-only, "
                                "audio-only, late fusion, concatenation and cross-attention."),
    source: str = typer.Option("sim", "--source", help="Callcenter profile: test calls from 'sim' (the recipe's "
                               "held-out seed) or 'dir:PATH' (labelled call folders, docs/callcenter.md)."),
) -> None:
    """Evaluate every model on a held-out simulator run with every fault kind.

    Prints (and with --json writes) window-level AUROC/AUPRC per fault kind and event-level recall
    and false events per asset-hour at the calibrated threshold, for: each single modality, late
    fusion, concatenation fusion and cross-attention. Thresholds come from normal operation of a
    separate validation seed; nothing is tuned on the test run.
    """
    from services.profiles import get_profile
    from services.profiles.base import EvalRequest

    get_profile(profile).evaluate(EvalRequest(
        recipe=recipe, source=source, json_path=json_path, retrain=retrain, test_seed=test_seed,
        test_duration=test_duration, device=device, threads=threads, progress=progress, checkpoint=list(checkpoint or []),
        test_assets=test_assets, per_asset=per_asset))
