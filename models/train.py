"""Training loop of the fusion model on unlabelled normal windows (and optional label heads).

Where it sits: `services.training` builds a `WindowArrays` of normal operation and calls
`fit(model, train_data, calib_data, cfg)`; the result is saved by `models.checkpoint`. Kept apart
from the inference module (`models.scorer`), after anomalib's torch_model / training split.

Per step, B windows are drawn as B/2 anchors plus, for each, a partner from the *same asset* at
another time (so a swap is a plausible-looking but wrong combination — the line running in one,
idle or at another speed in the other — rather than a trivially different camera). Losses:

- frame autoencoder MSE on a few frames per window (the decoder dominates the cost on CPU),
- log-mel autoencoder MSE on received audio frames,
- replaced-modality detection: each window once as is (target 0 for every modality) and once with
  one modality taken from its partner (target 1 for it; with only two modalities present, both
  are inconsistent and both get 1).

Fitted, not learned: log-mel normalisation, the normal-line memory bank, the log-rate histogram,
the code vocabulary and, after training, each score component's location and scale on held-out
normal windows (`fit_component_stats`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from models.data import WindowArrays
from models.fusion import COMPONENTS, FusionModel

# Lower bounds on a component's scale: a component that is ~constant on normal data (no unseen
# line ever) must not turn a tiny wiggle into a huge z-score.
MIN_SCALE = {"frames": 1e-3, "audio": 1e-2, "logs": 0.03, "log_rate": 0.5,
             "cross_frames": 0.05, "cross_audio": 0.05, "cross_logs": 0.05}


@dataclass
class TrainConfig:
    intra_steps: int = 600  # autoencoder steps (shared by every fusion variant)
    fusion_steps: int = 600  # state encoders + fusion + consistency head
    frames_per_step: int = 48  # frames through the frame autoencoder per intra step
    windows_per_step: int = 32  # windows per step: audio autoencoder; fusion: B/2 anchors + B/2 partners
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    swap_any_asset_p: float = 0.15  # partner from any asset (teaches little, keeps it general)
    min_partner_gap_s: float = 6.0  # partners never overlap the anchor's window or its neighbours
    seed: int = 0
    threads: int | None = None  # torch CPU threads; None = leave as is
    device: str = "cpu"
    bf16: bool = True  # autocast on CUDA
    checkpoint_every: int = 100  # steps between resumable training states (when a state dir is given)
    head_steps: int = 300  # optional label heads, trained after, with everything else frozen

    def to_dict(self):
        return asdict(self)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_losses: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


ProgressFn = Callable[[str, int, int, dict[str, float]], None]  # (phase, step, steps, losses)


# ── fitted statistics ──────────────────────────────────────────────────────────────────────

def fit_normalisers(model: FusionModel, data: WindowArrays) -> None:
    """Statistics of normal data the model uses as buffers: call once before training."""
    valid = data.audio_mask  # (N, T_a)
    mel = data.mel.astype(np.float32)
    if valid.any():
        sel = mel.transpose(0, 2, 1)[valid]  # (n_valid_frames, n_mels)
        model.mel_mean.copy_(torch.from_numpy(sel.mean(0)))
        model.mel_std.copy_(torch.from_numpy(sel.std(0).clip(1e-3)))
    model.line_bank = torch.from_numpy(data.unique_lines())
    counts = data.log_count[data.log_present]
    k_max = int(np.percentile(counts, 99.9) * 2 + 4) if len(counts) else 8
    hist = np.bincount(np.clip(counts, 0, k_max), minlength=k_max + 1).astype(np.float64)
    hist = (hist + 0.5) / (hist.sum() + 0.5 * len(hist))  # Laplace-smoothed: an unseen rate is rare, not impossible
    model.rate_hist = torch.from_numpy(hist.astype(np.float32))
    model.code_vocab = data.code_vocab()


@torch.inference_mode()
def component_table(model: FusionModel, data: WindowArrays, batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Raw components (N, 7) and their masks for every window (NaN where undefined)."""
    model.eval()
    comps, masks = [], []
    for i in range(0, len(data), batch_size):
        idx = np.arange(i, min(i + batch_size, len(data)))
        out = model(data.batch(idx, model.code_vocab).to(device))
        comps.append(out.components.float().cpu().numpy())
        masks.append(out.component_mask.cpu().numpy())
    return np.concatenate(comps), np.concatenate(masks)


def fit_component_stats(model: FusionModel, data: WindowArrays, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Location (median) and scale ((q99 - median) / 2.326, a sigma for a normal tail) of each
    component on held-out normal windows, written into the model's buffers."""
    comps, masks = component_table(model, data, device=device)
    stats = {}
    for j, (name, _, _) in enumerate(COMPONENTS):
        x = comps[masks[:, j], j]
        if len(x) < 10:
            loc, scale = 0.0, 1.0
        else:
            loc = float(np.median(x))
            scale = max(float(np.quantile(x, 0.99) - loc) / 2.326, MIN_SCALE[name])
        model.comp_loc[j] = loc
        model.comp_scale[j] = scale
        stats[name] = {"loc": loc, "scale": scale, "n": int(len(x))}
    return stats


# ── the loop ───────────────────────────────────────────────────────────────────────────────

class PartnerSampler:
    """Same-asset partners at least `gap` seconds away (any asset with probability p_any)."""

    def __init__(self, data: WindowArrays, gap: float, p_any: float, rng: np.random.Generator):
        self.data, self.gap, self.p_any, self.rng = data, gap, p_any, rng
        self.by_asset = [np.flatnonzero(data.asset_idx == a) for a in range(len(data.assets))]

    def __call__(self, anchors: np.ndarray) -> np.ndarray:
        out = np.empty_like(anchors)
        for n, i in enumerate(anchors):
            pool = self.by_asset[self.data.asset_idx[i]]
            if self.rng.random() < self.p_any or len(pool) < 3:
                pool = np.arange(len(self.data))
            for _ in range(8):
                j = pool[self.rng.integers(len(pool))]
                if abs(self.data.start[j] - self.data.start[i]) >= self.gap or self.data.asset_idx[j] != self.data.asset_idx[i]:
                    break
            out[n] = j
        return out


def _autocast(device: str, bf16: bool):
    if device.startswith("cuda") and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


PHASES = ("intra", "fusion")


def train(model: FusionModel, data: WindowArrays, cfg: TrainConfig, progress: ProgressFn | None = None,
          state_dir: Path | None = None, phases: tuple[str, ...] = PHASES) -> TrainResult:
    """Unsupervised training, phase by phase ("intra": autoencoders; "fusion": consistency; the
    late variant has no fusion phase). Resumes from `state_dir` when it holds a training state."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = cfg.device
    model.to(device)
    phases = tuple(p for p in phases if p != "fusion" or model.fusion is not None)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    resume = load_train_state(state_dir, model, cfg) if state_dir is not None else None
    history: list[dict[str, float]] = resume["history"] if resume else []
    if resume:
        rng = resume["rng"]
    sampler = PartnerSampler(data, cfg.min_partner_gap_s, cfg.swap_any_asset_p, rng)
    frame_pool = np.flatnonzero(np.bincount(data.frame_idx[data.frame_idx >= 0], minlength=len(data.frame_pool)) > 0)
    t0 = time.perf_counter()
    done, losses = 0, {}
    for phase in phases:
        steps = cfg.intra_steps if phase == "intra" else cfg.fusion_steps
        params = model.intra_parameters() if phase == "intra" else model.fusion_parameters()
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        start = 0
        if resume and resume["phase"] == phase:
            start = resume["step"]
            _load_opt_state(opt, resume["tensors"])
        elif resume and PHASES.index(resume["phase"]) > PHASES.index(phase):
            continue  # finished before the interruption
        for step in range(start, steps):
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for g in opt.param_groups:
                g["lr"] = lr
            model.train()
            with _autocast(device, cfg.bf16):
                if phase == "intra":
                    loss, losses = _intra_loss(model, data, frame_pool, cfg, rng)
                else:
                    loss, losses = _fusion_loss(model, data, sampler, cfg, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            done += 1
            if progress:
                progress(phase, step + 1, steps, losses)
            if (step + 1) % 10 == 0:
                history.append({"phase": phase, "step": step + 1, **losses})
            if state_dir is not None and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
                save_train_state(state_dir, model, opt, phase, step + 1, history, rng, cfg)
        resume = None
    model.eval()
    return TrainResult(done, time.perf_counter() - t0, losses, history)


def _intra_loss(model: FusionModel, data: WindowArrays, frame_pool: np.ndarray, cfg: TrainConfig, rng: np.random.Generator):
    device = cfg.device
    losses: dict[str, float] = {}
    loss = torch.zeros((), device=device)
    if len(frame_pool):
        pick = frame_pool[rng.integers(len(frame_pool), size=cfg.frames_per_step)]
        frames = torch.from_numpy(data.frame_pool[pick]).to(device).permute(0, 3, 1, 2).float().div_(255.0)  # (n, 3, H, W)
        frame_loss = ((model.frames(frames).float() - frames) ** 2).mean()
        loss = loss + frame_loss
        losses["frame_ae"] = frame_loss.item()
    idx = rng.integers(len(data), size=cfg.windows_per_step)
    mask = torch.from_numpy(data.audio_mask[idx]).to(device)
    if mask.any():
        mel = model.normalise_mel(torch.from_numpy(data.mel[idx].astype(np.float32)).to(device))
        amask = mask[:, None, :].float()
        audio_loss = (((model.audio(mel, mask).float() - mel) ** 2) * amask).sum() / (amask.sum() * mel.shape[1]).clamp_min(1)
        loss = loss + audio_loss
        losses["audio_ae"] = audio_loss.item()
    losses["loss"] = loss.item()
    return loss, losses


def _fusion_loss(model: FusionModel, data: WindowArrays, sampler: PartnerSampler, cfg: TrainConfig,
                 rng: np.random.Generator):
    half = cfg.windows_per_step // 2
    anchors = rng.integers(len(data), size=half)
    batch = data.batch(np.concatenate([anchors, sampler(anchors)]), model.code_vocab).to(cfg.device)
    B = batch.batch_size
    tokens = model.tokens(batch)
    partner = torch.cat([torch.arange(half, B), torch.arange(0, half)]).to(batch.frames.device)
    present = tokens.present()  # (B, 3)
    both = present & present[partner]
    pick = torch.from_numpy(rng.random((B, 3))).to(present.device).masked_fill(~both, -1.0)
    modality = torch.where(both.any(1), pick.argmax(1), torch.full((B,), -1, device=present.device))
    swapped = tokens.swap(modality, partner)
    logits_real, _, _ = model.fuse(tokens)
    logits_swap, _, _ = model.fuse(swapped)
    target = F.one_hot(modality.clamp_min(0), 3).float() * (modality >= 0)[:, None]
    present_s = swapped.present()
    two = present_s.sum(1) == 2  # with two modalities, either may be the odd one out
    target = torch.where((two & (modality >= 0))[:, None], present_s.float(), target)
    logits = torch.cat([logits_real, logits_swap]).float()
    targets = torch.cat([torch.zeros_like(target), target])
    valid_rows = torch.cat([present.sum(1) >= 2, (modality >= 0) & (present_s.sum(1) >= 2)]).float()[:, None]
    valid = torch.cat([present, present_s]).float() * valid_rows
    bce = (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * valid).sum() / valid.sum().clamp_min(1)
    with torch.no_grad():
        acc = (((logits > 0).float() == targets).float() * valid).sum() / valid.sum().clamp_min(1)
    return bce, {"consistency": bce.item(), "consistency_acc": acc.item(), "loss": bce.item()}


def train_heads(model: FusionModel, data: WindowArrays, cfg: TrainConfig, progress: ProgressFn | None = None) -> dict[str, float]:
    """Optional supervised heads on labelled windows, everything else frozen (labels never leak
    into the normality model). Labels: data.labels['kind'] (index into cfg.kind_classes, -1 =
    none), 'sentiment' (index, -1), 'frustration' (0..1, NaN = none)."""
    heads = [h for h in (model.kind_head, model.sentiment_head, model.frustration_head) if h is not None]
    if not heads:
        return {}
    params = [p for h in heads for p in h.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed + 1)
    model.eval()  # dropout off; heads are linear
    has = np.zeros(len(data), bool)
    for key in ("kind", "sentiment"):
        if key in data.labels:
            has |= data.labels[key] >= 0
    if "frustration" in data.labels:
        has |= ~np.isnan(data.labels["frustration"])
    pool = np.flatnonzero(has)
    if not len(pool):
        return {}
    losses: dict[str, float] = {}
    for step in range(cfg.head_steps):
        idx = pool[rng.integers(len(pool), size=min(cfg.batch_size, len(pool)))]
        batch = data.batch(idx, model.code_vocab).to(cfg.device)
        with torch.no_grad():
            _, summary, _ = model.fuse(model.tokens(batch))
        loss = summary.new_zeros(())
        if model.kind_head is not None and "kind" in data.labels:
            y = torch.from_numpy(data.labels["kind"][idx].astype(np.int64))
            loss = loss + F.cross_entropy(model.kind_head(summary), y, ignore_index=-1) * float((y >= 0).any())
        if model.sentiment_head is not None and "sentiment" in data.labels:
            y = torch.from_numpy(data.labels["sentiment"][idx].astype(np.int64))
            loss = loss + F.cross_entropy(model.sentiment_head(summary), y, ignore_index=-1) * float((y >= 0).any())
        if model.frustration_head is not None and "frustration" in data.labels:
            y = torch.from_numpy(data.labels["frustration"][idx].astype(np.float32))
            ok = ~torch.isnan(y)
            if ok.any():
                pred = torch.sigmoid(model.frustration_head(summary)).squeeze(1)
                loss = loss + F.mse_loss(pred[ok], y[ok])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses = {"heads": float(loss)}
        if progress:
            progress("heads", step + 1, cfg.head_steps, losses)
    return losses


# ── resumable state (safetensors + JSON; no pickle) ─────────────────────────────────────────

def save_train_state(state_dir: Path, model: FusionModel, opt: torch.optim.Optimizer, phase: str, step: int,
                     history: list, rng: np.random.Generator, cfg: TrainConfig) -> None:
    from safetensors.torch import save_file

    state_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            tensors[f"opt.{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    tensors["torch_rng"] = torch.get_rng_state()
    save_file(tensors, str(state_dir / "train_state.tmp"))
    (state_dir / "train_state.tmp").replace(state_dir / "train_state.safetensors")
    meta = {"phase": phase, "step": step, "history": history, "numpy_rng": rng.bit_generator.state,
            "train_config": cfg.to_dict(), "code_vocab": sorted(model.code_vocab)}
    (state_dir / "train_state.json").write_text(json.dumps(meta))


def load_train_state(state_dir: Path, model: FusionModel, cfg: TrainConfig) -> dict | None:
    """The saved state, loaded into `model`; None when there is none."""
    from safetensors.torch import load_file

    if not (state_dir / "train_state.json").exists():
        return None
    meta = json.loads((state_dir / "train_state.json").read_text())
    saved = meta["train_config"]
    if any(saved.get(k) != getattr(cfg, k) for k in ("intra_steps", "fusion_steps", "seed", "windows_per_step")):
        raise ValueError(f"the training state in {state_dir} was made with other settings; "
                         "delete it (or pass --no-resume) to start over")
    tensors = load_file(str(state_dir / "train_state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    model.code_vocab = frozenset(meta["code_vocab"])
    torch.set_rng_state(tensors["torch_rng"])
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["numpy_rng"]
    return {"phase": meta["phase"], "step": int(meta["step"]), "history": meta["history"], "rng": rng, "tensors": tensors}


def _load_opt_state(opt: torch.optim.Optimizer, tensors: dict) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        st = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if st:
            opt.state[p] = st


def clear_train_state(state_dir: Path) -> None:
    for name in ("train_state.json", "train_state.safetensors"):
        (state_dir / name).unlink(missing_ok=True)
