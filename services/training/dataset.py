"""Training and evaluation data: decoded, aligned, featurized windows, cached under var/.

Where it sits: the first hop of `fusionwatch train` / `fusionwatch eval`. Three sources, one path:

- the plant simulator in-process (`simulate_dataset`): `Plant.records` -> the monitor's own
  `offline_windows` aligner -> `Featurizer` -> `WindowArrays`, with per-window ground truth;
- a time range of the Kafka input topics (`kafka_dataset`): every partition is read from the
  beginning up to the high watermark, records inside the range are kept, sorted by event time and
  fed to the same aligner;
- a dataset directory saved earlier (`WindowArrays.load`).

Decoding, alignment and featurization are the slow part (JPEG decode, log-mel, MiniLM), so
simulator datasets are cached by a key of everything that defines them; repeated training and
evaluation runs load the arrays in seconds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from models.data import WindowArrays
from models.features import FeatureConfig, Featurizer
from models.inputs import WindowInputs
from schemas.envelope import DecodeOptions, Kind, WireRecord
from schemas.errors import ConfigError, FusionwatchError

log = logging.getLogger(__name__)

DATASET_VERSION = 7  # bump when featurization, labelling or the simulator changes, so stale caches are rebuilt
# A fixed, reproducible default start: 2026-01-05 08:00 UTC (inside a day shift).
DEFAULT_START = 1767600000.0
# Runs that span the day start at the morning handover, 2026-01-05 06:00 UTC: with 3, 6, 12 or 24
# slices, every handover (06:00, 14:00, 22:00) falls in the middle of one
DAY_START = 1767592800.0
DAY_S = 86400.0
ProgressFn = Callable[[float, float], None]  # (done, total) in asset-seconds


@dataclass(frozen=True)
class SimSpec:
    """Everything that defines a simulated dataset (and its cache key)."""

    assets: int = 4
    seed: int = 0
    duration_s: float = 600.0
    faults: str = "none"
    start_time: float = DEFAULT_START
    window_s: float = 2.0
    hop_s: float = 1.0
    # > 1: the duration is cut into this many slices spread evenly over the 24 hours from
    # `start_time` (slice k centred on start_time + k * 24 h / day_slices): normal is a day —
    # every shift's light, the handovers, the lens dirt of a shift — not one morning's minutes
    day_slices: int = 1
    # faults only after this long into the (first) slice: an evaluation run lets each station learn
    # its baseline first (models/adaptation.py) — a fault while it learns is a different question
    lead_in_s: float = 0.0

    def slices(self) -> list[tuple[float, float]]:
        """(start, duration) of each slice of the run."""
        if self.day_slices <= 1:
            return [(self.start_time, self.duration_s)]
        d = self.duration_s / self.day_slices
        return [(self.start_time + k * DAY_S / self.day_slices - d / 2, d) for k in range(self.day_slices)]

    def key(self, features: FeatureConfig) -> str:
        blob = json.dumps({"spec": self.__dict__, "features": features.to_dict(), "v": DATASET_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def name(self, features: FeatureConfig) -> str:
        return f"sim-a{self.assets}-s{self.seed}-{int(self.duration_s)}s-{self.faults}-{self.key(features)}"


def featurize_stream(windows: Iterable[WindowInputs], features: FeatureConfig, featurizer: Featurizer | None = None,
                     chunk: int = 64) -> Iterator:
    """WindowInputs -> WindowFeatures, batching the text encoder over `chunk` windows."""
    featurizer = featurizer or Featurizer(features)
    buf: list[WindowInputs] = []
    for w in windows:
        buf.append(w)
        if len(buf) >= chunk:
            yield from featurizer.featurize_many(buf)
            buf = []
    if buf:
        yield from featurizer.featurize_many(buf)


def windows_from_records(records: Iterable[tuple[Kind, WireRecord]], features: FeatureConfig,
                         hop_s: float = 1.0) -> Iterator[WindowInputs]:
    from streamlogic.windows import offline_windows

    options = DecodeOptions(frame_size=features.frame_size, sample_rate=features.sample_rate)
    return offline_windows(records, window_s=features.window_s, hop_s=hop_s, options=options, whole_only=True)


def simulate_dataset(spec: SimSpec, features: FeatureConfig = FeatureConfig(), cache_dir: Path | None = None,
                     progress: ProgressFn | None = None, featurizer: Featurizer | None = None) -> WindowArrays:
    """Run the plant simulator and return its featurized windows with ground-truth labels."""
    from services.simulator.plant import FAULT_KINDS, Plant

    if abs(spec.window_s - features.window_s) > 1e-9:
        raise ConfigError(f"dataset window {spec.window_s} s differs from the model's {features.window_s} s")
    path = cache_dir / spec.name(features) if cache_dir else None
    if path is not None and (path / "meta.json").exists():
        log.info("dataset cache hit: %s", path)
        return WindowArrays.load(path)
    t0 = time.perf_counter()
    plants = [Plant(spec.assets, seed=spec.seed, start_time=t0, faults=_faults(spec, t0, d, k))
              for k, (t0, d) in enumerate(spec.slices())]
    total = spec.duration_s * spec.assets
    done = [0.0]

    def records(plant, duration_s: float) -> Iterator[tuple[Kind, WireRecord]]:
        step, left = 10.0, duration_s
        while left > 1e-9:
            d = min(step, left)
            yield from plant.records(d)
            left -= d
            done[0] += d * spec.assets
            if progress:
                progress(done[0], total)

    # each slice aligned on its own: its edge windows are dropped, and no window spans a gap
    windows = itertools.chain.from_iterable(windows_from_records(records(p, d), features, spec.hop_s)
                                            for p, (_, d) in zip(plants, spec.slices()))
    feats = featurize_stream(windows, features, featurizer)
    kinds = list(FAULT_KINDS)
    truth = [f for p in plants for f in p.ground_truth]
    meta = {"source": "simulator", "spec": spec.__dict__, "fault_kinds": kinds,
            "ground_truth": [f.to_json() for f in truth]}
    data = WindowArrays.from_features(feats, features, meta)
    data.labels.update(window_labels(data, truth, kinds))
    data.meta["build_seconds"] = round(time.perf_counter() - t0, 1)
    if path is not None:
        data.save(path)
        log.info("dataset saved: %s (%d windows, %.0f s)", path, len(data), data.meta["build_seconds"])
    return data


def _faults(spec: SimSpec, start: float, duration_s: float, slice_no: int):
    from services.simulator.faults import fault_schedule

    if spec.faults == "none":
        return []
    from services.simulator.plant import asset_names

    seed = spec.seed if spec.day_slices <= 1 else spec.seed * 1000 + slice_no  # each slice its own draw
    lead = min(spec.lead_in_s, duration_s) if slice_no == 0 else 0.0  # a station learns its baseline once
    return fault_schedule(spec.faults, asset_names(spec.assets), start + lead, duration_s - lead, seed)


def window_labels(data: WindowArrays, faults, kinds: list[str]) -> dict[str, np.ndarray]:
    """Per window: the overlapping fault's kind index (-1 none) and the overlap in seconds."""
    n = len(data)
    kind = np.full(n, -1, np.int16)
    overlap = np.zeros(n, np.float32)
    w = data.features.window_s
    by_asset: dict[str, list] = {}
    for f in faults:
        by_asset.setdefault(f.asset, []).append(f)
    for i in range(n):
        asset = data.assets[data.asset_idx[i]]
        s = data.start[i]
        for f in by_asset.get(asset, ()):
            ov = min(s + w, f.end) - max(s, f.start)
            if ov > overlap[i]:
                overlap[i], kind[i] = ov, kinds.index(f.kind)
    return {"fault_kind": kind, "fault_overlap": overlap}


def dataset_from_records(records: Iterable[tuple[Kind, WireRecord]], features: FeatureConfig, hop_s: float = 1.0,
                         meta: dict | None = None) -> WindowArrays:
    feats = featurize_stream(windows_from_records(records, features, hop_s), features)
    return WindowArrays.from_features(feats, features, meta or {})


def kafka_dataset(settings, bootstrap: str, start: float, end: float, features: FeatureConfig,
                  progress: ProgressFn | None = None, poll_timeout_s: float = 5.0) -> WindowArrays:
    """Windows from the input topics for event times in [start, end).

    Reads every partition of the three input topics from the beginning to its high watermark
    (time-based offset lookup is not reliable on every broker, see README.md, "The embedded broker and its limits"), keeps the records
    inside the range, orders them by event time and aligns them like the monitor does. Holds the
    range's records in memory: ask for a few hours at most.
    """
    from kafka import TopicPartition

    from schemas.envelope import parse_time
    from services.kafka import Topics, make_consumer

    if end <= start:
        raise ConfigError("the training time range is empty: --until must be after --since")
    topics = Topics.from_settings(settings.kafka)
    consumer = make_consumer(settings.kafka, bootstrap, group_id=None, enable_auto_commit=False)
    kept: list[tuple[float, int, Kind, WireRecord]] = []
    try:
        parts = []
        for kind, name in zip((Kind.FRAME, Kind.AUDIO, Kind.LOG), topics.inputs):
            ids = consumer.partitions_for_topic(name)
            if not ids:
                raise FusionwatchError(f"topic {name} does not exist on {bootstrap}; nothing to train on")
            parts += [(TopicPartition(name, p), kind) for p in sorted(ids)]
        consumer.assign([tp for tp, _ in parts])
        consumer.seek_to_beginning()
        kind_of = {tp.topic: k for tp, k in parts}
        done: set = set()
        idle_since = time.monotonic()
        n = 0
        while len(done) < len(parts):
            batch = consumer.poll(timeout_ms=500, max_records=5000)
            if not batch:
                if time.monotonic() - idle_since > poll_timeout_s:
                    break  # nothing more arrives; the high watermark may be stale on idle partitions
                continue
            idle_since = time.monotonic()
            for tp, recs in batch.items():
                for r in recs:
                    t = _header_time(r.headers, parse_time)
                    if t is not None and start <= t < end:
                        kept.append((t, n, kind_of[tp.topic], WireRecord(r.key or b"", r.value or b"", list(r.headers or []))))
                        n += 1
                hw = consumer.highwater(tp)
                if hw is not None and consumer.position(tp) >= hw:
                    done.add(tp)
            if progress:
                progress(len(done), len(parts))
    finally:
        consumer.close()
    if not kept:
        raise FusionwatchError(f"no input records with event time in the requested range on {bootstrap}")
    kept.sort(key=lambda x: (x[0], x[1]))
    return dataset_from_records(((k, r) for _, _, k, r in kept), features,
                                meta={"source": "kafka", "bootstrap": bootstrap, "start": start, "end": end,
                                      "records": len(kept)})


def exclude_confirmed(data: WindowArrays, anomalies: Iterable[tuple[str, float, float]],
                      margin_s: float = 5.0) -> tuple[WindowArrays, int]:
    """`data` without the windows inside confirmed anomalies (asset, start, end in epoch seconds,
    widened by `margin_s`): a fault a reviewer confirmed is not normal operation to learn from.
    Returns the kept windows and how many were left out."""
    keep = np.ones(len(data), bool)
    w = data.features.window_s
    for asset, t0, t1 in anomalies:
        if asset not in data.assets:
            continue
        a = data.assets.index(asset)
        keep &= ~((data.asset_idx == a) & (data.start < t1 + margin_s) & (data.start + w > t0 - margin_s))
    dropped = int((~keep).sum())
    return (data if not dropped else data.subset(np.flatnonzero(keep))), dropped


def _header_time(headers, parse_time) -> float | None:
    for name, value in headers or ():
        if name == "ce_time":
            try:
                return parse_time(value.decode())
            except (ValueError, UnicodeDecodeError):
                return None
    return None
