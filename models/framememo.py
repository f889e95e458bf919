"""Per-frame results of the fusion model, remembered for scoring overlapping windows.

Where it sits: installed by the scorer (`models.scorer.AnomalyScorer`) as `FusionModel.frame_memo`,
on CPU. Windows overlap (2 s windows every 1 s), so every frame is scored in two consecutive
windows, and the frame autoencoder — about half the model's cost on CPU — would run twice on the
same pixels. What scoring needs of a frame (`FusionModel.frame_parts`: its error maps, feature
statistics and scene view) depends on that frame alone, so it is kept in a small LRU keyed by
content (XXH3-128 of the pixels): the second window reuses it, and its uint8 bytes
are never converted to float, lit or pooled again. As the text encoder's line cache,
`max_frames=0` turns it off (the naive baseline of `fusionwatch bench pipeline`). Not used on CUDA:
hashing on the host would cost more than the GPU spends recomputing.

The frame-state encoder's tokens were memoised the same way, per (frame, neighbour) pair, and
measured: no gain (its convolutions are small next to the Python bookkeeping), so they are not.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import xxhash


class FrameMemo:
    def __init__(self, max_frames: int = 1024):
        # 1024 frames x (80x60 + 160x40 float32 error maps + a 3x80x60 scene view) = 105 MB with the
        # standard recipe; a frame is needed again within ~1-2 s, so this covers a few hundred 4 fps
        # cameras per monitor process
        self.max_frames = max_frames
        self.hits = self.misses = 0
        self._cache: OrderedDict[bytes, tuple[torch.Tensor, ...]] = OrderedDict()

    def active(self, frames: torch.Tensor) -> bool:
        return self.max_frames > 0 and frames.device.type == "cpu" and not torch.is_grad_enabled()

    @staticmethod
    def keys(frames: torch.Tensor, pixels: torch.Tensor | None = None) -> list[bytes]:
        """One content key per frame of (N, 3, H, W): from its bytes `pixels` (N, H, W, 3) uint8
        when the batch has them (`collate`'s), else from `frames` themselves (uint8 or float32)."""
        if pixels is None:
            # pixel order (N, H, W, C): `collate`'s frames are NHWC in memory, so this is a view
            pixels = frames.detach().permute(0, 2, 3, 1)
        px = pixels.contiguous().numpy()
        # XXH3-128: ~1.4 us per 160x120 frame of bytes, against ~33 us for SHA-256 with SHA-NI
        # (`fusionwatch bench decode`, "frame memo key"). Not a cryptographic hash: whoever can
        # choose a camera's pixels can show it anything anyway
        return [xxhash.xxh3_128_digest(px[i].data) for i in range(len(px))]

    def evidence(self, compute: Callable[..., tuple[torch.Tensor, ...]], inputs: tuple[torch.Tensor, ...],
                 pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """`compute(*inputs)` — per-frame tensors in, a tuple of per-frame tensors out
        (`FusionModel.frame_parts`) — computed only for frames not seen before. `inputs[0]`:
        the frames (N, 3, H, W), the others other views of the same frames (indexed alike);
        `pixels`: the frames' bytes (N, H, W, 3) uint8, if the batch has them (cheaper to hash)."""
        frames = inputs[0]
        if not self.active(frames) or len(frames) == 0:
            return compute(*inputs)
        keys = self.keys(frames, pixels)
        todo: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key in self._cache:
                self._cache.move_to_end(key)
            elif key not in todo:
                todo[key] = i
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            new = torch.tensor(list(todo.values()))
            fresh = compute(*(x[new] for x in inputs))
            for j, key in enumerate(todo):
                self._cache[key] = tuple(x[j].clone() for x in fresh)  # own copies: no whole batch kept alive
            while len(self._cache) > self.max_frames:
                self._cache.popitem(last=False)
        if any(key not in self._cache for key in keys):  # pragma: no cover - a batch larger than the cache
            return compute(*inputs)
        cached = [self._cache[key] for key in keys]
        return tuple(torch.stack(parts) for parts in zip(*cached))

    def __len__(self) -> int:
        return len(self._cache)
