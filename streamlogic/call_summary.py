"""A call's overall sentiment from its per-window sentiment curve: how the call *ended*.

A mean over the call (or over its last third) lets a long angry middle outvote a customer who
ends satisfied, so calm calls that closed on a thank-you read neutral or negative. Each window
is weighted by recency instead, halving every `OVERALL_HALF_LIFE_WINDOWS` windows back from the
last one: the last turn or two carry most of the weight. 4 windows was chosen on the validation
calls of the standard recipe (seed 3: 0.989 of calls right; 8 windows: 0.737, the agent's
closing words then outweigh the customer's last line).
Pure: the monitor's call summary (`services.monitor.sink`) and the evaluation share it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

CLASSES = ("negative", "neutral", "positive")
OVERALL_HALF_LIFE_WINDOWS = 4.0


def overall_weights(n: int, half_life: float = OVERALL_HALF_LIFE_WINDOWS) -> np.ndarray:
    """(n,) weights summing to 1, the last window the heaviest."""
    w = 0.5 ** ((n - 1 - np.arange(n)) / half_life)
    return w / w.sum()


def overall_sentiment(probs: ArrayLike, half_life: float = OVERALL_HALF_LIFE_WINDOWS) -> int:
    """Index into CLASSES of the recency-weighted mean of (n, 3) class probabilities, in time order."""
    p = np.asarray(probs, dtype=float).reshape(-1, len(CLASSES))
    if not len(p):
        raise ValueError("a call without windows has no overall sentiment")
    return int((overall_weights(len(p), half_life) @ p).argmax())
