"""Where a chunk's time goes: named stages, recent samples, percentiles (plain Python, no ROS)."""
from __future__ import annotations

from collections import deque

import numpy as np


class StageTimes:
    """The last ``window`` samples of each named stage [s]; percentiles in ms for diagnostics."""

    def __init__(self, window: int = 200) -> None:
        self.window = window
        self._samples: dict[str, deque[float]] = {}

    def add(self, **stages_s: float) -> None:
        for name, value in stages_s.items():
            self._samples.setdefault(name, deque(maxlen=self.window)).append(float(value))

    def names(self) -> list[str]:
        return list(self._samples)

    def percentile_ms(self, name: str, q: float) -> float:
        samples = self._samples.get(name)
        return float(np.percentile(np.asarray(samples), q) * 1e3) if samples else float("nan")

    def summary_ms(self, quantiles: tuple[float, ...] = (50, 99)) -> dict[str, float]:
        """``{"<stage>_ms_p<q>": value}`` for every stage seen."""
        return {f"{name}_ms_p{q:g}": self.percentile_ms(name, q) for name in self._samples for q in quantiles}
