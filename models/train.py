"""Training loop of the fusion model on unlabelled normal windows (and optional label heads).

Where it sits: `services.training` builds a `WindowArrays` of normal operation and calls
`fit(model, train_data, calib_data, cfg)`; the result is saved by `models.checkpoint`. Kept apart
from the inference module (`models.scorer`), after anomalib's torch_model / training split.

Per step, B windows are drawn as B/2 anchors plus, for each, a partner from the *same asset* at
another time (so a swap is a plausible-looking but wrong combination — the line running in one,
idle or at another speed in the other — rather than a trivially different camera). Losses:

- frame autoencoder MSE on a few frames per window (the decoder dominates the cost on CPU),
- in its own phase, the detail autoencoder's MSE on the product region of such frames,
- log-mel autoencoder MSE on received audio frames,
- replaced-modality detection: each window once as is (target 0 for every modality) and once with
  one modality taken from its partner (target 1 for it; with only two modalities present, both
  are inconsistent and both get 1).

Fitted, not learned: log-mel normalisation, the normal-line memory bank,
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
from models.logmemory import hold_over_windows


@dataclass
class TrainConfig:
    intra_steps: int = 600  # autoencoder steps (shared by every fusion variant)
    # detail autoencoder steps (its own phase; skipped without a detail view). It keeps improving
    # long after the scene autoencoder has converged (validation seed 3, the detail score alone,
    # surface_defect AUROC: 0.87 after 2,000 steps, 0.94 after 5,000, 0.95 after 8,000, 0.96 after
    # 12,000; the combined model 0.946 -> 0.964 from 8,000 to 12,000), and its steps are cheap
    # (~30 ms on 2 cores)
    detail_steps: int = 12000
    fusion_steps: int = 600  # state encoders + fusion + consistency head
    frames_per_step: int = 48  # frames through the frame autoencoder per intra step
    windows_per_step: int = 32  # windows per step: audio autoencoder; fusion: B/2 anchors + B/2 partners
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    group_size: int = 8  # fusion batches are groups of windows of one asset (negatives from the same machine)
    min_partner_gap_s: float = 6.0  # partners / negatives never overlap the anchor's window or its neighbours
    hard_partner_p: float = 0.5  # swap partner: the group member whose embedding differs most (else random)
    contrastive_weight: float = 1.0
    contrastive_tau: float = 0.1
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
    history: list[dict[str, float | str]] = field(default_factory=list)  # every 10 steps: phase, step, losses


ProgressFn = Callable[[str, int, int, dict[str, float]], None]  # (phase, step, steps, losses)


def warmup_cosine_lr(base_lr: float, step: int, steps: int, warmup_steps: int) -> float:
    """The learning rate of every training loop here: linear warm-up, then cosine decay to 0."""
    return base_lr * min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / steps))


def set_lr(opt, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


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
    model.code_vocab = data.code_vocab()
    if model.cfg.normalise_light and len(data.frame_pool):
        pick = np.random.default_rng(0).choice(len(data.frame_pool), size=min(2000, len(data.frame_pool)), replace=False)
        model.cfg.light_ref = round(float(data.frame_pool[np.sort(pick)].mean()) / 255.0, 4)


@torch.inference_mode()
def fit_intra_statistics(model: FusionModel, data: WindowArrays, max_windows: int = 1500, batch_size: int = 64,
                         shrinkage: float = 0.1, device: str = "cpu") -> None:
    """After the autoencoders are trained, on normal training windows: the Gaussian of the windows'
    frame feature statistics (mean and a covariance shrunk towards its average variance, for a
    stable precision matrix) and each mel band's normal time-averaged reconstruction error."""
    model.eval()
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(data), size=min(max_windows, len(data)), replace=False))
    stats_rows, band_rows = [], []
    for i in range(0, len(idx), batch_size):
        batch = data.batch(idx[i:i + batch_size], model.code_vocab).to(device)
        if batch.frame_mask.any():
            _, stats = model.frames(model.scene_frames(batch.frames.flatten(0, 1)), with_stats=True)
            has = batch.frame_mask.any(1)
            stats_rows.append(model.window_frame_stats(stats.view(*batch.frame_mask.shape, -1), batch.frame_mask)[has].cpu())
        if batch.audio_mask.any():
            mel = model.normalise_mel(batch.mel)
            err = (mel - model.audio(mel, batch.audio_mask)).pow(2) * batch.audio_mask[:, None, :]
            has = batch.audio_mask.any(1)
            band_rows.append(model.band_profile(err, batch.audio_mask)[has].cpu())
    if stats_rows:
        x = torch.cat(stats_rows).double()  # (n, S)
        cov = torch.cov(x.T) if len(x) > 1 else torch.eye(x.shape[1], dtype=torch.float64)
        target = torch.eye(cov.shape[0], dtype=cov.dtype) * cov.diagonal().mean().clamp_min(1e-8)
        cov = (1 - shrinkage) * cov + shrinkage * target
        model.stats_mean.copy_(x.mean(0).float())
        model.stats_precision.copy_(torch.linalg.inv(cov).float())
    if band_rows:
        b = torch.cat(band_rows)
        model.band_mean.copy_(b.mean(0))
        # each band's spread floored at 5 % of its own level: a very stationary machine's quiet band
        # would otherwise turn any new microphone into z ~ 1e4 (shrinking towards the bands' average
        # variance instead drowned the quiet bands a 1x imbalance line lives in: validation 0.60)
        floor = torch.maximum(0.05 * b.mean(0).abs(), torch.full_like(b[0], 1e-3 * float(b.mean()) + 1e-6))
        model.band_std.copy_(torch.maximum(b.std(0), floor))


@torch.inference_mode()
def component_table(model: FusionModel, data: WindowArrays, batch_size: int = 64, device: str = "cpu",
                    intra_from: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw components (N, C) and their masks for every window, the log novelty held over each
    asset's next windows as the scorer holds it (`models.logmemory`). With `intra_from` (a table
    of a model with the same intra-modal part), only the cross-modal columns are computed."""
    from models.fusion import COMPONENT_NAMES

    model.eval()
    cross_cols = [COMPONENT_NAMES.index(n) for n in ("cross_frames", "cross_audio", "cross_logs")]
    comp_parts: list[np.ndarray] = []
    mask_parts: list[np.ndarray] = []
    for i in range(0, len(data), batch_size):
        idx = np.arange(i, min(i + batch_size, len(data)))
        batch = data.batch(idx, model.code_vocab).to(device)
        if intra_from is None:
            out = model(batch)
            comp_parts.append(out.components.float().cpu().numpy())
            mask_parts.append(out.component_mask.cpu().numpy())
        else:
            c, m = intra_from[0][idx].copy(), intra_from[1][idx].copy()
            xc, xm = model.cross_components(batch)
            c[:, cross_cols], m[:, cross_cols] = xc.cpu().numpy(), xm.cpu().numpy()
            comp_parts.append(c)
            mask_parts.append(m)
    comps, masks = np.concatenate(comp_parts), np.concatenate(mask_parts)
    if intra_from is None:  # (a donor's table holds it already)
        L = COMPONENT_NAMES.index("logs")
        comps[:, L] = hold_over_windows(comps[:, L], masks[:, L], data.asset_idx, data.start, model.cfg.log_memory_s)
    return comps, masks


def same_intra(a: FusionModel, b: FusionModel) -> bool:
    sa, sb = a.intra_state(), b.intra_state()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa) \
        and a.code_vocab == b.code_vocab and a.cfg.log_memory_s == b.cfg.log_memory_s


def fit_component_stats(model: FusionModel, data: WindowArrays, device: str = "cpu",
                        table: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, dict]:
    """Each component's survival function on held-out normal windows (`ComponentTails`).
    `table`: raw components of `data` already computed (they do not depend on the tails)."""
    comps, masks = table if table is not None else component_table(model, data, device=device)
    info = model.tails.fit([comps[masks[:, j], j] for j in range(len(COMPONENTS))], tuple(c[0] for c in COMPONENTS))
    return {name: i for (name, _, _), i in zip(COMPONENTS, info)}


# ── the loop ───────────────────────────────────────────────────────────────────────────────

class GroupSampler:
    """Fusion batches: groups of `group_size` windows of one asset at random times, so swaps and
    contrastive negatives come from the same machine (a plausible, wrong combination) rather than
    from another camera."""

    def __init__(self, data: WindowArrays, group_size: int, rng: np.random.Generator):
        self.rng, self.k = rng, group_size
        self.by_asset = [np.flatnonzero(data.asset_idx == a) for a in range(len(data.assets))]
        sizes = np.array([len(x) for x in self.by_asset], float)
        self.p = sizes / sizes.sum()

    def __call__(self, n_groups: int) -> np.ndarray:
        out = []
        for a in self.rng.choice(len(self.by_asset), size=n_groups, p=self.p):
            pool = self.by_asset[a]
            out.append(pool[self.rng.choice(len(pool), size=self.k, replace=len(pool) < self.k)])
        return np.concatenate(out)


def _autocast(device: str, bf16: bool):
    if device.startswith("cuda") and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


PHASES = ("intra", "detail", "fusion")


def train(model: FusionModel, data: WindowArrays, cfg: TrainConfig, progress: ProgressFn | None = None,
          state_dir: Path | None = None, phases: tuple[str, ...] = PHASES) -> TrainResult:
    """Unsupervised training, phase by phase ("intra": autoencoders; "fusion": consistency; the
    late variant has no fusion phase). Resumes from `state_dir` when it holds a training state."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = cfg.device
    model.to(device)
    absent = {"fusion": model.fusion is None, "detail": model.detail is None}  # phases with nothing to train
    phases = tuple(p for p in phases if not absent.get(p, False))
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    resume = load_train_state(state_dir, model, cfg) if state_dir is not None else None
    history: list[dict[str, float | str]] = resume["history"] if resume else []
    if resume:
        rng = resume["rng"]
    sampler = GroupSampler(data, cfg.group_size, rng)
    frame_pool = np.flatnonzero(np.bincount(data.frame_idx[data.frame_idx >= 0], minlength=len(data.frame_pool)) > 0)
    t0 = time.perf_counter()
    done, losses = 0, {}
    for phase in phases:
        steps = {"intra": cfg.intra_steps, "detail": cfg.detail_steps, "fusion": cfg.fusion_steps}[phase]
        params = {"intra": model.intra_parameters, "detail": model.detail_parameters, "fusion": model.fusion_parameters}[phase]()
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        start = 0
        if resume and resume["phase"] == phase:
            start = resume["step"]
            _load_opt_state(opt, resume["tensors"])
        elif resume and PHASES.index(resume["phase"]) > PHASES.index(phase):
            continue  # finished before the interruption
        for step in range(start, steps):
            set_lr(opt, warmup_cosine_lr(cfg.lr, step, steps, cfg.warmup_steps))
            model.train()
            with _autocast(device, cfg.bf16):
                if phase == "intra":
                    loss, losses = _intra_loss(model, data, frame_pool, cfg, rng)
                elif phase == "detail":
                    loss, losses = _detail_loss(model, data, frame_pool, cfg, rng)
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
        frames = model.scene_frames(frames)
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


def _detail_loss(model: FusionModel, data: WindowArrays, frame_pool: np.ndarray, cfg: TrainConfig, rng: np.random.Generator):
    """The detail autoencoder's MSE on the product region of random normal frames."""
    if not len(frame_pool):  # no frames at all (an audio-only plant): nothing to learn, nothing to score
        return sum(p.sum() * 0.0 for p in model.detail_parameters()), {"loss": 0.0}
    assert model.detail is not None and model.cfg.detail_rows is not None, "`train` runs this phase only with a detail view"
    r0, r1 = model.cfg.detail_rows
    pick = frame_pool[rng.integers(len(frame_pool), size=cfg.frames_per_step)]
    frames = torch.from_numpy(data.frame_pool[pick]).to(cfg.device).permute(0, 3, 1, 2).float().div_(255.0)
    crops = model.light(frames[:, :, r0:r1], like=frames)  # as `FusionModel.frame_evidence` sees them
    loss = ((model.detail(crops).float() - crops) ** 2).mean()
    return loss, {"detail_ae": loss.item(), "loss": loss.item()}


def _fusion_loss(model: FusionModel, data: WindowArrays, sampler: GroupSampler, cfg: TrainConfig,
                 rng: np.random.Generator):
    K = cfg.group_size
    G = max(cfg.windows_per_step // K, 2)
    idx = sampler(G)
    batch = data.batch(idx, model.code_vocab).to(cfg.device)
    B = batch.batch_size
    dev = batch.frames.device
    tokens = model.tokens(batch)
    present = tokens.present()  # (B, 3)
    t = torch.from_numpy(data.start[idx]).to(dev).view(G, K)
    far = (t[:, :, None] - t[:, None, :]).abs() >= cfg.min_partner_gap_s  # (G, K, K); False on the diagonal
    # 1. contrastive: a window's frames must pick out its own audio (and logs) among the group's
    z = model.modality_embeddings(tokens).float().view(G, K, 3, -1)  # (G, K, 3, D)
    pg = present.view(G, K, 3)
    eye = torch.eye(K, dtype=torch.bool, device=dev)[None]
    contrast, n_pairs = torch.zeros((), device=dev), 0
    for a, b in ((0, 1), (0, 2), (1, 2)):
        sim = torch.einsum("gkd,gjd->gkj", z[:, :, a], z[:, :, b]) / cfg.contrastive_tau  # (G, K, K)
        ok = (far | eye) & pg[:, :, None, a] & pg[:, None, :, b]  # candidates: itself and windows far away
        sim = sim.masked_fill(~ok, float("-inf"))
        rows = ok.diagonal(dim1=1, dim2=2) & (ok.sum(-1) > 1)  # (G, K): own pair valid and some negative
        if rows.any():
            target = torch.arange(K, device=dev).expand(G, K)
            ce_ab = F.cross_entropy(sim[rows], target[rows])
            ce_ba = F.cross_entropy(sim.transpose(1, 2)[rows], target[rows])
            contrast = contrast + (ce_ab + ce_ba) / 2
            n_pairs += 1
    contrast = contrast / max(n_pairs, 1)
    # 2. replaced-modality detection: swap one modality with a group member's
    pick = torch.from_numpy(rng.random((B, 3))).to(dev).masked_fill(~present, -1.0)
    modality = pick.argmax(1)  # a present modality of each window
    zm = z.detach().reshape(B, 3, -1)[torch.arange(B, device=dev), modality].view(G, K, -1)  # (G, K, D)
    dist = 1 - torch.einsum("gkd,gjd->gkj", zm, zm)  # (G, K, K)
    hard = torch.from_numpy(rng.random((G, K, 1)) < cfg.hard_partner_p).to(dev)
    score = torch.where(hard, dist, torch.from_numpy(rng.random((G, K, K))).to(dev).float())
    mk = modality.view(G, K)
    has_m = pg[:, None, :, :].expand(G, K, K, 3).gather(3, mk[:, :, None, None].expand(G, K, K, 1)).squeeze(-1)  # j has k's modality
    cand = far & has_m
    score = score.masked_fill(~cand, -1.0)
    partner_local = score.argmax(-1)  # (G, K)
    partner = (partner_local + torch.arange(G, device=dev)[:, None] * K).view(B)
    swappable = cand.any(-1).view(B) & (present.sum(1) >= 2)
    modality = torch.where(swappable, modality, torch.full_like(modality, -1))
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
        pos = targets.bool() & valid.bool()
        recall = ((logits > 0) & pos).float().sum() / pos.float().sum().clamp_min(1)
    loss = bce + cfg.contrastive_weight * contrast
    return loss, {"consistency": bce.item(), "contrastive": contrast.item(), "swap_recall": recall.item(),
                  "consistency_acc": acc.item(), "loss": loss.item()}


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
