"""Per-modality encoders of the fusion model, each with its own normality evidence.

Where it sits: inside `models.fusion.FusionModel.encode`. Frames and audio are encoded by compact
CNNs trained here (a window is 8 frames of 80x60 and 2 s of 64-band log-mel: a CNN of ~50 k
parameters per modality runs thousands of windows a second on two CPU cores, where a patch
transformer with the same receptive field would cost several times more and needs more data
than a plant's first hours of normal operation give). Each CNN also is the encoder of an
autoencoder whose reconstruction error is the modality's intra-modal anomaly evidence and
localises it (pixels of a frame, bands of the spectrum). Log lines come pre-embedded by the frozen
MiniLM; the log encoder only projects them and adds level, code novelty and log rate.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from models.features import N_LEVELS, FeatureConfig


def time_features(t: torch.Tensor) -> torch.Tensor:
    """(B, T) positions in [0, 1] -> (B, T, 8) sinusoids (periods 2, 1, 1/2, 1/4 windows)."""
    freqs = torch.tensor([0.5, 1.0, 2.0, 4.0], device=t.device, dtype=t.dtype) * 2 * math.pi
    ang = t.unsqueeze(-1) * freqs  # (B, T, 4)
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


# oneDNN's convolution with a fused activation, as inductor uses it on CPU (absent from builds
# without oneDNN, where the layers simply run one after the other). The op namespace always
# exists; its ops may not.
_MKLDNN = torch.ops.mkldnn
_HAS_FUSED = torch.backends.mkldnn.is_available() and hasattr(_MKLDNN, "_convolution_pointwise")
_ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid}


def _fusable(x: torch.Tensor) -> bool:
    """CPU inference in float32: where the fused call gives the same numbers as the layers."""
    return (_HAS_FUSED and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu"))


def conv_act(conv: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor, act: str = "relu") -> torch.Tensor:
    """`act(conv(x))` (act: "relu" or "sigmoid") as one oneDNN call when `_fusable`: no separate
    pass of the activation over a batch's NHWC activations (the frame autoencoder: 9 % less CPU,
    the same output to ~1e-7)."""
    if not _fusable(x) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return _ACTIVATIONS[act](conv(x))
    if isinstance(conv, nn.ConvTranspose2d):
        return _MKLDNN._convolution_transpose_pointwise(
            x, conv.weight, conv.bias, list(conv.padding), list(conv.output_padding), list(conv.stride),
            list(conv.dilation), conv.groups, act, [], "")
    return _MKLDNN._convolution_pointwise(x, conv.weight, conv.bias, list(conv.padding), list(conv.stride),
                                          list(conv.dilation), conv.groups, act, [], "")


def conv2d_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, act: str, padding: int = 0) -> torch.Tensor:
    """`act(F.conv2d(x, weight, bias, padding=padding))`, fused as `conv_act`."""
    if not _fusable(x):
        return _ACTIVATIONS[act](F.conv2d(x, weight, bias, padding=padding))
    return _MKLDNN._convolution_pointwise(x, weight, bias, [padding, padding], [1, 1], [1, 1], 1, act, [], "")


_ConvT = TypeVar("_ConvT", nn.Conv2d, nn.ConvTranspose2d)


def _conv_of(block: nn.Module, kind: type[_ConvT]) -> _ConvT:
    """The convolution of a `ConvReLU` or `nn.Sequential(conv)` block: its element 0."""
    assert isinstance(block, nn.Sequential), f"a convolution block is an nn.Sequential, not {type(block).__name__}"
    conv = block[0]
    assert isinstance(conv, kind), f"element 0 of the block is a {type(conv).__name__}, not a {kind.__name__}"
    return conv


class ConvReLU(nn.Sequential):
    """A convolution or transposed convolution followed by ReLU (`conv_act`: one fused call at CPU
    inference). The convolution is element 0, as in the plain `nn.Sequential(conv, nn.ReLU())`
    this replaced, so state-dict keys and checkpoints are unchanged."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d):
        super().__init__(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self[0]
        assert isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)), "the constructor's only element"
        return conv_act(conv, x, "relu")


def _conv(cin: int, cout: int, stride=1) -> nn.Sequential:
    # no normalisation layers: on CPU they cost more than the convolutions at these sizes, and
    # inputs are already on a fixed scale (pixels in [0, 1], standardised log-mel)
    return ConvReLU(nn.Conv2d(cin, cout, 3, stride=stride, padding=1))


def _up(cin: int, cout: int, kernel=4, stride=2, padding=1, act: bool = True) -> nn.Sequential:
    up = nn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=padding)
    return ConvReLU(up) if act else nn.Sequential(up)


def _box3(x: torch.Tensor) -> torch.Tensor:
    """3x3 box mean of (N, H, W) with the window cut at the border (like avg_pool2d with
    count_include_pad=False), as separable sums of shifted views: 4x faster than avg_pool2d on CPU."""
    H, W = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1))
    rows = p[..., :, :-2] + p[..., :, 1:-1] + p[..., :, 2:]
    total = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    ones = torch.ones(H, W, device=x.device, dtype=x.dtype)
    ones[0], ones[-1] = 2 / 3, 2 / 3  # fraction of the 3x3 window inside the frame
    ones[:, 0] *= 2 / 3
    ones[:, -1] *= 2 / 3
    return total / (9 * ones)


def _masked_lower_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Lower median over dim 1 of (B, T, H, W) among the frames `mask` (B, T) keeps; what
    `nanmedian` gives with the others set to NaN, by an odd-even transposition sort of T slices
    (T is small: 8 frames per window) — 5-7x faster than nanmedian on CPU."""
    T = x.shape[1]
    cols = list(x.masked_fill(~mask[:, :, None, None], float("inf")).unbind(1))
    for r in range(T):
        for i in range(r % 2, T - 1, 2):
            cols[i], cols[i + 1] = torch.minimum(cols[i], cols[i + 1]), torch.maximum(cols[i], cols[i + 1])
    ordered = torch.stack(cols, 1)  # (B, T, H, W), the kept frames first
    k = ((mask.sum(1) - 1) // 2).clamp_min(0)  # (B,)
    return ordered.gather(1, k[:, None, None, None].expand(-1, 1, *x.shape[2:]))


def _mean_std(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std over the spatial dims of (N, C, H, W), from the means
    of x and x² in one pass: post-ReLU activations of order 1, so E[x²] - E[x]² loses nothing that
    matters (relative difference to the two-pass formula ~5e-6). A subtraction of the mean
    broadcast over an NHWC tensor is slow in torch on CPU: this is 5x faster (0.8 -> 0.15 ms per
    8 frames), and the monitor computes it for every frame it scores."""
    dims: int | tuple[int, int] = (2, 3)
    if h.is_contiguous(memory_format=torch.channels_last):  # the scorer's layout: reduce a (N, HW, C) view
        h, dims = h.permute(0, 2, 3, 1).flatten(1, 2), 1  # 25 % faster than over dims (2, 3), the same numbers
    mean = h.mean(dims)
    var = (h * h).mean(dims) - mean * mean
    return mean, var.clamp_min(0.0).sqrt()


def _phase_weights(up: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 4x4 stride-2 transposed convolution as a 3x3 convolution at the input resolution with
    4x the output channels, ordered (row phase, column phase, channel): output pixel (2i+a, 2j+b)
    reads input pixels (i+di, j+dj), di, dj in {-1, 0, 1}, through kernel tap (ki, kj) below."""
    w = up.weight  # (cin, cout, 4, 4)
    cin, cout = w.shape[:2]
    out = w.new_zeros(2, 2, cout, cin, 3, 3)
    taps = {(0, -1): 3, (0, 0): 1, (1, 0): 2, (1, 1): 0}  # (phase, offset) -> kernel index
    for (a, di), ki in taps.items():
        for (b, dj), kj in taps.items():
            out[a, b, :, :, di + 1, dj + 1] = w[:, :, ki, kj].t()
    out = out.reshape(4 * cout, cin, 3, 3)
    if up.weight.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    assert up.bias is not None, "the decoder's transposed convolutions are built with a bias"
    return out, up.bias.repeat(4)


class FrameAutoencoder(nn.Module):
    """Single frames -> a narrow convolutional code -> the frame again. Trained on normal frames
    only, its per-pixel error marks what normal frames lack (a scratch, a missing cap, a smudge)."""

    def __init__(self, fc: FeatureConfig, channels: tuple[int, int, int], bottleneck: int):
        super().__init__()
        c1, c2, c3 = channels
        self.H, self.W = fc.frame_height, fc.frame_width
        self.enc = nn.Sequential(_conv(3, c1, 2), _conv(c1, c2, 2), _conv(c2, c3, 2),
                                 nn.Conv2d(c3, bottleneck, 1))  # (bottleneck, H/8, W/8)
        # transposed convolutions: each doubles the size, computed at the smaller resolution
        self.dec_in = ConvReLU(nn.Conv2d(bottleneck, c3, 1))
        self.dec = nn.ModuleList([_up(c3, c2), _up(c2, c1), _up(c1, 3, act=False)])
        self.topk = 32  # pixels per frame whose error makes the frame score (a defect is small)

    def _trunk(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> the first two encoder layers' outputs and the decoder's input to its last
        layer (N, c1, H/2, W/2)."""
        H, W = frames.shape[-2:]
        h1 = self.enc[0](frames)  # (N, c1, H/2, W/2)
        h2 = self.enc[1](h1)  # (N, c2, H/4, W/4)
        y = self.dec_in(self.enc[3](self.enc[2](h2)))  # (N, c3, H/8, W/8)
        y = self.dec[0](y)[:, :, : (H + 3) // 4, : (W + 3) // 4]  # (N, c2, H/4, W/4)
        return h1, h2, self.dec[1](y)  # (N, c1, H/2, W/2)

    def _layout(self, frames: torch.Tensor) -> torch.Tensor:
        if _conv_of(self.enc[0], nn.Conv2d).weight.is_contiguous(memory_format=torch.channels_last):
            # the scorer keeps conv weights NHWC on CPU; NHWC input too makes oneDNN's fast path
            # end to end (bench: the frame autoencoder 32 % cheaper, identical output)
            return frames.contiguous(memory_format=torch.channels_last)
        return frames

    def _n_stats(self) -> int:
        return 2 * (_conv_of(self.enc[0], nn.Conv2d).out_channels + _conv_of(self.enc[1], nn.Conv2d).out_channels)

    def forward(self, frames: torch.Tensor, with_stats: bool = False):
        """(N, 3, H, W) in [0, 1] -> reconstruction (N, 3, H, W); with `with_stats`, also the
        per-channel mean and std of the first two encoder layers (N, 2 * (c1 + c2)): a blurred,
        fogged or darkened image shifts these feature statistics even when it is easy to redraw."""
        H, W = frames.shape[-2:]
        frames = self._layout(frames)
        if frames.shape[0] == 0:  # no frame in the batch
            return (frames, frames.new_zeros(0, self._n_stats())) if with_stats else frames
        h1, h2, y = self._trunk(frames)
        recon = torch.sigmoid(self.dec[2](y)[:, :, :H, :W])  # (N, 3, H, W)
        if not with_stats:
            return recon
        return recon, torch.cat([*_mean_std(h1), *_mean_std(h2)], dim=1)

    def residual(self, frames: torch.Tensor, with_stats: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """What scoring needs of each frame, which depends on that frame alone (the scorer memoises
        it per frame, `models/framememo.py`): the squared reconstruction error summed over colour
        and smoothed 3x3 (N, H, W) — camera noise averages out, a defect (a connected blob) keeps
        its contrast — and the feature statistics (N, S) (N, 0 without `with_stats`).

        The last transposed convolution is computed as its four output phases (`_phase_weights`)
        and compared with the frame's pixels of each phase in place: no reconstruction image is
        assembled (pixel shuffling it cost more than the convolution; bench: 0.28 -> 0.14 ms per
        frame for the last layer and the error). Same numbers as `forward` to ~1e-7."""
        N, _, H, W = frames.shape
        frames = self._layout(frames)
        if N == 0:
            return frames.new_zeros(0, H, W), frames.new_zeros(0, self._n_stats())
        h1, h2, y = self._trunk(frames)
        stats = torch.cat([*_mean_std(h1), *_mean_std(h2)], dim=1) if with_stats else frames.new_zeros(N, 0)
        h, w = y.shape[-2:]
        if (2 * h, 2 * w) != (H, W):  # odd frame size: the cropped reconstruction
            d = frames - torch.sigmoid(self.dec[2](y)[:, :, :H, :W])
            return _box3((d * d).sum(1)), stats
        weight, bias = _phase_weights(_conv_of(self.dec[2], nn.ConvTranspose2d))
        phases = conv2d_act(y, weight.to(y.dtype), bias.to(y.dtype), "sigmoid", padding=1)  # (N, 4*3, h, w)
        # (N, h, a, w, b, c) views of both: the reconstruction's phases, the frame's pixels
        recon = phases.permute(0, 2, 3, 1).reshape(N, h, w, 2, 2, 3).permute(0, 1, 3, 2, 4, 5)
        pixels = frames.permute(0, 2, 3, 1).reshape(N, h, 2, w, 2, 3)
        d = pixels - recon
        d = d * d  # summed over colour as three slices: torch's reduction over a last dim of 3 is 3x slower
        return _box3((d[..., 0] + d[..., 1] + d[..., 2]).reshape(N, H, W)), stats

    @staticmethod
    def error_map(frame_residual: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, H, W) per-frame residuals (`residual`) -> the window's error map: minus the
        per-pixel median over the window's frames. The median removes what is wrong in *every*
        frame: scenery the model draws badly (a camera it has not seen, a moved fixture). Parts move
        along the belt, so a defective part is not at the same pixel in most frames and stays; a
        static image fault (fog, blur) is the job of the feature-statistics component."""
        err = frame_residual
        if mask is None or err.shape[1] < 3:
            return err
        base = _masked_lower_median(err, mask)  # (B, 1, H, W)
        enough = (mask.sum(1) >= 3)[:, None, None, None]
        return torch.where(enough, (err - base).clamp_min(0.0), err) * mask[:, :, None, None]

    def frame_scores(self, error_map: torch.Tensor) -> torch.Tensor:
        """(B, T): mean of the top-k pixel errors of each frame."""
        flat = error_map.flatten(2)
        return flat.topk(min(self.topk, flat.shape[-1]), dim=-1).values.mean(-1)


class AudioAutoencoder(nn.Module):
    """Normalised log-mel -> a code per 80 ms that is dense over frequency -> log-mel again: it
    can redraw the machine's normal spectra, not a new tone or burst."""

    def __init__(self, fc: FeatureConfig, channels: tuple[int, int, int], bottleneck: int):
        super().__init__()
        c1, c2, c3 = channels
        self.F8 = math.ceil(math.ceil(math.ceil(fc.n_mels / 2) / 2) / 2)
        self.trunk = nn.Sequential(_conv(1, c1, (2, 2)), _conv(c1, c2, (2, 2)), _conv(c2, c3, (2, 1)))  # (c3, M/8, T/4)
        flat = c3 * self.F8
        self.code = nn.Linear(flat, bottleneck)
        self.uncode = nn.Sequential(nn.Linear(bottleneck, flat), nn.ReLU())
        self.dec = nn.ModuleList([_up(c3, c2, (4, 3), (2, 1), (1, 1)), _up(c2, c1), _up(c1, 1, act=False)])
        self.c3 = c3
        self.top_fraction = 0.05  # of (band, time) cells that make the window score

    def forward(self, mel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, M, T) normalised log-mel -> reconstruction (B, M, T)."""
        B, M, T = mel.shape
        x = (mel * mask[:, None, :]).unsqueeze(1)  # (B, 1, M, T); masked frames carry no signal
        h = self.trunk(x)  # (B, c3, M/8, T/4)
        Tq = h.shape[-1]
        steps = h.permute(0, 3, 1, 2).flatten(2)  # (B, T/4, c3*M/8)
        y = self.uncode(self.code(steps))  # (B, T/4, c3*M/8)
        y = y.view(B, Tq, self.c3, self.F8).permute(0, 2, 3, 1)  # (B, c3, M/8, T/4)
        y = self.dec[0](y)  # (B, c2, M/4, T/4)
        y = self.dec[1](y)  # (B, c1, M/2, T/2)
        return self.dec[2](y)[:, 0, :M, :T]  # (B, M, T)

    def window_score(self, mel_error: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,): mean of the largest cells of the 3x3-smoothed error: a narrow tone (few bands, all
        frames) and a burst (all bands, few frames) both fill the top cells."""
        B, M, T = mel_error.shape
        sm = _box3(mel_error).flatten(1)
        k = max(1, int(self.top_fraction * M * T))
        top = sm.topk(k, dim=1).values.mean(1)
        # fewer valid frames -> fewer real cells: rescale so a half-covered window is comparable
        valid = mask.float().mean(1).clamp_min(1e-3)
        return torch.where(mask.any(1), top / valid.clamp_max(1.0).sqrt(), torch.zeros_like(top))


class FrameStateEncoder(nn.Module):
    """What the line is doing, seen by the camera: each frame at half resolution plus its
    difference to the neighbouring frame (motion is explicit) -> one token per frame. Cheap on
    purpose: the state (moving or not, parts or not) needs no fine detail; the autoencoder has it."""

    def __init__(self, channels: tuple[int, int, int], d: int):
        super().__init__()
        c1, c2, c3 = channels
        self.net = nn.Sequential(_conv(6, c1, 2), _conv(c1, c2, 2), _conv(c2, c3, 2), nn.AdaptiveAvgPool2d((2, 2)),
                                 nn.Flatten(), nn.Linear(4 * c3, d), nn.LayerNorm(d))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C, H, W = frames.shape
        # 2x2 mean as four strided views (bit-identical to avg_pool2d, a third less time on CPU)
        small = (frames[..., 0::2, 0::2] + frames[..., 0::2, 1::2] + frames[..., 1::2, 0::2]
                 + frames[..., 1::2, 1::2]) * 0.25  # (B, T, 3, H/2, W/2)
        # neighbour difference: frame t minus frame t-1 (frame 0 uses frame 1), zero without a neighbour
        prev = torch.cat([small[:, 1:2], small[:, :-1]], dim=1) if T > 1 else small
        prev_mask = torch.cat([mask[:, 1:2], mask[:, :-1]], dim=1) if T > 1 else mask
        diff = (small - prev) * (mask & prev_mask)[:, :, None, None, None]
        # centred pixels and amplified motion: the state lives in small differences between windows
        x = torch.cat([small - 0.5, 4.0 * diff], dim=2).flatten(0, 1)  # (B*T, 6, H/2, W/2)
        return self.net(x).view(B, T, -1)  # (B, T, D)


class AudioStateEncoder(nn.Module):
    """What the line is doing, heard: normalised log-mel -> one token per 80 ms."""

    def __init__(self, fc: FeatureConfig, channels: tuple[int, int, int], d: int):
        super().__init__()
        c1, c2, c3 = channels
        f8 = math.ceil(math.ceil(math.ceil(fc.n_mels / 2) / 2) / 2)
        self.trunk = nn.Sequential(_conv(1, c1, (2, 2)), _conv(c1, c2, (2, 2)), _conv(c2, c3, (2, 1)))  # (c3, M/8, T/4)
        self.token = nn.Sequential(nn.Linear(c3 * f8, d), nn.LayerNorm(d))

    def forward(self, mel: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = mel.shape[0]
        h = self.trunk((mel * mask[:, None, :]).unsqueeze(1))  # (B, c3, M/8, T/4)
        Tq = h.shape[-1]
        tokens = self.token(h.permute(0, 3, 1, 2).flatten(2))  # (B, T/4, D)
        token_mask = mask[:, : Tq * 4].reshape(B, Tq, -1).float().mean(-1) >= 0.5  # (B, T/4)
        return tokens, token_mask


class LogEncoder(nn.Module):
    """MiniLM line embeddings -> tokens, with level and code-novelty embeddings, plus one rate
    token per window (present even when the window has no line: silence is information)."""

    def __init__(self, d: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(384, d), nn.GELU(), nn.Linear(d, d))
        self.level = nn.Embedding(N_LEVELS, d)
        self.code_state = nn.Embedding(3, d)
        self.rate = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
        self.ln = nn.LayerNorm(d)

    def forward(self, emb, levels, code_state, mask, count, present):
        line_tokens = self.ln(self.proj(emb) + self.level(levels) + self.code_state(code_state))  # (B, L, D)
        rate_in = torch.stack([torch.log1p(count), (count == 0).to(count.dtype)], dim=1)  # (B, 2)
        rate_token = self.ln(self.rate(rate_in)).unsqueeze(1)  # (B, 1, D)
        tokens = torch.cat([rate_token, line_tokens], dim=1)  # (B, 1 + L, D)
        token_mask = torch.cat([present[:, None], mask & present[:, None]], dim=1)
        return tokens, token_mask
