"""The factory profile's `fusionwatch train` and `fusionwatch eval` (services/profiles/factory.py).

Unsupervised: a model of normal operation from the simulator, a time range of the input topics or
a saved dataset; evaluated on a held-out simulator run with every fault kind against the single-
modality, late and concatenation baselines. `fusionwatch calibrate` shares the Kafka reading.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast, get_args

from services.profiles.base import EvalRequest, TrainRequest


def train_command(req: TrainRequest) -> None:
    """Train the fusion model on normal operation and save a calibrated checkpoint."""
    import torch
    from rich.console import Console

    from models.data import WindowArrays
    from models.fusion import FusionVariant
    from models.scorer import pick_device
    from schemas.errors import ConfigError
    from services.settings import get_settings
    from services.training.recipes import get_recipe, run_recipe, spec_with
    from services.training.ui import progress_bars

    recipe, source, out, device, threads, progress = req.recipe, req.source, req.out, req.device, req.threads, req.progress
    since, until, bootstrap, dataset, save_dataset = req.since, req.until, req.bootstrap, req.dataset, req.save_dataset
    budget, budget_hours, detail_rows = req.budget, req.budget_hours, req.detail_rows
    settings = get_settings()
    console = Console(stderr=True)
    r = get_recipe(recipe)
    if req.variant not in get_args(FusionVariant):
        raise ConfigError(f"--variant must be cross, concat or late, not {req.variant!r}")
    variant = cast(FusionVariant, req.variant)
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    out = out or settings.checkpoint_dir
    cache = settings.var_dir / "datasets"
    overrides = {"intra_steps": req.intra_steps, "fusion_steps": req.fusion_steps, "detail_steps": req.detail_steps,
                 "bf16": True}
    if detail_rows is not None:
        r = dataclasses.replace(r, model={**r.model, "detail_rows": detail_rows_option(detail_rows)})
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
            r = r.__class__(**{**r.__dict__, "train": spec_with(r.train, assets=req.assets, seed=req.seed,
                                                                 duration_s=req.duration)})
            src.update(train=r.train.__dict__, calib=r.calib.__dict__)
        elif source in ("kafka", "dataset"):
            if source == "kafka":
                data = kafka_windows(settings, bootstrap, since, until, features, bar)
                src.update(since=since, until=until)
            else:
                if dataset is None:
                    raise ConfigError("--source dataset needs --dataset DIR")
                data = WindowArrays.load(dataset)
                src.update(dataset=str(dataset))
            data = without_confirmed_anomalies(settings, data, console)
            train_data, calib_data = time_split(data, req.calib_fraction)
            per_asset = True  # same plant: per-asset statistics transfer
            if save_dataset:
                data.save(save_dataset)
        else:
            raise ConfigError(f"--source must be sim, kafka or dataset, not {source!r}")
        result = run_recipe(r, out, variant, cache_dir=cache, progress=bar, device=dev, resume=req.resume,
                            train_data=train_data, calib_data=calib_data, overrides=overrides, source=src,
                            per_asset=per_asset, budget_events=budget, budget_hours=budget_hours)
        if save_dataset and source == "sim":
            from services.training.dataset import simulate_dataset

            simulate_dataset(r.train, features, cache_dir=cache).save(save_dataset)
    cal = result.calibration
    console.print(f"[bold green]model {result.info['version']}[/] → {out}\n"
                  f"  trained {result.info['train_seconds']:.0f} s ({result.info['steps']} steps, {dev}), "
                  f"threshold {cal.pooled.threshold:.2f} ({cal.tail.method}, budget {budget:g} per {budget_hours:g} h)")




def eval_command(req: EvalRequest) -> None:
    """Evaluate every model on a held-out simulator run with every fault kind."""
    import torch
    from rich.console import Console

    from models import checkpoint as ckpt
    from models.fusion import FusionModel
    from models.scorer import pick_device
    from schemas.errors import ConfigError
    from services.settings import get_settings
    from services.training.dataset import simulate_dataset
    from services.training.evaluate import evaluate, render
    from services.training.recipes import get_recipe, load_datasets, spec_with, train_variants
    from services.training.ui import progress_bars

    recipe, json_path, retrain, device, threads, progress = (req.recipe, req.json_path, req.retrain, req.device,
                                                             req.threads, req.progress)
    checkpoint, per_asset = req.checkpoint, req.per_asset
    settings = get_settings()
    console = Console(stderr=True)
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    r = get_recipe(recipe)
    test_spec = spec_with(r.test, seed=req.test_seed, assets=req.test_assets, duration_s=req.test_duration)
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
        models: dict[str, FusionModel] = {v: ckpt.load(p, device=dev)[0] for v, p in paths.items()}
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
    append_metrics_to_cards(report, paths)



def detail_rows_option(text: str) -> tuple[int, int] | None:
    """'44:84' -> (44, 84); 'none' -> None."""
    from schemas.errors import ConfigError

    if text.strip().lower() == "none":
        return None
    try:
        r0, r1 = (int(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"--detail-rows must be R0:R1 (e.g. 44:84) or none, not {text!r}") from None
    return (r0, r1)


def kafka_windows(settings, bootstrap, since, until, features, bar):
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


def without_confirmed_anomalies(settings, data, console):
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


def time_split(data, fraction: float):
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


def append_metrics_to_cards(report, paths) -> None:
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
