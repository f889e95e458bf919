"""`fusionwatch train` and `fusionwatch eval`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

app = typer.Typer()

_RECIPE_HELP = "Training recipe: 'tiny' (seconds, tests), 'quick' (minutes, what `up` trains), 'standard' (the evaluated one)."
_PROFILE_HELP = ("'factory' (anomalies of frames/audio/logs) or 'callcenter' (customer sentiment and frustration from "
                 "call audio + transcript, trained on labelled simulated calls). Default: FW_PROFILE, else factory.")


def _callcenter(profile: str | None) -> bool:
    from services.settings import get_settings

    return (profile or get_settings().profile) == "callcenter"


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
    if _callcenter(profile):  # supervised sentiment/frustration recipe: services/training/callcenter.py
        from services.training.callcenter import train_command

        train_command(recipe, out, variant, source, device, threads, progress, fusion_steps)
        return
    import torch
    from rich.console import Console

    from models.data import WindowArrays
    from models.scorer import pick_device
    from schemas.errors import ConfigError
    from services.settings import get_settings
    from services.training.recipes import get_recipe, run_recipe, spec_with
    from services.training.ui import progress_bars

    settings = get_settings()
    console = Console(stderr=True)
    r = get_recipe(recipe)
    if variant not in ("cross", "concat", "late"):
        raise ConfigError(f"--variant must be cross, concat or late, not {variant!r}")
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    out = out or settings.checkpoint_dir
    cache = settings.var_dir / "datasets"
    overrides = {"intra_steps": intra_steps, "fusion_steps": fusion_steps, "detail_steps": detail_steps, "bf16": True}
    if detail_rows is not None:
        r = dataclasses.replace(r, model={**r.model, "detail_rows": _rows(detail_rows)})
        try:
            r.model_config(variant)  # checks the rows against the frame size now
        except ValueError as e:
            raise ConfigError(f"--detail-rows: {e}") from None
    train_data = calib_data = None
    per_asset = None
    src: dict = {"source": source}
    features = r.model_config(variant).features
    with progress_bars(progress, console) as bar:
        if source == "sim":
            r = r.__class__(**{**r.__dict__, "train": spec_with(r.train, assets=assets, seed=seed, duration_s=duration)})
            src.update(train=r.train.__dict__, calib=r.calib.__dict__)
        elif source in ("kafka", "dataset"):
            if source == "kafka":
                data = _kafka_windows(settings, bootstrap, since, until, features, bar)
                src.update(since=since, until=until)
            else:
                if dataset is None:
                    raise ConfigError("--source dataset needs --dataset DIR")
                data = WindowArrays.load(dataset)
                src.update(dataset=str(dataset))
            data = _without_confirmed_anomalies(settings, data, console)
            train_data, calib_data = _time_split(data, calib_fraction)
            per_asset = True  # same plant: per-asset statistics transfer
            if save_dataset:
                data.save(save_dataset)
        else:
            raise ConfigError(f"--source must be sim, kafka or dataset, not {source!r}")
        result = run_recipe(r, out, variant, cache_dir=cache, progress=bar, device=dev, resume=resume,
                            train_data=train_data, calib_data=calib_data, overrides=overrides, source=src,
                            per_asset=per_asset, budget_events=budget, budget_hours=budget_hours)
        if save_dataset and source == "sim":
            from services.training.dataset import simulate_dataset

            simulate_dataset(r.train, features, cache_dir=cache).save(save_dataset)
    cal = result.calibration
    console.print(f"[bold green]model {result.info['version']}[/] → {out}\n"
                  f"  trained {result.info['train_seconds']:.0f} s ({result.info['steps']} steps, {dev}), "
                  f"threshold {cal.pooled.threshold:.2f} ({cal.tail.method}, budget {budget:g} per {budget_hours:g} h)")


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
    from services.training.recipes import _jsonable, calibrate_model
    from services.training.ui import progress_bars

    settings = get_settings()
    console = Console(stderr=True)
    checkpoint = checkpoint or settings.checkpoint_dir
    model, _, config = ckpt.load(checkpoint, device="cpu")
    with progress_bars(progress, console) as bar:
        if source == "kafka":
            data = _kafka_windows(settings, bootstrap, since, until, model.cfg.features, bar)
        elif source == "dataset":
            if dataset is None:
                raise ConfigError("--source dataset needs --dataset DIR")
            data = WindowArrays.load(dataset)
        else:
            raise ConfigError(f"--source must be kafka or dataset, not {source!r}")
    data = _without_confirmed_anomalies(settings, data, console)
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
              extra={"training": _jsonable(info)}, version=version)
    console.print(f"[bold green]model {version}[/] → {target}: normal tails and per-station scales of "
                  f"{len(calibration.assets)} stations, threshold {calibration.pooled.threshold:.2f} ({calibration.tail.method}, "
                  f"budget {budget:g} per {budget_hours:g} h). Restart the monitor to use it; each station still "
                  "learns its own baseline when the monitor starts.")


def _rows(text: str) -> tuple[int, int] | None:
    """'44:84' -> (44, 84); 'none' -> None."""
    from schemas.errors import ConfigError

    if text.strip().lower() == "none":
        return None
    try:
        r0, r1 = (int(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"--detail-rows must be R0:R1 (e.g. 44:84) or none, not {text!r}") from None
    return (r0, r1)


def _kafka_windows(settings, bootstrap, since, until, features, bar):
    import time

    from schemas.envelope import parse_time
    from schemas.errors import ConfigError
    from services.training.dataset import kafka_dataset

    bootstrap = bootstrap or settings.kafka.bootstrap
    if not bootstrap:
        raise ConfigError("--source kafka needs a broker: pass --bootstrap HOST:PORT or set FW_KAFKA_BOOTSTRAP")
    if not since:
        raise ConfigError("--source kafka needs --since (RFC 3339 start of a period of normal operation)")
    try:
        start = parse_time(since)
        end = parse_time(until) if until else time.time()
    except ValueError as e:
        raise ConfigError(f"--since/--until: {e}") from None

    def p(done, total):
        if bar:
            bar("read kafka", done, total, {})

    return kafka_dataset(settings, bootstrap, start, end, features, progress=p)


def _without_confirmed_anomalies(settings, data, console):
    """Leave out the windows inside events reviewers confirmed as real (their verdicts in SQL)."""
    from sqlalchemy.exc import OperationalError

    from services import db
    from services.api.recalibration import labelled_windows
    from services.training.dataset import exclude_confirmed

    try:
        engine = db.make_engine(settings.database.url)
        with db.session_factory(engine)() as session:
            confirmed = [(lw.asset, lw.start.timestamp(), lw.end.timestamp())
                         for lw in labelled_windows(session) if lw.verdict == "real"]
    except OperationalError as e:
        console.print(f"[yellow]verdicts not read ({str(e.orig).splitlines()[0][:120]}): "
                      "confirmed anomalies, if any, stay in the training data[/]")
        return data
    data, dropped = exclude_confirmed(data, confirmed)
    if confirmed:
        console.print(f"left out {dropped} windows inside {len(confirmed)} confirmed anomalies (review verdicts)")
    return data


def _time_split(data, fraction: float):
    """Per asset, the last `fraction` of its windows (by time) is held out for calibration."""
    import numpy as np

    from schemas.errors import ConfigError

    calib = np.zeros(len(data), bool)
    for a in range(len(data.assets)):
        idx = np.flatnonzero(data.asset_idx == a)
        idx = idx[np.argsort(data.start[idx])]
        k = int(round(len(idx) * fraction))
        calib[idx[len(idx) - k:]] = True
    if calib.sum() < 50 or (~calib).sum() < 100:
        raise ConfigError(f"only {len(data)} windows: train on at least a few minutes of normal operation per asset")
    return data.subset(np.flatnonzero(~calib)), data.subset(np.flatnonzero(calib))


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
    if _callcenter(profile):  # services/training/callcenter.py: trains/reuses its rows under var/eval
        from services.training.callcenter import eval_command

        if checkpoint or per_asset or test_assets:
            from schemas.errors import ConfigError

            raise ConfigError("--checkpoint, --per-asset and --test-assets apply to the factory profile; the "
                              "call-centre evaluation trains its own rows (use --retrain to redo them)")
        eval_command(recipe, json_path, retrain, test_seed, test_duration, None, device, threads, progress, source)
        return
    import torch
    from rich.console import Console

    from models import checkpoint as ckpt
    from models.scorer import pick_device
    from schemas.errors import ConfigError
    from services.settings import get_settings
    from services.training.dataset import simulate_dataset
    from services.training.evaluate import evaluate, render
    from services.training.recipes import get_recipe, load_datasets, spec_with, train_variants
    from services.training.ui import progress_bars

    settings = get_settings()
    console = Console(stderr=True)
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    r = get_recipe(recipe)
    test_spec = spec_with(r.test, seed=test_seed, assets=test_assets, duration_s=test_duration)
    if test_spec.seed in (r.train.seed, r.calib.seed):
        raise ConfigError(f"--test-seed {test_spec.seed} is a training or calibration seed of recipe {r.name}; "
                          "evaluate on a held-out seed")
    cache = settings.var_dir / "datasets"
    with progress_bars(progress, console) as bar:
        if checkpoint:
            paths = {}
            for p in checkpoint:
                model, _, _ = ckpt.load(p, device=dev)
                paths[model.cfg.fusion] = p
        else:
            paths = train_variants(r, ("late", "concat", "cross"), settings.var_dir / "eval" / r.name, cache_dir=cache,
                                   progress=bar, device=dev, reuse=not retrain)
        models = {v: ckpt.load(p, device=dev)[0] for v, p in paths.items()}
        features = next(iter(models.values())).cfg.features
        calib = load_datasets(r, features, cache, bar, which=("calib",))["calib"]

        def pt(done, total):
            if bar:
                bar("simulate test", done, total, {})

        test = simulate_dataset(test_spec, features, cache_dir=cache, progress=pt)
        if bar:
            bar("score", 0, 1, {})
        report = evaluate(models, calib, test, per_asset=per_asset, device=dev)
        if bar:
            bar("score", 1, 1, {})
    report.notes.append(f"models: {', '.join(f'{v}={p}' for v, p in paths.items())}")
    Console(width=max(160, Console().width)).print(render(report))
    if json_path:
        report.save(json_path)
        console.print(f"report written to {json_path}")
    _append_metrics_to_cards(report, paths)


def _append_metrics_to_cards(report, paths) -> None:
    """Put the measured table into each evaluated checkpoint's model card."""
    import numpy as np

    rows = {r.name: r for r in report.rows}
    header = "| fault kind | " + " | ".join(rows) + " |\n|---|" + "---|" * len(rows) + "\n"
    body = "".join(f"| {k}{' (cross-modal)' if k in report.cross_modal_kinds else ''} | "
                   + " | ".join(f"{r.auroc.get(k, float('nan')):.3f}" for r in rows.values()) + " |\n" for k in report.kinds)
    body += "| **mean AUROC** | " + " | ".join(f"{np.nanmean(list(r.auroc.values())):.3f}" for r in rows.values()) + " |\n"
    body += "| event recall | " + " | ".join(f"{r.recall:.3f}" for r in rows.values()) + " |\n"
    body += "| false events / asset-h | " + " | ".join(f"{r.false_per_asset_hour:.2f}" for r in rows.values()) + " |\n"
    text = (f"Held-out simulator run: seed {report.test.get('seed')}, {report.test.get('assets')} stations x "
            f"{report.test.get('duration_s')} s, every fault kind; thresholds from seed "
            f"{report.calibration_data.get('seed')} (normal). Window AUROC:\n\n" + header + body)
    for p in paths.values():
        card = Path(p) / "model_card.md"
        if card.exists():
            old = card.read_text()
            marker = "## Metrics\n"
            if marker in old:
                head, _, tail = old.partition(marker)
                rest = tail.split("\n## ", 1)
                card.write_text(head + marker + text + ("\n## " + rest[1] if len(rest) > 1 else ""))
