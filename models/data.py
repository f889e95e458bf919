"""A cached set of featurized windows as stacked arrays: what training and evaluation iterate.

Where it sits: `services.training.dataset` fills it from the simulator, a recorded directory or
a Kafka time range (through the monitor's own aligner and `models.features.Featurizer`), saves it
under `var/datasets/<name>/`, and `models.train` / the eval harness draw batches from it by fancy
indexing — no per-window Python work in the training loop.

Stored without pickle: `arrays.npz` (plain numeric arrays, `allow_pickle=False`) + `meta.json`.
Frames are de-duplicated (consecutive windows overlap by half, so each frame is in two windows):
`frame_pool` holds every frame once and `frame_idx` points into it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from models.features import CODE_KNOWN, CODE_NONE, CODE_UNKNOWN, FeatureConfig, WindowBatch, WindowFeatures
from models.text import EMBED_DIM
from schemas.errors import FusionwatchError

FORMAT_VERSION = 1
# per-window arrays only some datasets have (None otherwise): transcript speakers, stereo channels
OPTIONAL = ("log_speakers", "channel_mel", "channel_mask")
PER_WINDOW = ("asset_idx", "start", "frame_idx", "frame_times", "mel", "audio_mask", "log_emb", "log_levels",
              "log_code", "log_times", "log_mask", "log_count", "log_present")


class DatasetError(FusionwatchError):
    pass


@dataclass
class WindowArrays:
    features: FeatureConfig
    assets: list[str]
    asset_idx: np.ndarray  # (N,) int32
    start: np.ndarray  # (N,) float64 epoch seconds
    frame_pool: np.ndarray  # (M, H, W, 3) uint8
    frame_idx: np.ndarray  # (N, T_f) int32, -1 = empty slot
    frame_times: np.ndarray  # (N, T_f) float32 seconds from window start
    mel: np.ndarray  # (N, n_mels, T_a) float16 log-mel
    audio_mask: np.ndarray  # (N, T_a) bool
    log_emb: np.ndarray  # (N, L, 384) float16
    log_levels: np.ndarray  # (N, L) int8
    log_code: np.ndarray  # (N, L) int32 index into `codes`, -1 = no code
    log_times: np.ndarray  # (N, L) float32
    log_mask: np.ndarray  # (N, L) bool
    log_count: np.ndarray  # (N,) int32
    log_present: np.ndarray  # (N,) bool
    codes: list[str]
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # optional per-window labels
    meta: dict[str, Any] = field(default_factory=dict)
    log_speakers: np.ndarray | None = None  # (N, L) int8 models.features.SPEAKERS ids
    channel_mel: np.ndarray | None = None  # (N, 2, n_mels, T_a) float16, per models.features.CHANNELS entry
    channel_mask: np.ndarray | None = None  # (N, 2, T_a) bool; all False for a mono window

    def __len__(self) -> int:
        return len(self.start)

    # ── building ─────────────────────────────────────────────────────────────────────────────
    @classmethod
    def from_features(cls, feats: Iterable[WindowFeatures], cfg: FeatureConfig,
                      meta: dict[str, Any] | None = None) -> "WindowArrays":
        b = _Builder(cfg)
        for f in feats:
            b.add(f)
        return b.finish(meta or {})

    def subset(self, idx: np.ndarray) -> "WindowArrays":
        idx = np.asarray(idx)
        kw = {k: getattr(self, k)[idx] for k in PER_WINDOW}
        kw |= {k: getattr(self, k)[idx] for k in OPTIONAL if getattr(self, k) is not None}
        return WindowArrays(features=self.features, assets=self.assets, frame_pool=self.frame_pool, codes=self.codes,
                            labels={k: v[idx] for k, v in self.labels.items()}, meta=dict(self.meta), **kw)

    @staticmethod
    def concat(parts: Sequence["WindowArrays"]) -> "WindowArrays":
        if not parts:
            raise DatasetError("nothing to concatenate")
        cfg = parts[0].features
        assets = sorted({a for p in parts for a in p.assets})
        codes = sorted({c for p in parts for c in p.codes})
        out: dict[str, list] = {k: [] for k in ("asset_idx", "start", "frame_idx", "frame_times", "mel", "audio_mask",
                                                 "log_emb", "log_levels", "log_code", "log_times", "log_mask",
                                                 "log_count", "log_present", "frame_pool")}
        labels: dict[str, list] = {k: [] for k in parts[0].labels}
        offset = 0
        for p in parts:
            if p.features != cfg:
                raise DatasetError("datasets with different feature configs cannot be combined; rebuild them")
            amap = np.array([assets.index(a) for a in p.assets], np.int32)
            cmap = np.array([codes.index(c) for c in p.codes] + [-1], np.int32)
            out["asset_idx"].append(amap[p.asset_idx])
            out["frame_idx"].append(np.where(p.frame_idx >= 0, p.frame_idx + offset, -1))
            out["log_code"].append(cmap[p.log_code])  # -1 maps to the trailing -1
            for k in ("start", "frame_times", "mel", "audio_mask", "log_emb", "log_levels", "log_times", "log_mask",
                      "log_count", "log_present"):
                out[k].append(getattr(p, k))
            out["frame_pool"].append(p.frame_pool)
            offset += len(p.frame_pool)
            for k in labels:
                labels[k].append(p.labels[k])
        arrays = {k: np.concatenate(v) for k, v in out.items()}
        for k in OPTIONAL:  # kept when every part has it
            if all(getattr(p, k) is not None for p in parts):
                arrays[k] = np.concatenate([getattr(p, k) for p in parts])
        return WindowArrays(features=cfg, assets=assets, codes=codes, labels={k: np.concatenate(v) for k, v in labels.items()},
                            meta={"parts": [p.meta for p in parts]}, **arrays)

    # ── batches ──────────────────────────────────────────────────────────────────────────────
    def batch(self, idx: np.ndarray, code_vocab: frozenset[str] | set[str] = frozenset()) -> WindowBatch:
        import torch

        idx = np.asarray(idx)
        fi = self.frame_idx[idx]  # (B, T)
        frame_mask = fi >= 0
        if len(self.frame_pool):
            frames = self.frame_pool[np.clip(fi, 0, None)]  # (B, T, H, W, 3)
            frames = frames * frame_mask[:, :, None, None, None]
        else:
            cfg = self.features
            frames = np.zeros((*fi.shape, cfg.frame_height, cfg.frame_width, 3), np.uint8)
        code = self.log_code[idx]
        known = np.array([c in code_vocab for c in self.codes] + [False], bool)
        state = np.where(code < 0, CODE_NONE, np.where(known[code], CODE_KNOWN, CODE_UNKNOWN))
        w = self.features.window_s
        t = torch.from_numpy
        return WindowBatch(
            frames=t(np.ascontiguousarray(frames)).permute(0, 1, 4, 2, 3).float().div_(255.0),
            frame_mask=t(frame_mask), frame_times=t(self.frame_times[idx] / w),
            mel=t(self.mel[idx].astype(np.float32)), audio_mask=t(self.audio_mask[idx]),
            log_emb=t(self.log_emb[idx].astype(np.float32)), log_levels=t(self.log_levels[idx].astype(np.int64)),
            log_code_state=t(state.astype(np.int64)), log_times=t(self.log_times[idx] / w),
            log_mask=t(self.log_mask[idx]), log_count=t(self.log_count[idx].astype(np.float32)),
            log_present=t(self.log_present[idx]),
            log_speakers=t(self.log_speakers[idx].astype(np.int64)) if self.log_speakers is not None else None,
            channel_mel=t(self.channel_mel[idx].astype(np.float32)) if self.channel_mel is not None else None,
            channel_mask=t(self.channel_mask[idx]) if self.channel_mask is not None else None,
        )

    # ── persistence ──────────────────────────────────────────────────────────────────────────
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {k: getattr(self, k) for k in ("asset_idx", "start", "frame_pool", "frame_idx", "frame_times", "mel",
                                                 "audio_mask", "log_emb", "log_levels", "log_code", "log_times",
                                                 "log_mask", "log_count", "log_present")}
        arrays.update({k: getattr(self, k) for k in OPTIONAL if getattr(self, k) is not None})
        arrays.update({f"label_{k}": v for k, v in self.labels.items()})
        tmp = path / "arrays.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(path / "arrays.npz")
        meta = {"format": FORMAT_VERSION, "features": self.features.to_dict(), "assets": self.assets, "codes": self.codes,
                "windows": len(self), "meta": self.meta}
        (path / "meta.json").write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "WindowArrays":
        path = Path(path)
        try:
            meta = json.loads((path / "meta.json").read_text())
            npz = np.load(path / "arrays.npz", allow_pickle=False)
        except FileNotFoundError:
            raise DatasetError(f"{path} is not a fusionwatch dataset (meta.json / arrays.npz missing); "
                               "build one with `fusionwatch train --save-dataset` or delete the directory") from None
        if meta.get("format") != FORMAT_VERSION:
            raise DatasetError(f"{path} has dataset format {meta.get('format')}, expected {FORMAT_VERSION}; rebuild it")
        arrays = {k: npz[k] for k in npz.files if not k.startswith("label_")}
        labels = {k[6:]: npz[k] for k in npz.files if k.startswith("label_")}
        return cls(features=FeatureConfig(**meta["features"]), assets=meta["assets"], codes=meta["codes"],
                   labels=labels, meta=meta.get("meta", {}), **arrays)

    # ── statistics used by the model's fitted (non-gradient) parts ──────────────────────────────
    def unique_lines(self, max_lines: int = 20_000) -> np.ndarray:
        """(U, 384) float32 distinct normal line embeddings (the novelty memory bank)."""
        emb = self.log_emb[self.log_mask]
        if not len(emb):
            return np.zeros((0, EMBED_DIM), np.float32)
        uniq = np.unique(emb, axis=0).astype(np.float32)
        if len(uniq) > max_lines:  # keep a spread-out subset (cheap greedy farthest-point is overkill here)
            uniq = uniq[np.random.default_rng(0).choice(len(uniq), max_lines, replace=False)]
        return uniq / np.linalg.norm(uniq, axis=1, keepdims=True).clip(1e-6)

    def code_vocab(self) -> frozenset[str]:
        used = np.unique(self.log_code[self.log_mask & (self.log_code >= 0)])
        return frozenset(self.codes[i] for i in used)


class _Builder:
    def __init__(self, cfg: FeatureConfig):
        self.cfg = cfg
        self.assets: dict[str, int] = {}
        self.codes: dict[str, int] = {}
        self.pool: list[np.ndarray] = []
        self.pool_key: dict[tuple[str, float], int] = {}
        self.rows: dict[str, list] = {k: [] for k in ("asset_idx", "start", "frame_idx", "frame_times", "mel", "audio_mask",
                                                       "log_emb", "log_levels", "log_code", "log_times", "log_mask",
                                                       "log_count", "log_present")}
        self.optional: dict[str, list] = {k: [] for k in OPTIONAL}

    def add(self, f: WindowFeatures) -> None:
        T, L = self.cfg.max_frames, self.cfg.max_lines
        a = self.assets.setdefault(f.asset, len(self.assets))
        fidx = np.full(T, -1, np.int32)
        ftimes = np.zeros(T, np.float32)
        for j, (img, rel) in enumerate(zip(f.frames, f.frame_times)):
            key = (f.asset, round(f.start + float(rel), 4))
            k = self.pool_key.get(key)
            if k is None:
                k = self.pool_key[key] = len(self.pool)
                self.pool.append(img)
            fidx[j], ftimes[j] = k, rel
        n = len(f.log_text)
        emb = np.zeros((L, EMBED_DIM), np.float16)
        emb[:n] = f.log_emb
        lev = np.full(L, 5, np.int8)
        lev[:n] = f.log_levels
        code = np.full(L, -1, np.int32)
        code[:n] = [self.codes.setdefault(c, len(self.codes)) if c else -1 for c in f.log_codes]
        lt = np.zeros(L, np.float32)
        lt[:n] = f.log_times
        lm = np.zeros(L, bool)
        lm[:n] = True
        r = self.rows
        r["asset_idx"].append(a)
        r["start"].append(f.start)
        r["frame_idx"].append(fidx)
        r["frame_times"].append(ftimes)
        r["mel"].append(f.mel.astype(np.float16))
        r["audio_mask"].append(f.audio_mask)
        r["log_emb"].append(emb)
        r["log_levels"].append(lev)
        r["log_code"].append(code)
        r["log_times"].append(lt)
        r["log_mask"].append(lm)
        r["log_count"].append(f.log_count)
        r["log_present"].append(f.log_present)
        spk = np.zeros(L, np.int8)
        spk[:len(f.log_speakers)] = f.log_speakers
        self.optional["log_speakers"].append(spk)
        stereo_mel = f.channel_mel.astype(np.float16) if f.channel_mel is not None else None
        self.optional["channel_mel"].append(stereo_mel)
        self.optional["channel_mask"].append(f.channel_mask if stereo_mel is not None else None)

    def finish(self, meta: dict[str, Any]) -> WindowArrays:
        cfg = self.cfg
        if not self.rows["start"]:
            raise DatasetError("no windows: the source produced no decodable records")
        dtypes = {"asset_idx": np.int32, "start": np.float64, "log_count": np.int32, "log_present": bool}
        arrays = {k: np.asarray(v, dtype=dtypes.get(k)) if k in dtypes else np.stack(v) for k, v in self.rows.items()}
        pool = np.stack(self.pool) if self.pool else np.zeros((0, cfg.frame_height, cfg.frame_width, 3), np.uint8)
        arrays["log_speakers"] = np.stack(self.optional["log_speakers"])
        if any(m is not None for m in self.optional["channel_mel"]):  # mono windows of a stereo set: all masked
            shape = (2, cfg.n_mels, cfg.audio_frames)
            arrays["channel_mel"] = np.stack([np.zeros(shape, np.float16) if m is None else m
                                              for m in self.optional["channel_mel"]])
            arrays["channel_mask"] = np.stack([np.zeros((2, cfg.audio_frames), bool) if m is None else m
                                               for m in self.optional["channel_mask"]])
        # unlabelled: callers that have labels add them (`labels.update`, services.training)
        return WindowArrays(features=cfg, assets=list(self.assets), codes=list(self.codes), frame_pool=pool, meta=meta,
                            labels={}, **arrays)
