"""Where a chunk's time goes: named stages, recent samples, percentiles (plain Python, no ROS)."""
from __future__ import annotations

import threading
from collections import deque
from typing import Iterable

import numpy as np


def percentile_ms(samples_s: Iterable[float], q: float) -> float:
    """The ``q`` percentile [ms] of samples in seconds; nan without samples."""
    values = np.asarray(list(samples_s), dtype=np.float64)
    return float(np.percentile(values, q) * 1e3) if values.size else float("nan")


class StageTimes:
    """The last ``window`` samples of each named stage [s]; percentiles in ms for diagnostics.

    Thread-safe: the node adds samples from its sensor and chunk callbacks while the
    diagnostics timer reads them (unguarded, a stage first seen during a read raised
    "dictionary changed size during iteration" and killed the node).
    """

    def __init__(self, window: int = 200) -> None:
        self.window = window
        self._samples: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, **stages_s: float) -> None:
        with self._lock:
            for name, value in stages_s.items():
                self._samples.setdefault(name, deque(maxlen=self.window)).append(float(value))

    def names(self) -> list[str]:
        with self._lock:
            return list(self._samples)

    def percentile_ms(self, name: str, q: float) -> float:
        with self._lock:
            samples = list(self._samples.get(name, ()))
        return percentile_ms(samples, q)

    def summary_ms(self, quantiles: tuple[float, ...] = (50, 99)) -> dict[str, float]:
        """``{"<stage>_ms_p<q>": value}`` for every stage seen."""
        with self._lock:
            samples = {name: list(values) for name, values in self._samples.items()}
        return {f"{name}_ms_p{q:g}": percentile_ms(values, q) for name, values in samples.items() for q in quantiles}
