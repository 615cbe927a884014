"""How many synthetic images each label needs, for three strategies.

- ``equalize``: every class up to the largest (Hussain et al.: 10,192 per class);
- ``min-fraction:F``: the fewest images so every under-represented label reaches fraction F of
  the augmented set (Sundaram & Hulkund: 15 %); multi-label aware;
- ``skew:R``: the minority class up to a target skew ratio negatives/positives = R
  (Zunair & Hamza's skew ratio).
"""

from __future__ import annotations

import math

from cxraug.errors import CXRAugError


def plan_balance(
    counts: dict[str, int], strategy: str, *, total: int | None = None, only: list[str] | None = None
) -> dict[str, int]:
    """``counts`` = positives per label; ``total`` = number of images (for multi-label sets, where
    it is not the sum of counts). ``only`` = the labels the generator can make. Returns label -> n."""
    total = sum(counts.values()) if total is None else total
    allowed = set(only) if only else set(counts)
    if strategy == "equalize":
        top = max(counts.values())
        return {c: top - n for c, n in counts.items() if c in allowed and n < top}
    if strategy.startswith("min-fraction:"):
        f = float(strategy.split(":", 1)[1])
        if not 0 < f < 1:
            raise CXRAugError(f"min-fraction must be in (0, 1), got {f}")
        add = {c: 0 for c in counts}
        for _ in range(100):  # adding images grows the total, so iterate to the fixed point
            n_total = total + sum(add.values())
            short = {c: f * n_total - (counts[c] + add[c]) for c in counts if c in allowed}
            short = {c: v for c, v in short.items() if v > 1e-9}
            if not short:
                break
            for c, v in short.items():
                add[c] += math.ceil(v / (1 - f))  # n new positives of c: (k + n) / (N + n) >= f
        return {c: n for c, n in add.items() if n > 0}
    if strategy.startswith("skew:"):
        r = float(strategy.split(":", 1)[1])
        if r <= 0:
            raise CXRAugError(f"skew target must be > 0, got {r}")
        out = {}
        for c in allowed:
            neg = total - counts[c]
            need = math.ceil(neg / r - counts[c])
            if need > 0:
                out[c] = need
        return out
    raise CXRAugError(f"unknown strategy {strategy!r}: equalize | min-fraction:F | skew:R")
