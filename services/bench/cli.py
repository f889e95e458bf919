"""`fusionwatch bench model|decode|pipeline`: the benchmark commands.

Registered under the main CLI (services/cli.py) and also runnable alone as
`python -m services.bench …`, which imports nothing but this package, torch and `models` — the
way to run `bench model` on a GPU box that lacks the service dependencies (pydantic-settings,
kafka-python, SQLAlchemy, PyAV). Heavy imports stay inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()
bench_app = typer.Typer(
    help="Benchmarks with a naive baseline run in the same process; JSON (--json) plus a table. "
         "Figures carry the machine and its load average: prefer the ratios on a shared box.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


def _progress():
    """A rich status line for long runs; returns (callback, context manager)."""
    from rich.console import Console

    console = Console(stderr=True)
    status = console.status("starting…")

    def step(msg: str) -> None:
        status.update(f"[bold]bench[/] {msg}")

    return step, status


def _out(result, json_path: Path | None, columns=None) -> None:
    from services.bench.report import render

    render(result, columns)
    if json_path:
        path = result.write(json_path)
        typer.echo(f"wrote {path}", err=True)


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated integers, e.g. 1,8,64") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{what} must be positive integers")
    return values


@bench_app.command("model")
def model_cmd(
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N. CUDA fails clearly when torch sees no GPU."),
    dtype: str = typer.Option("fp32", help="fp32, bf16 (autocast; CUDA, or CPU with native bf16) or 'fp32,bf16' for both."),
    batch_sizes: str = typer.Option(None, "--batch-sizes", help="Comma-separated batch sizes "
                                    "(default: 1,8,32,64,128 on CPU; 1,64,256,1024,4096,8192 on CUDA)."),
    compile_: str = typer.Option("eager", "--compile", help="eager, compile (torch.compile) or both. "
                                 "A compile that fails is reported as a note, not an error."),
    compile_mode: str = typer.Option("default", help="torch.compile mode on CUDA (default, reduce-overhead, "
                                     "max-autotune: autotuning takes minutes); CPU uses default."),
    compile_top: int = typer.Option(1, help="Compile at this many of the best eager batch sizes (one compile each)."),
    layouts: str = typer.Option("nchw", help="Convolution memory layouts: nchw, channels_last or both "
                                "('nchw,channels_last'; NHWC suits tensor cores)."),
    checkpoint: Path = typer.Option(None, help="Model checkpoint directory. Without it a random-init model of "
                                    "the standard recipe's config is timed (same cost; no training needed)."),
    tiny: bool = typer.Option(False, help="Use the tiny test config instead of the default (smoke runs)."),
    text: str = typer.Option("random", help="Log-line embeddings fed to the model: 'random' (cached random unit "
                             "vectors, no MiniLM weights needed) or 'minilm' (embed simulated PLC lines once)."),
    line_bank: int = typer.Option(256, help="Normal-line memory bank size for a random-init model "
                                  "(a trained checkpoint brings its own)."),
    min_time: float = typer.Option(2.0, help="Seconds measured per case (after warm-up)."),
    threads: int = typer.Option(None, help="torch intra-op threads on CPU (default: torch's choice)."),
    peak_tflops: float = typer.Option(None, "--peak-tflops", help="Peak dense TFLOP/s of the device for the "
                                      "fraction-of-peak column (default: a table for known GPUs; CPU measures a matmul)."),
    baseline: bool = typer.Option(True, help="Also time the naive baseline (one window per forward pass)."),
    json_path: Path = typer.Option(None, "--json", help="Write the full result as JSON here."),
) -> None:
    """Fusion-model throughput (windows/s) and latency by batch size, device, dtype and compile mode.

    Also reports FLOPs per window (torch's FlopCounterMode) and the fraction of the device's peak,
    against the naive baseline of one window per forward pass. Runs standalone on a GPU box:
    `python -m services.bench model --device cuda --dtype bf16 --json out.json`.
    """
    from services.bench.model import ModelBenchConfig, run_model_bench

    dtypes = [d.strip() for d in dtype.split(",") if d.strip()]
    compiles = {"eager": [False], "compile": [True], "both": [False, True]}.get(compile_)
    if compiles is None:
        raise typer.BadParameter("--compile must be eager, compile or both")
    cfg = ModelBenchConfig(
        device=device, dtypes=dtypes, batch_sizes=_ints(batch_sizes, "--batch-sizes") if batch_sizes else None,
        compile=compiles, compile_mode=compile_mode, compile_top=compile_top,
        layouts=[x.strip() for x in layouts.split(",") if x.strip()], checkpoint=checkpoint, tiny=tiny, text=text,
        line_bank=line_bank, min_time_s=min_time, threads=threads, peak_tflops=peak_tflops, baseline=baseline)
    step, status = _progress()
    with status:
        result = run_model_bench(cfg, step)
    _out(result, json_path)


@bench_app.command("decode")
def decode_cmd(
    sizes: str = typer.Option("320x240,1280x720", help="Camera frame sizes to decode, WxH comma-separated."),
    frames: int = typer.Option(40, help="Distinct simulated frames per size."),
    text: bool = typer.Option(True, help="Include the MiniLM text-embedding case (needs its weights)."),
    min_time: float = typer.Option(1.0, help="Seconds measured per case."),
    threads: int = typer.Option(None, help="torch intra-op threads (log-mel, MiniLM); default torch's choice."),
    json_path: Path = typer.Option(None, "--json", help="Write the full result as JSON here."),
) -> None:
    """Media decoding and feature extraction: full JPEG decode + resize vs draft decode, WAV decode,
    log-mel per window vs batched, text embeddings without vs with the line cache, the frame memo's
    key (SHA-256 vs XXH3-128)."""
    from services.bench.decode import DecodeBenchConfig, run_decode_bench

    try:
        frame_sizes = [tuple(int(v) for v in s.lower().split("x")) for s in sizes.split(",") if s.strip()]
        assert all(len(s) == 2 and min(s) >= 8 for s in frame_sizes)
    except (ValueError, AssertionError):
        raise typer.BadParameter("--sizes must look like 320x240,1280x720") from None
    cfg = DecodeBenchConfig(frame_sizes=frame_sizes, frames=frames, text=text, min_time_s=min_time, threads=threads)
    step, status = _progress()
    with status:
        result = run_decode_bench(cfg, step)
    _out(result, json_path)


@bench_app.command("pipeline")
def pipeline_cmd(
    assets: str = typer.Option("16", help="Simulated factory assets for the real-time run(s), comma-separated "
                               "(each: 4 fps 320x240 JPEG frames, 16 kHz audio, PLC logs)."),
    duration: float = typer.Option(60.0, help="Seconds of real time per real-time run."),
    warmup: float = typer.Option(10.0, help="Seconds at the start of a real-time run left out of its figures "
                                 "(at most a third of --duration)."),
    backlog: float = typer.Option(60.0, help="Seconds of plant time per asset for the capacity (backlog drain) "
                                  "runs, optimised vs naive; 0 skips them."),
    backlog_assets: int = typer.Option(16, help="Assets in the capacity runs."),
    repeats: int = typer.Option(1, help="Capacity runs per mode, interleaved (optimised, naive, optimised, …); "
                                "ratios are the median over neighbouring pairs. Use 3+ on a shared or "
                                "throttled machine, whose speed drifts by tens of percent within a minute."),
    modes: str = typer.Option("optimised,naive", help="Which monitor modes to run: optimised, naive or both."),
    realtime_modes: str = typer.Option(None, help="Modes of the real-time runs (default: --modes; 'none' skips them)."),
    search: bool = typer.Option(False, help="Search for the largest number of assets one monitor sustains in "
                                "real time (lag bounded, p95 decision latency within --p95-budget)."),
    search_max: int = typer.Option(64, help="Upper bound of the search."),
    p95_budget: float = typer.Option(1.0, help="Decision-latency budget for 'sustained' (seconds, window close → committed)."),
    processes: int = typer.Option(1, help="Monitor processes in one consumer group (the scale-out figure)."),
    partitions: int = typer.Option(8, help="Partitions of every input topic."),
    checkpoint: Path = typer.Option(None, help="Model checkpoint (default: FW_MODEL_DIR or var/model). Train one "
                                    "with `fusionwatch train`, or pass --random-init."),
    random_init: bool = typer.Option(False, help="Score with a random-init model of the standard recipe's config (same "
                                     "cost as a trained one; its events mean nothing)."),
    tiny: bool = typer.Option(False, help="With --random-init: the tiny test config (smoke runs)."),
    threads: int = typer.Option(None, help="torch intra-op threads in each monitor process (default: torch's choice)."),
    device: str = typer.Option("cpu", help="Where each monitor scores: cpu, cuda (bf16 autocast) or auto. With cuda, "
                               "several --processes share the GPU: the figure for one GPU server."),
    bootstrap: str = typer.Option(None, help="Use this Kafka cluster instead of starting an embedded broker."),
    json_path: Path = typer.Option(None, "--json", help="Write the full result (with lag time series) as JSON here."),
) -> None:
    """The whole path: simulated producers → broker → monitor → SQLite, in real time and as a backlog.

    Reports sustained windows/s, consumer lag over time, decision latency p50/p95/p99 (window close →
    committed), the monitor's CPU and resident memory; the capacity of the optimised monitor vs the
    naive one (one window per batch and per transaction, full decode, no text cache, no overlap),
    per CPU-second; with --search, the largest asset count sustained in real time.
    """
    from services.bench.pipeline import PipelineBenchConfig, run_pipeline_bench

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if not set(mode_list) <= {"optimised", "naive"} or not mode_list:
        raise typer.BadParameter("--modes takes optimised and/or naive")
    rt_modes = None
    if realtime_modes is not None:
        rt_modes = [m.strip() for m in realtime_modes.split(",") if m.strip() and m.strip() != "none"]
        if not set(rt_modes) <= {"optimised", "naive"}:
            raise typer.BadParameter("--realtime-modes takes optimised, naive or none")
    cfg = PipelineBenchConfig(
        assets=_ints(assets, "--assets"), duration_s=duration, warmup_s=warmup, backlog_s=backlog, backlog_assets=backlog_assets,
        capacity_repeats=repeats, modes=mode_list, realtime_modes=rt_modes, search=search, search_max=search_max,
        p95_budget_s=p95_budget, processes=processes,
        partitions=partitions, checkpoint=checkpoint, random_init=random_init, tiny=tiny, threads=threads,
        device=device, bootstrap=bootstrap)
    step, status = _progress()
    with status:
        result = run_pipeline_bench(cfg, step)
    _out(result, json_path, columns=["run", "mode", "repeat", "processes", "assets", "windows", "windows/s", "windows/cpu-s",
                                     "cpu ms/window", "model ms/window", "cpu cores", "rss MiB", "p50 s", "p95 s",
                                     "p99 s", "max lag s", "sustained", "late", "windows by process"])
