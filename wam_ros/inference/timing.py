"""Where a chunk's time goes: named stages, recent samples, percentiles (plain Python, no ROS)."""
from __future__ import annotations

from collections import deque
from typing import Iterable

import numpy as np


def percentile_ms(samples_s: Iterable[float], q: float) -> float:
    """The ``q`` percentile [ms] of samples in seconds; nan without samples."""
    values = np.asarray(list(samples_s), dtype=np.float64)
    return float(np.percentile(values, q) * 1e3) if values.size else float("nan")


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
        return percentile_ms(self._samples.get(name, ()), q)

    def summary_ms(self, quantiles: tuple[float, ...] = (50, 99)) -> dict[str, float]:
        """``{"<stage>_ms_p<q>": value}`` for every stage seen."""
        return {f"{name}_ms_p{q:g}": self.percentile_ms(name, q) for name in self._samples for q in quantiles}
