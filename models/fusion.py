"""The fusion model: encoders, cross-modal fusion, normality heads and score components.

Where it sits: the scorer (`models.scorer`) and the training loop (`models.train`) both call
`FusionModel`; its input is a `WindowBatch` from `models.features`, its output a typed
`FusionOutput`. This file holds the whole forward pass (nanoGPT habit); the encoders are in
`models.encoders`.

One class, three fusion variants, so that baselines share encoders, objectives and budget:

- ``cross`` (the product): MulT-style cross-modal transformer (Tsai et al. 2019,
  https://arxiv.org/abs/1906.00295): each modality's tokens attend to the other modalities'
  tokens, then joint self-attention over all tokens with a summary token.
- ``concat``: per-modality mean-pooled embeddings, concatenated, through an MLP (early fusion).
- ``late``: no fusion at all; per-modality detectors whose scores are combined (single-modality
  baselines are the individual components of this variant).

Objectives (no labels needed):

- *intra-modal normality*: frame and log-mel autoencoders (reconstruction error, per pixel / per
  mel band, which also localises the evidence), a memory bank of normal log-line embeddings
  (nearest-neighbour novelty, as PatchCore does for image patches, plus codes never seen in
  training) and the log rate (its normal tail, like every component's, is fitted later);
- *cross-modal consistency*: "replaced modality detection" — one modality of a window is swapped
  with the same modality of another window of the same asset, and a head learns, per modality,
  whether it belongs with the others (audio-visual correspondence, Arandjelović & Zisserman 2017,
  https://arxiv.org/abs/1705.08168; ELECTRA's replaced-token detection at modality level).

Every score component belongs to one modality, so the window score decomposes into modality
shares and a cross-modal share (`models.attribution`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.adaptation import BaselineConfig, adapt_table
from models.encoders import AudioAutoencoder, AudioStateEncoder, FrameAutoencoder, FrameStateEncoder, LogEncoder, time_features
from models.features import CHANNELS, MODALITIES, SPEAKERS, FeatureConfig, WindowBatch

if TYPE_CHECKING:
    from pydantic import ConfigDict

    from models.framememo import FrameMemo

# Score components: (name, modality, cross-modal?). Order is the order of FusionOutput.components.
COMPONENTS: tuple[tuple[str, str, bool], ...] = (
    ("frames", "frames", False),  # frame autoencoder: residual reconstruction error (local defects)
    ("frame_stats", "frames", False),  # density of the frames' feature statistics (blur, occlusion, lighting)
    ("frame_detail", "frames", False),  # detail autoencoder on the product region at full resolution (small defects)
    ("audio", "audio", False),  # log-mel autoencoder: largest error cells (bursts, tones)
    ("audio_band", "audio", False),  # most unusual band of the time-averaged error (sustained tones)
    ("logs", "logs", False),
    ("log_rate", "logs", False),
    ("cross_frames", "frames", True),
    ("cross_audio", "audio", True),
    ("cross_logs", "logs", True),
)
COMPONENT_NAMES = tuple(c[0] for c in COMPONENTS)
INTRA_NAMES = tuple(c[0] for c in COMPONENTS if not c[2])


FusionVariant = Literal["cross", "concat", "late"]  # cross-attention, concatenation, late (no fusion)


@dataclass
class FusionConfig:
    # `from_dict` parses with pydantic: a key this code does not know (here or in `features`) is an
    # error, not a setting silently dropped
    __pydantic_config__: ClassVar[ConfigDict] = {"extra": "forbid"}

    fusion: FusionVariant = "cross"
    d_model: int = 64
    n_heads: int = 4
    cross_layers: int = 1  # MulT cross-modal blocks per target modality
    joint_layers: int = 1  # self-attention over all tokens after the cross-modal blocks
    ff_mult: int = 2
    dropout: float = 0.1
    frame_channels: tuple[int, int, int] = (16, 32, 48)  # frame autoencoder
    frame_bottleneck: int = 8  # AE code channels at 1/8 resolution: small enough that defects are not copied
    # Frames are decoded at `features.frame_size`; the scene path (frame autoencoder, statistics,
    # state encoder) sees them mean-pooled by `scene_pool`, and the rows `detail_rows` (the product
    # region: the belt band of an inspection camera) are scored at the decoded resolution by a
    # second autoencoder of the same shape. A defect of a few pixels at 1/4 of the camera's size is
    # below the scene autoencoder's normal error floor (docs/model.md, "Limitations"); at 1/2 it is
    # not. None: no detail view (the component is masked).
    scene_pool: int = 1
    detail_rows: tuple[int, int] | None = None
    detail_topk: int = 128  # pixels per frame of the detail score (a stain at 1/2 scale is ~30 after smoothing)
    audio_channels: tuple[int, int, int] = (8, 16, 32)  # log-mel autoencoder
    audio_bottleneck: int = 16  # AE code per 80 ms step, dense over frequency, so a new tone is not copied
    frame_state_channels: tuple[int, int, int] = (16, 32, 48)  # state encoders feeding the fusion
    audio_state_channels: tuple[int, int, int] = (8, 16, 32)
    smooth_max_tau: float = 0.5  # score = tau * logsumexp(surprise / tau): close to the max, but smooth
    # the log novelty of a window is held for this long over the asset's next windows: a log line
    # is a point event in a continuing fault (models/logmemory.py); 0 turns it off
    log_memory_s: float = 3.0
    # each asset's own baseline (models/adaptation.py): learned from its first `learn_windows`
    # windows (none judged before `judge_after`), then followed by sign steps of `adapt_step` nats
    # per window; while an asset learns only `learning_guard` x its threshold opens an event.
    # adapt_step 0 turns the baseline off.
    adapt_step: float = 0.01
    learn_windows: int = 120
    judge_after: int = 20
    learning_guard: float = 2.0
    # each frame scaled to the normal frames' mean brightness before any frame path sees it: the
    # night shift's dimmer hall, a lamp dip or an auto-exposure step is not a visual anomaly, while
    # a local defect keeps its contrast. `light_ref` is fitted on training frames (0: not fitted).
    normalise_light: bool = True
    light_ref: float = 0.0
    kind_classes: list[str] = field(default_factory=list)  # optional defect-kind head (labels needed)
    sentiment_classes: list[str] = field(default_factory=list)  # optional call-centre heads
    frustration_head: bool = False
    # call-centre inputs (off for the factory): a learned embedding of who said each transcript
    # line added to its token, and a stereo call's agent and customer channels as audio tokens of
    # their own (with a channel embedding) instead of their mix
    speaker_embedding: bool = False
    channel_audio: bool = False
    features: FeatureConfig = field(default_factory=FeatureConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.features, dict):
            self.features = FeatureConfig(**self.features)
        for name in ("frame_channels", "audio_channels", "frame_state_channels", "audio_state_channels"):
            setattr(self, name, tuple(getattr(self, name)))
        fc = self.features
        if self.scene_pool < 1 or fc.frame_height % (4 * self.scene_pool) or fc.frame_width % (4 * self.scene_pool):
            raise ValueError(f"frame size {fc.frame_size} must be a multiple of 4 x scene_pool ({self.scene_pool})")
        if self.detail_rows is not None:
            r0, r1 = self.detail_rows
            self.detail_rows = (r0, r1)
            if not (0 <= r0 < r1 <= fc.frame_height) or (r1 - r0) % 8:
                raise ValueError(f"detail_rows {self.detail_rows} must lie inside the {fc.frame_height} decoded rows "
                                 "and span a multiple of 8 rows")
        if self.fusion not in ("cross", "concat", "late"):
            raise ValueError(f"fusion must be cross, concat or late, not {self.fusion!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if self.smooth_max_tau <= 0:
            raise ValueError("smooth_max_tau must be positive")
        if self.log_memory_s < 0:
            raise ValueError("log_memory_s must be >= 0 (0: no memory)")
        _ = self.baseline  # building it validates adapt_step, learn_windows, judge_after
        if self.learning_guard < 1.0:
            raise ValueError("learning_guard must be >= 1 (a multiple of the threshold)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def scene_features(self) -> FeatureConfig:
        """The feature config as the scene path sees it (frames `scene_pool` times smaller)."""
        fc, k = self.features, self.scene_pool
        return replace(fc, frame_width=fc.frame_width // k, frame_height=fc.frame_height // k)

    @property
    def detail_features(self) -> FeatureConfig | None:
        if self.detail_rows is None:
            return None
        r0, r1 = self.detail_rows
        return replace(self.features, frame_height=r1 - r0)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FusionConfig":
        """The config of its JSON form (`to_dict`), each field checked against its type (pydantic:
        lists become the tuples they stand for, `features` a `FeatureConfig`); an unknown key or a
        value of the wrong type raises `pydantic.ValidationError` (a ValueError)."""
        from pydantic import TypeAdapter

        # checkpoints saved before the log memory, the adaptation or the light normalisation were
        # calibrated without them; the sign-step adaptation's warm-up became the learning length
        d = dict(d)
        if "adapt_warmup" in d:
            d["learn_windows"] = d.pop("adapt_warmup")
            d.setdefault("judge_after", 0)
        return TypeAdapter(cls).validate_python({"log_memory_s": 0.0, "adapt_step": 0.0, "normalise_light": False, **d})

    @property
    def baseline(self) -> BaselineConfig:
        return BaselineConfig(self.adapt_step, self.learn_windows, self.judge_after)

    @classmethod
    def tiny(cls, **kw: Any) -> "FusionConfig":
        """Hidden size 32, small CNNs, 1+1 layers: for tests and smoke runs (trains in seconds)."""
        base: dict[str, Any] = dict(
            d_model=32, n_heads=2, frame_channels=(8, 16, 16), frame_bottleneck=4, audio_channels=(4, 8, 16),
            audio_bottleneck=8, frame_state_channels=(8, 16, 16), audio_state_channels=(4, 8, 16), dropout=0.0)
        base.update(kw)
        return cls(**base)


@dataclass
class Tokens:
    """Encoded modalities; what the swap augmentation exchanges between windows."""

    frame_tokens: torch.Tensor  # (B, T_f, D)
    frame_mask: torch.Tensor  # (B, T_f) bool
    audio_tokens: torch.Tensor  # (B, T_a', D)
    audio_mask: torch.Tensor  # (B, T_a') bool
    log_tokens: torch.Tensor  # (B, 1 + L, D): a rate/summary token, then one per line
    log_mask: torch.Tensor  # (B, 1 + L) bool

    def present(self) -> torch.Tensor:  # (B, 3)
        return torch.stack([self.frame_mask.any(1), self.audio_mask.any(1), self.log_mask.any(1)], dim=1)

    def swap(self, modality: torch.Tensor, partner: torch.Tensor) -> "Tokens":
        """Window i takes modality `modality[i]` (0/1/2, -1 none) from window `partner[i]`."""
        parts = [[self.frame_tokens, self.frame_mask], [self.audio_tokens, self.audio_mask], [self.log_tokens, self.log_mask]]
        out = []
        for m, (tok, mask) in enumerate(parts):
            take = (modality == m)
            tok = torch.where(take[:, None, None], tok[partner], tok)
            mask = torch.where(take[:, None], mask[partner], mask)
            out += [tok, mask]
        return Tokens(*out)


@dataclass
class FusionOutput:
    components: torch.Tensor  # (B, C) raw score components, see COMPONENTS
    component_mask: torch.Tensor  # (B, C) bool: component defined for this window
    consistency_logits: torch.Tensor  # (B, 3) "this modality does not belong" logits (zeros for late)
    summary: torch.Tensor  # (B, D) window summary (for optional heads)
    frame_error: torch.Tensor  # (B, T_f, H, W) per-pixel reconstruction error (smoothed)
    frame_scores: torch.Tensor  # (B, T_f) per-frame score: mean of the frame's top-k pixel errors
    detail_error: torch.Tensor | None  # (B, T_f, h, W) the same for the detail view (None without one)
    detail_scores: torch.Tensor | None  # (B, T_f)
    mel_error: torch.Tensor  # (B, n_mels, T_a) per-bin reconstruction error of normalised log-mel
    line_novelty: torch.Tensor  # (B, L) per-line novelty (0 for padding)
    attention_to: dict[str, torch.Tensor] = field(default_factory=dict)  # key modality -> (B, T_key) received attention
    kind_logits: torch.Tensor | None = None
    sentiment_logits: torch.Tensor | None = None
    frustration: torch.Tensor | None = None


# ── fusion blocks ────────────────────────────────────────────────────────────────────────────

class Attention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor,
                want_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, Tq, D = x.shape
        h = self.heads
        q = self.q(x).view(B, Tq, h, D // h).transpose(1, 2)  # (B, h, Tq, D/h)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, h, D // h).permute(2, 0, 3, 1, 4)  # 2 x (B, h, Tk, D/h)
        mask = ctx_mask[:, None, None, :]  # (B, 1, 1, Tk), True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        weights = None
        if want_weights:  # attribution only: SDPA does not return the weights
            logits = (q @ k.transpose(-1, -2)) / math.sqrt(D // h)
            weights = logits.masked_fill(~mask, float("-inf")).softmax(-1).mean(1)  # (B, Tq, Tk)
        return self.out(y.transpose(1, 2).reshape(B, Tq, D)), weights


class Block(nn.Module):
    """Pre-norm transformer block; cross-attention when `ctx` differs from the queries."""

    def __init__(self, d: int, heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.ln_q, self.ln_kv, self.ln_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_mult * d, d))

    def forward(self, x, ctx, ctx_mask, want_weights=False):
        y, w = self.attn(self.ln_q(x), self.ln_kv(ctx), ctx_mask, want_weights)
        x = x + y
        return x + self.ff(self.ln_ff(x)), w


class CrossModalFusion(nn.Module):
    """MulT: for each target modality, its tokens attend to the other two modalities' tokens.

    A learned null token is always present among the keys, so a window whose other modalities are
    all missing still has something to attend to (no NaN, and "no evidence" is representable).
    """

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        d = cfg.d_model
        self.cross = nn.ModuleList([nn.ModuleList([Block(d, cfg.n_heads, cfg.ff_mult, cfg.dropout)
                                                   for _ in range(cfg.cross_layers)]) for _ in MODALITIES])
        self.joint = nn.ModuleList([Block(d, cfg.n_heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.joint_layers)])
        self.null = nn.Parameter(torch.zeros(1, 1, d))
        self.summary_token = nn.Parameter(torch.zeros(1, 1, d))
        self.ln = nn.LayerNorm(d)
        nn.init.normal_(self.null, std=0.02)
        nn.init.normal_(self.summary_token, std=0.02)

    def forward(self, tok: Tokens, want_weights: bool = False):
        seqs = [tok.frame_tokens, tok.audio_tokens, tok.log_tokens]
        masks = [tok.frame_mask, tok.audio_mask, tok.log_mask]
        B = seqs[0].shape[0]
        null = self.null.expand(B, 1, -1)
        one = torch.ones(B, 1, dtype=torch.bool, device=null.device)
        attention_to = {m: torch.zeros(B, s.shape[1], device=null.device) for m, s in zip(MODALITIES, seqs)}
        fused = []
        for t, (blocks, x) in enumerate(zip(self.cross, seqs)):
            others = [i for i in range(3) if i != t]
            ctx = torch.cat([null] + [seqs[i] for i in others], dim=1)  # (B, 1 + T_o1 + T_o2, D)
            ctx_mask = torch.cat([one] + [masks[i] for i in others], dim=1)
            assert isinstance(blocks, nn.ModuleList), "self.cross holds one ModuleList of blocks per modality"
            for block in blocks:
                x, w = block(x, ctx, ctx_mask, want_weights)
                if w is not None:  # attention the target's valid tokens pay to each other modality's tokens
                    w = (w * masks[t][:, :, None]).sum(1) / masks[t].sum(1, keepdim=True).clamp_min(1)  # (B, Tk)
                    pos = 1
                    for i in others:
                        n = seqs[i].shape[1]
                        attention_to[MODALITIES[i]] += w[:, pos:pos + n]
                        pos += n
            fused.append(x)
        # joint layers: every token (and the summary token) sees every other token
        all_tokens = torch.cat([self.summary_token.expand(B, 1, -1)] + fused, dim=1)  # (B, 1 + ΣT, D)
        all_mask = torch.cat([one] + masks, dim=1)
        for block in self.joint:
            all_tokens, _ = block(all_tokens, all_tokens, all_mask)
        all_tokens = self.ln(all_tokens)
        summary = all_tokens[:, 0]  # (B, D)
        pooled, pos = [], 1
        for s, m in zip(seqs, masks):
            n = s.shape[1]
            pooled.append(_masked_mean(all_tokens[:, pos:pos + n], m))  # (B, D)
            pos += n
        return summary, pooled, attention_to


class ConcatFusion(nn.Module):
    """Early-fusion baseline: mean-pooled modality embeddings, concatenated, through an MLP."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        d = cfg.d_model
        self.missing = nn.Parameter(torch.zeros(3, d))
        self.per_modality = nn.ModuleList([nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU()) for _ in MODALITIES])
        # width chosen so parameters are close to the cross-attention variant's
        hidden = 4 * d
        self.joint = nn.Sequential(nn.Linear(3 * d + 3, hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                   nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, d))
        self.ln = nn.LayerNorm(d)
        self.back = nn.ModuleList([nn.Linear(2 * d, d) for _ in MODALITIES])

    def forward(self, tok: Tokens, want_weights: bool = False):
        seqs = [tok.frame_tokens, tok.audio_tokens, tok.log_tokens]
        masks = [tok.frame_mask, tok.audio_mask, tok.log_mask]
        present = tok.present().float()  # (B, 3)
        z = []
        for i, (s, m, mlp) in enumerate(zip(seqs, masks, self.per_modality)):
            zi = mlp(_masked_mean(s, m))  # (B, D)
            z.append(torch.where(m.any(1, keepdim=True), zi, self.missing[i].expand_as(zi)))
        summary = self.ln(self.joint(torch.cat(z + [present], dim=1)))  # (B, D)
        pooled = [self.ln(back(torch.cat([zi, summary], dim=1))) for zi, back in zip(z, self.back)]
        return summary, pooled, {}


def float_frames(frames: torch.Tensor) -> torch.Tensor:
    """Frames as the model reads them, float32 in [0, 1]: uint8 ones (`collate(...,
    float_frames=False)`) converted exactly as `collate` converts them."""
    return frames.float().div_(255.0) if frames.dtype == torch.uint8 else frames


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


# ── the model ────────────────────────────────────────────────────────────────────────────────

class FusionModel(nn.Module):
    """Intra-modal part (autoencoders, line memory, rate density) + fusion part (state encoders,
    cross-modal fusion, consistency head). The two parts share no parameters, so the intra part
    can be trained once and shared by every fusion variant (same encoders, same budget)."""

    INTRA_PREFIXES = ("frames.", "audio.", "detail.")
    HEAD_PREFIXES = ("kind_head.", "sentiment_head.", "frustration_head.")
    # buffers (`register_buffer` in __init__), which torch's stubs type as `Tensor | Module`
    mel_mean: torch.Tensor
    mel_std: torch.Tensor
    line_bank: torch.Tensor
    stats_mean: torch.Tensor
    stats_precision: torch.Tensor
    band_mean: torch.Tensor
    band_std: torch.Tensor

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        fc, d = cfg.features, cfg.d_model
        torch.manual_seed(cfg.seed)
        self.frames = FrameAutoencoder(cfg.scene_features, cfg.frame_channels, cfg.frame_bottleneck)
        self.detail = (FrameAutoencoder(cfg.detail_features, cfg.frame_channels, cfg.frame_bottleneck)
                       if cfg.detail_features is not None else None)
        if self.detail is not None:
            self.detail.topk = cfg.detail_topk
        self.audio = AudioAutoencoder(fc, cfg.audio_channels, cfg.audio_bottleneck)
        self.fusion: nn.Module | None = None
        if cfg.fusion != "late":
            self.frame_state = FrameStateEncoder(cfg.frame_state_channels, d)
            self.audio_state = AudioStateEncoder(fc, cfg.audio_state_channels, d)
            self.logs = LogEncoder(d)
            self.modality_embed = nn.Parameter(torch.zeros(3, d))
            self.time_proj = nn.Linear(8, d)
            self.fusion = CrossModalFusion(cfg) if cfg.fusion == "cross" else ConcatFusion(cfg)
            # per-modality "does not belong" head, shared over modalities
            self.consistency = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1))
            # projections for the auxiliary contrastive objective on the state encoders (training only)
            self.contrast = nn.ModuleList([nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d)) for _ in MODALITIES])
        elif cfg.kind_classes or cfg.sentiment_classes or cfg.frustration_head:
            raise ValueError("label heads sit on the fused window summary: use fusion 'cross' or 'concat'")
        self.kind_head = nn.Linear(d, len(cfg.kind_classes)) if cfg.kind_classes else None
        self.sentiment_head = nn.Linear(d, len(cfg.sentiment_classes)) if cfg.sentiment_classes else None
        self.frustration_head = nn.Linear(d, 1) if cfg.frustration_head else None
        if (cfg.speaker_embedding or cfg.channel_audio) and cfg.fusion == "late":
            raise ValueError("speaker and channel inputs feed the fusion: use fusion 'cross' or 'concat'")
        # zero-initialised: a model starts as if it had no speaker/channel input (no RNG drawn, so
        # every other parameter is initialised exactly as without them)
        self.speaker_embed = nn.Parameter(torch.zeros(len(SPEAKERS), d)) if cfg.speaker_embedding else None
        self.channel_embed = nn.Parameter(torch.zeros(1 + len(CHANNELS), d)) if cfg.channel_audio else None
        # Fitted on normal data (not by gradient), saved with the weights: log-mel normalisation,
        # the normal log-line memory bank, the frame-statistics Gaussian, and each score
        # component's normal tail (`tails`).
        self.register_buffer("mel_mean", torch.zeros(fc.n_mels))
        self.register_buffer("mel_std", torch.ones(fc.n_mels))
        self.register_buffer("line_bank", torch.zeros(0, 384))
        n_stats = 2 * (cfg.frame_channels[0] + cfg.frame_channels[1])
        self.register_buffer("stats_mean", torch.zeros(n_stats))
        self.register_buffer("stats_precision", torch.eye(n_stats))
        self.register_buffer("band_mean", torch.zeros(fc.n_mels))  # normal time-averaged log-mel error per band
        self.register_buffer("band_std", torch.ones(fc.n_mels))
        # per component: the survival function on held-out normal windows (see `ComponentTails`)
        self.tails = ComponentTails(len(COMPONENTS))
        self.code_vocab: frozenset[str] = frozenset()
        # per-frame results kept across overlapping windows (`models/framememo.py`); the scorer
        # installs one on CPU, training and evaluation never do
        self.frame_memo: FrameMemo | None = None

    # buffers whose size depends on the data are resized on load
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("line_bank",):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def intra_parameters(self) -> list[nn.Parameter]:
        """The scene and log-mel autoencoders (training phase "intra")."""
        return [p for n, p in self.named_parameters() if n.startswith(("frames.", "audio."))]

    def detail_parameters(self) -> list[nn.Parameter]:
        """The detail autoencoder (training phase "detail"; empty without a detail view)."""
        return list(self.detail.parameters()) if self.detail is not None else []

    def fusion_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith(self.INTRA_PREFIXES + self.HEAD_PREFIXES)]

    # ── intra-modal evidence ─────────────────────────────────────────────────────────────────
    def normalise_mel(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.mel_mean[None, :, None]) / self.mel_std[None, :, None]

    def scene_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Decoded frames (..., 3, H, W) -> what the scene path sees: light-normalised
        (`normalise_light`), mean-pooled by `scene_pool`."""
        return self._pool(self.light(float_frames(frames)))

    def _pool(self, frames: torch.Tensor) -> torch.Tensor:
        k = self.cfg.scene_pool
        if k == 1:
            return frames
        if k == 2:  # four strided views: bit-identical to avg_pool2d, half its CPU time
            return (frames[..., 0::2, 0::2] + frames[..., 0::2, 1::2] + frames[..., 1::2, 0::2]
                    + frames[..., 1::2, 1::2]) * 0.25
        lead = frames.shape[:-3]
        pooled = F.avg_pool2d(frames.reshape(-1, *frames.shape[-3:]), k)
        return pooled.reshape(*lead, *pooled.shape[1:])

    def light(self, frames: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """Frames (..., 3, H, W) scaled so that each one's mean brightness — that of `like`, when
        given (a crop is scaled by its whole frame's gain) — is the normal frames' (`light_ref`).
        One gain per frame, so each frame's result depends on that frame alone (the frame memo)."""
        if not (self.cfg.normalise_light and self.cfg.light_ref > 0):
            return frames
        ref = frames if like is None else like
        gain = self.cfg.light_ref / ref.float().mean(dim=(-3, -2, -1), keepdim=True).clamp_min(0.02)
        return (frames * gain.to(frames.dtype)).clamp_(0.0, 1.0)

    def frame_evidence(self, frames: torch.Tensor, scene: torch.Tensor,
                       lit: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """What scoring needs of each decoded frame (n, 3, H, W) — given with its scene view `scene`
        (`scene_frames`) — from that frame alone (the frame memo keeps it across overlapping
        windows): the scene residual (n, H/k, W/k) and feature statistics (n, S), then the detail
        residual (n, h, W) when the model has a detail view. `lit`: `light(frames)`, when the
        caller has it (the detail rows are cut from it instead of lit again)."""
        err, stats = self.frames.residual(scene)
        if self.detail is None:
            return err, stats
        assert self.cfg.detail_rows is not None, "the detail view is built from detail_rows"
        r0, r1 = self.cfg.detail_rows
        crop = lit[:, :, r0:r1] if lit is not None else self.light(frames[:, :, r0:r1], like=frames)
        detail_err, _ = self.detail.residual(crop, with_stats=False)
        return err, stats, detail_err

    def frame_parts(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Everything the forward pass needs of each decoded frame (n, 3, H, W), float or uint8
        (`float_frames`), from that frame alone: `frame_evidence`, then the scene view (n, 3, H/k,
        W/k) the state encoder reads. The frame memo keeps all of it, so a frame seen in the
        previous window is neither converted to float, lit, pooled nor autoencoded again."""
        frames = float_frames(frames)
        lit = self.light(frames)
        scene = self._pool(lit)
        return (*self.frame_evidence(frames, scene, lit), scene)

    def reconstruct(self, batch: WindowBatch):
        """Per-frame evidence (`frame_evidence`) and the scene view (`frame_parts`'s last), each as
        (B, T_f, ...) with zeros for missing frames (what the scene view of a zero frame is); the
        normalised log-mel (B, M, T) and its reconstruction (B, M, T). `forward` runs it with
        autocast off (float32 evidence)."""
        B, T = batch.frames.shape[:2]
        sel = batch.frame_mask.flatten()
        every = bool(sel.all())  # the common case: no copy of the frames

        def present(x: torch.Tensor) -> torch.Tensor:
            return x.flatten(0, 1) if every else x.flatten(0, 1)[sel]

        frames = present(batch.frames)
        if self.frame_memo is not None and not self.training:
            pixels = present(batch.frame_pixels) if batch.frame_pixels is not None else None
            evidence = self.frame_memo.evidence(self.frame_parts, (frames,), pixels)
        else:
            evidence = self.frame_parts(frames)
        mel = self.normalise_mel(batch.mel)
        mel_recon = self.audio(mel, batch.audio_mask)

        def per_slot(x: torch.Tensor) -> torch.Tensor:
            if not every:
                full = x.new_zeros(B * T, *x.shape[1:])
                full[sel] = x
                x = full
            return x.reshape(B, T, *x.shape[1:])

        return tuple(per_slot(x) for x in evidence), mel, mel_recon

    def window_frame_stats(self, frame_stats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, S): the frames' feature statistics averaged over the window's frames."""
        return _masked_mean(frame_stats.float(), mask)

    @staticmethod
    def band_profile(mel_error: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, M): each band's reconstruction error averaged over the window's received frames."""
        return mel_error.sum(2) / mask.float().sum(1, keepdim=True).clamp_min(1.0)

    def band_z(self, mel_error: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, M): the band profile standardised per band against normal windows. A sustained
        narrow tone (an imbalance line at 1x shaft speed, a squeal) raises one or two bands for the
        whole window; the top-cells score dilutes it among the machine's normal transients, this
        does not — and low bands, noisy in normal operation, do not drown everything else."""
        return (self.band_profile(mel_error.float(), mask) - self.band_mean) / self.band_std

    def stats_distance(self, window_stats: torch.Tensor) -> torch.Tensor:
        """(B,): Mahalanobis distance of the window's frame statistics to normal ones, per dimension."""
        d = window_stats - self.stats_mean
        return (torch.einsum("bi,ij,bj->b", d, self.stats_precision, d).clamp_min(0) / d.shape[1]).sqrt()

    # ── fusion ───────────────────────────────────────────────────────────────────────────────
    def tokens(self, batch: WindowBatch, scene: torch.Tensor | None = None) -> Tokens:
        """Per-modality state tokens with modality and time embeddings; `scene`: the batch's scene
        view (`scene_frames`), when the caller has it already."""
        B = batch.batch_size
        scene = self.scene_frames(batch.frames) if scene is None else scene
        frame_tokens = self.frame_state(scene, batch.frame_mask)  # (B, T_f, D)
        audio_tokens, audio_mask = self.audio_state(self.normalise_mel(batch.mel), batch.audio_mask)  # (B, T_a/4, D)
        log_tokens, log_mask = self.logs(batch.log_emb, batch.log_levels, batch.log_code_state, batch.log_mask,
                                         batch.log_count, batch.log_present)  # (B, 1 + L, D)
        dev, dt = frame_tokens.device, frame_tokens.dtype
        t_audio = ((torch.arange(audio_tokens.shape[1], device=dev, dtype=dt) + 0.5) / audio_tokens.shape[1]).expand(B, -1)
        if self.channel_embed is not None:
            audio_tokens, audio_mask, t_audio = self._channel_tokens(batch, audio_tokens, audio_mask, t_audio)
        if self.speaker_embed is not None and batch.log_speakers is not None:
            spk = torch.cat([torch.zeros_like(batch.log_speakers[:, :1]), batch.log_speakers], dim=1)  # rate token: 0
            log_tokens = log_tokens + self.speaker_embed.to(dt)[spk]
        t_logs = torch.cat([torch.full((B, 1), 0.5, device=dev, dtype=dt), batch.log_times.to(dt)], dim=1)
        me = self.modality_embed.to(dt)
        return Tokens(
            frame_tokens + me[0] + self.time_proj(time_features(batch.frame_times.to(dt))), batch.frame_mask,
            audio_tokens + me[1] + self.time_proj(time_features(t_audio)), audio_mask,
            log_tokens + me[2] + self.time_proj(time_features(t_logs)), log_mask,
        )

    def _channel_tokens(self, batch: WindowBatch, mixed: torch.Tensor, mixed_mask: torch.Tensor, t_mixed: torch.Tensor):
        """Audio tokens [mix, agent channel, customer channel], each with its channel embedding. A
        stereo window's mix is masked (its channels say more); a mono window (no channel audio,
        e.g. a live monitor that decodes to mono) keeps its mix and masks the channel slots."""
        assert self.channel_embed is not None, "called by `tokens` only for a model with channel audio"
        ce = self.channel_embed.to(mixed.dtype)
        B, T, D = mixed.shape
        if batch.channel_mel is None:
            return mixed + ce[0], mixed_mask, t_mixed
        C = batch.channel_mel.shape[1]
        mel = self.normalise_mel(batch.channel_mel.flatten(0, 1))  # (B*C, M, T_a)
        tok, mask = self.audio_state(mel, batch.channel_mask.flatten(0, 1))
        tok = tok.reshape(B, C, T, D) + ce[1:, None, :]
        mask = mask.reshape(B, C, T)
        stereo = mask.any(2).any(1, keepdim=True)  # (B, 1)
        tokens = torch.cat([(mixed + ce[0])[:, None], tok], dim=1).flatten(1, 2)  # (B, (1 + C) T, D)
        masks = torch.cat([(mixed_mask & ~stereo)[:, None], mask], dim=1).flatten(1, 2)
        return tokens, masks, t_mixed.repeat(1, 1 + C)

    def modality_embeddings(self, tokens: Tokens) -> torch.Tensor:
        """(B, 3, D) unit-norm pooled state embedding per modality (contrastive objective)."""
        seqs = [(tokens.frame_tokens, tokens.frame_mask), (tokens.audio_tokens, tokens.audio_mask),
                (tokens.log_tokens, tokens.log_mask)]
        z = [proj(_masked_mean(t, m)) for proj, (t, m) in zip(self.contrast, seqs)]
        return F.normalize(torch.stack(z, dim=1), dim=-1)

    def fuse(self, tokens: Tokens, want_weights: bool = False):
        """(consistency logits (B, 3), summary (B, D), attention_to)."""
        assert self.fusion is not None, "the late variant has no fusion: callers check `self.fusion` first"
        summary, pooled, attention_to = self.fusion(tokens, want_weights)
        logits = torch.cat([self.consistency(torch.cat([p, summary], dim=1)) for p in pooled], dim=1)  # (B, 3)
        return logits, summary, attention_to

    # ── scoring ──────────────────────────────────────────────────────────────────────────────
    def forward(self, batch: WindowBatch, want_weights: bool = False) -> FusionOutput:
        B = batch.batch_size
        # The intra-modal evidence in float32 even under bf16 autocast: the components are small
        # differences (reconstruction errors, 1 - cosine, Mahalanobis distances) whose normal tails
        # are fitted in float32; bf16's rounding is of their size (docs/model.md, "GPU and bf16";
        # tests/test_models.py, the bf16 tests). Only the fusion below runs in bf16.
        with torch.autocast(batch.mel.device.type, enabled=False):
            # the scene view once, for the evidence and the state encoder (the memo keeps it per frame)
            (frame_residual, frame_stats, *detail_residual, scene), mel, mel_recon = self.reconstruct(batch)
            frame_error = self.frames.error_map(frame_residual, batch.frame_mask)  # (B, T_f, H, W)
            frame_scores = self.frames.frame_scores(frame_error)  # (B, T_f)
            frame_comp = _masked_max(frame_scores, batch.frame_mask)  # (B,)
            detail_error = detail_scores = None
            detail_comp = torch.zeros_like(frame_comp)
            if detail_residual:
                assert self.detail is not None, "only the detail view gives a detail residual"
                detail_error = self.detail.error_map(detail_residual[0], batch.frame_mask)  # (B, T_f, h, W)
                detail_scores = self.detail.frame_scores(detail_error)  # (B, T_f)
                detail_comp = _masked_max(detail_scores, batch.frame_mask)
            stats_comp = self.stats_distance(self.window_frame_stats(frame_stats, batch.frame_mask))  # (B,)
            mel_error = (mel - mel_recon).pow(2) * batch.audio_mask[:, None, :]  # (B, n_mels, T_a)
            audio_comp = self.audio.window_score(mel_error, batch.audio_mask)  # (B,)
            band_comp = self.band_z(mel_error, batch.audio_mask).max(1).values  # (B,)
            novelty = self.line_novelty(batch)  # (B, L)
            log_comp = novelty.max(1).values  # (B,); 0 when no line
            rate_comp = torch.log1p(batch.log_count.float())  # (B,); how unusual it is comes from its normal tail
        present = batch.present()  # (B, 3)
        if self.fusion is not None:
            logits, summary, attention_to = self.fuse(self.tokens(batch, scene), want_weights)
            logits, summary = logits.float(), summary.float()
            attention_to = {k: v.float() for k, v in attention_to.items()}
        else:
            logits = torch.zeros(B, 3, device=mel.device)
            summary = torch.zeros(B, self.cfg.d_model, device=mel.device)
            attention_to = {}
        cross = F.softplus(logits)  # (B, 3): -log P(belongs)
        values = {"frames": frame_comp, "frame_stats": stats_comp, "frame_detail": detail_comp, "audio": audio_comp,
                  "audio_band": band_comp, "logs": log_comp, "log_rate": rate_comp,
                  "cross_frames": cross[:, 0], "cross_audio": cross[:, 1], "cross_logs": cross[:, 2]}
        cross_ok = present & (present.sum(1, keepdim=True) >= 2) & (self.fusion is not None)
        idx = {m: i for i, m in enumerate(MODALITIES)}
        comps = torch.stack([values[name] for name in COMPONENT_NAMES], dim=1)  # (B, C)
        comp_mask = torch.stack([(cross_ok if is_cross else present)[:, idx[modality]]
                                 for _, modality, is_cross in COMPONENTS], dim=1)  # (B, C)
        if self.detail is None:
            comp_mask[:, COMPONENT_NAMES.index("frame_detail")] = False
        out = FusionOutput(
            components=comps.float(), component_mask=comp_mask, consistency_logits=logits, summary=summary,
            frame_error=frame_error, frame_scores=frame_scores, detail_error=detail_error, detail_scores=detail_scores,
            mel_error=mel_error, line_novelty=novelty,
            attention_to=attention_to,
        )
        if self.kind_head is not None:
            out.kind_logits = self.kind_head(summary)
        if self.sentiment_head is not None:
            out.sentiment_logits = self.sentiment_head(summary)
        if self.frustration_head is not None:
            out.frustration = torch.sigmoid(self.frustration_head(summary)).squeeze(1)
        return out

    def cross_components(self, batch: WindowBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the cross-modal components (B, 3) and their mask — skips the autoencoders (the
        evaluation shares intra-modal components between variants with the same encoders)."""
        present = batch.present()
        if self.fusion is None:
            return torch.zeros(batch.batch_size, 3), torch.zeros(batch.batch_size, 3, dtype=torch.bool)
        logits, _, _ = self.fuse(self.tokens(batch))
        return F.softplus(logits.float()), present & (present.sum(1, keepdim=True) >= 2)

    def intra_state(self) -> dict[str, torch.Tensor]:
        """Everything the intra-modal components depend on (to tell whether two models share them)."""
        keys = ("mel_mean", "mel_std", "line_bank", "stats_mean", "stats_precision", "band_mean", "band_std")
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.INTRA_PREFIXES) or k in keys}

    def line_novelty(self, batch: WindowBatch) -> torch.Tensor:
        """1 - cosine similarity to the nearest normal line; 1 for a log code never seen in training."""
        from models.features import CODE_UNKNOWN

        emb = batch.log_emb.float()  # (B, L, 384), unit norm
        if self.line_bank.shape[0]:
            sim = torch.einsum("bld,nd->bln", emb, self.line_bank.float()).max(-1).values  # (B, L)
            nov = (1.0 - sim).clamp_min(0.0)
        else:
            nov = torch.zeros(emb.shape[:2], device=emb.device)
        nov = torch.maximum(nov, (batch.log_code_state == CODE_UNKNOWN).float())
        return nov * batch.log_mask

    def combine(self, out: FusionOutput, select: torch.Tensor | None = None):
        """Raw window score and its decomposition; see `combine_components`."""
        return combine_components(self.tails(out.components), out.component_mask, self.cfg.smooth_max_tau, select)

    def combine_arrays(self, components, mask, names: tuple[str, ...] | None = None,
                       windows: tuple[np.ndarray, np.ndarray] | None = None):
        """`combine` on stored numpy component tables; `names` restricts to some components.
        `windows` (each row's asset index and start) lets each asset's surprise adapt as the
        scorer adapts it (models/adaptation.py); a model that adapts needs it."""
        select = torch.tensor([n in names for n in COMPONENT_NAMES]) if names is not None else None
        with torch.no_grad():
            surprise = self.tails.cpu()(torch.as_tensor(components))
        if self.cfg.adapt_step > 0:
            if windows is None:
                raise ValueError("this model adapts each asset's scores (adapt_step > 0): pass windows=(asset_idx, starts)")
            surprise = torch.as_tensor(adapt_table(surprise.numpy(), np.asarray(mask), windows[0], windows[1],
                                                   self.cfg.baseline), dtype=surprise.dtype)
        raw, z, w = combine_components(surprise, torch.as_tensor(mask), self.cfg.smooth_max_tau, select)
        return raw.numpy(), z.numpy(), w.numpy()

class ComponentTails(nn.Module):
    """Each score component turned into *surprise*: -log P_normal(X >= x).

    Fitted on held-out normal windows (`fit`): the empirical survival function at a few quantile
    knots (log-linear in between) and, beyond the last knot, a generalised Pareto tail
    (peaks over threshold). Components then share one scale — the log of how rare the value is in
    normal operation — whatever their units and however heavy their tails: a detector whose
    normal scores have rare huge outliers (an unusual but normal log line) is compressed, one
    with a thin tail keeps its resolution. Monotone per component, so no single-component ranking
    changes; only how components are weighed against each other.
    """

    QUANTILES = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98)  # knots; the last one is the tail threshold u
    # Smallest tail scale per component, in its own units: below it, differences carry no meaning
    # (a log line 0.05 in cosine distance from a known one is a paraphrase, not news). Without a
    # floor, a component that is exactly 0 in 98 % of normal windows gets a tail fitted on specks
    # and calls a trivial wiggle astronomically rare.
    MIN_SIGMA = {"logs": 0.1, "log_rate": 0.1, "cross_frames": 0.05, "cross_audio": 0.05, "cross_logs": 0.05}
    # And never narrower than a fifth of the body's width (98th percentile - median): a tail fitted
    # on a few very regular excesses would call a value just past them astronomically rare.
    MIN_SIGMA_OF_BODY = 0.2
    # The ceiling of any component's surprise, in nats (one normal window in ~10^13): past it the
    # tail is extrapolation, not evidence, and one component must not outweigh everything else
    # without bound (an unseen station scored 350,000 before it; docs/model.md).
    MAX_SURPRISE = 30.0
    # buffers (`register_buffer` in __init__), which torch's stubs type as `Tensor | Module`
    knots_x: torch.Tensor
    knots_logs: torch.Tensor
    tail: torch.Tensor

    def __init__(self, n: int):
        super().__init__()
        k = len(self.QUANTILES)
        # until fitted: identity-like (surprise = x above 0)
        self.register_buffer("knots_x", torch.linspace(0, 1, k).repeat(n, 1))  # (C, K), increasing
        self.register_buffer("knots_logs", -torch.linspace(0, 1, k).repeat(n, 1))  # (C, K) log survival
        self.register_buffer("tail", torch.tensor([0.0, 1.0]).repeat(n, 1))  # (C, 2): xi, sigma

    @torch.no_grad()
    def fit(self, values: list[np.ndarray], names: tuple[str, ...] | None = None) -> list[dict[str, float]]:
        """values[c]: 1-D numpy array of component c on normal windows; `names` pick the floors."""
        import numpy as np

        from models.calibration import fit_gpd

        info: list[dict[str, float]] = []
        for c, x in enumerate(values):
            x = np.sort(np.asarray(x, np.float64))
            if len(x) < 20:
                info.append({"n": int(len(x)), "fitted": False})
                continue
            q = np.quantile(x, self.QUANTILES)
            xs: list[float] = []
            logs: list[float] = []
            for v in q:  # strictly increasing knots; survival P(X >= v) read from the data
                # at the quantile itself, ties included: a knot nudged above a tied quantile must
                # not read the survival just above the tie (a flat, meaningless step would become
                # a cliff: normal log novelty is 0 or ~1e-5, and a line 1e-4 off scored 7 units)
                p = max((x >= v).mean(), 1.0 / (len(x) + 1))
                if xs and v <= xs[-1] + 1e-12:
                    v = xs[-1] + 1e-9 * max(1.0, abs(xs[-1]))
                xs.append(float(v))
                logs.append(float(np.log(p)))
            u = xs[-1]
            excess = x[x > u] - u
            xi, sigma = fit_gpd(excess, xi_bounds=(0.0, 0.5)) if len(excess) >= 5 else (0.0, max(float(np.std(x)), 1e-6))
            floor = self.MIN_SIGMA.get(names[c], 0.0) if names else 0.0
            sigma = max(sigma, floor, self.MIN_SIGMA_OF_BODY * float(q[-1] - q[1]),
                        1e-3 * (abs(float(q[1])) + float(q[-1] - q[1])))
            self.knots_x[c] = torch.tensor(xs)
            self.knots_logs[c] = torch.tensor(logs)
            self.tail[c] = torch.tensor([xi, max(sigma, 1e-9)])
            info.append({"n": int(len(x)), "median": float(q[1]), "u": u, "p_u": float(np.exp(logs[-1])), "xi": xi,
                         "sigma": float(sigma), "max_surprise_seen": float(self._surprise_np(c, x[-1]))})
        return info

    def _surprise_np(self, c: int, v: float) -> float:
        x = torch.full((1, self.knots_x.shape[0]), float(v), dtype=torch.float32, device=self.knots_x.device)
        return float(self.forward(x)[0, c])

    def forward(self, components: torch.Tensor) -> torch.Tensor:
        """(B, C) raw components -> (B, C) surprise >= 0."""
        x = components.float()
        kx, kl = self.knots_x.float(), self.knots_logs.float()  # (C, K)
        K = kx.shape[1]
        idx = torch.searchsorted(kx.contiguous(), x.T.contiguous()).T.clamp(1, K - 1)  # (B, C) right knot
        x0, x1 = kx.gather(1, (idx - 1).T).T, kx.gather(1, idx.T).T
        l0, l1 = kl.gather(1, (idx - 1).T).T, kl.gather(1, idx.T).T
        frac = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0.0, 1.0)
        logs = l0 + frac * (l1 - l0)  # inside the knots: log-linear survival
        u, lu = kx[:, -1], kl[:, -1]
        xi, sigma = self.tail[:, 0], self.tail[:, 1]
        over = (x - u).clamp_min(0.0) / sigma
        tail_logs = lu - torch.where(xi > 1e-6, torch.log1p(xi * over) / xi.clamp_min(1e-6), over)
        logs = torch.where(x > u, tail_logs, logs)
        logs = torch.where(x <= kx[:, 0], torch.zeros_like(logs), logs)
        # NaN (a non-finite input) becomes the ceiling, not a NaN that spreads into every state
        return (-logs).nan_to_num(self.MAX_SURPRISE).clamp(0.0, self.MAX_SURPRISE)


def combine_components(surprise: torch.Tensor, mask: torch.Tensor, tau: float, select: torch.Tensor | None = None):
    """Per-component surprise (-log of how rare the value is in normal operation) combined by a
    smooth maximum tau*logsumexp(s/tau): one strong piece of evidence is enough, and the softmax
    weights say how much each component contributed. `select` (C,) bool restricts the score to
    some components (the single-modality baselines).
    Returns raw (B,) (NaN when nothing is defined), surprise (B, C), weights (B, C) summing to 1
    over the defined components.
    """
    if select is not None:
        mask = mask & select.to(mask.device)
    logits = (surprise / tau).masked_fill(~mask, float("-inf"))
    raw = tau * torch.logsumexp(logits, dim=1)
    weights = torch.softmax(logits, dim=1).nan_to_num(0.0)
    raw = torch.where(mask.any(1), raw, torch.full_like(raw, float("nan")))
    return raw, surprise, weights


def _masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~mask, float("-inf")).max(1).values.clamp_min(0.0).nan_to_num(0.0, neginf=0.0)
