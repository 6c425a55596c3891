"""Approximate time synchronisation of several camera streams (no ROS).

Frames of N cameras are grouped into sets whose stamps lie within ``tolerance_s`` of each
other. Each set is built around the newest of the oldest queued frames (the *pivot*): every
other camera contributes its oldest frame, and frames that are too old ever to join a set are
dropped and counted. With a tolerance below half of every camera's frame period, at most one
frame per camera fits around a pivot, so the sets are the best possible ones and are emitted
as soon as the last member arrives (no added latency).

Usage::

    sync = ApproximateSync(["front", "wrist"], tolerance_s=0.015)
    for synced in sync.add("front", stamp_s, image):
        model_input(synced.items["front"], synced.items["wrist"])
    sync.stats.dropped  # {"front": 0, "wrist": 3}
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Iterable, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class SyncedSet(Generic[T]):
    """One frame per camera, all stamps within the tolerance of each other."""

    stamps_s: dict[str, float]
    items: dict[str, T]

    @property
    def stamp_s(self) -> float:
        """Stamp of the set: the newest member's stamp."""
        return max(self.stamps_s.values())

    @property
    def spread_s(self) -> float:
        """Newest minus oldest member stamp (0 for perfectly synchronised cameras)."""
        return max(self.stamps_s.values()) - min(self.stamps_s.values())


@dataclass
class SyncStats:
    """Counters since construction (or the last :meth:`ApproximateSync.reset`)."""

    received: dict[str, int]
    dropped: dict[str, int]  # frames discarded without a partner (too old, queue overflow)
    rejected: dict[str, int]  # frames refused because their stamp was not newer than the last one
    matched_sets: int = 0
    spread_s_max: float = 0.0
    spread_s_sum: float = field(default=0.0, repr=False)

    @property
    def spread_s_mean(self) -> float:
        return self.spread_s_sum / self.matched_sets if self.matched_sets else 0.0

    def as_key_values(self) -> dict[str, str]:
        """Flat name -> text mapping, ready for diagnostic_msgs/KeyValue."""
        values = {"matched_sets": str(self.matched_sets), "spread_ms_max": f"{1e3 * self.spread_s_max:.2f}",
                  "spread_ms_mean": f"{1e3 * self.spread_s_mean:.2f}"}
        for name in self.received:
            values[f"{name}.received"] = str(self.received[name])
            values[f"{name}.dropped"] = str(self.dropped[name])
            values[f"{name}.rejected"] = str(self.rejected[name])
        return values


class ApproximateSync(Generic[T]):
    """Pairs frames of several cameras by stamp within a tolerance and counts what it drops."""

    def __init__(self, names: Iterable[str], tolerance_s: float, max_queue: int = 30) -> None:
        self.names = tuple(names)
        if len(self.names) < 1 or len(set(self.names)) != len(self.names):
            raise ValueError(f"need one or more distinct camera names, got {self.names!r}")
        if not (math.isfinite(tolerance_s) and tolerance_s >= 0):
            raise ValueError(f"tolerance_s must be finite and >= 0, got {tolerance_s!r}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.tolerance_s = tolerance_s
        self.max_queue = max_queue
        self.reset()

    def reset(self) -> None:
        """Forget queued frames and counters (e.g. after a camera restarted with a new clock)."""
        self._queues: dict[str, deque[tuple[float, T]]] = {name: deque() for name in self.names}
        self._last_stamp_s: dict[str, float] = {name: -math.inf for name in self.names}
        zero = {name: 0 for name in self.names}
        self.stats = SyncStats(received=dict(zero), dropped=dict(zero), rejected=dict(zero))

    def pending(self, name: str) -> int:
        """Frames of ``name`` waiting for partners."""
        return len(self._queue(name))

    def add(self, name: str, stamp_s: float, item: T) -> list[SyncedSet[T]]:
        """Queue one frame; return the sets it completed (usually none or one), oldest first.

        Raises KeyError for an unknown camera and ValueError for a non-finite stamp. A stamp
        not newer than the camera's previous one is refused and counted in ``stats.rejected``.
        """
        queue = self._queue(name)
        if not math.isfinite(stamp_s):
            raise ValueError(f"camera {name!r}: stamp must be finite, got {stamp_s!r}")
        self.stats.received[name] += 1
        if stamp_s <= self._last_stamp_s[name]:
            self.stats.rejected[name] += 1
            return []
        self._last_stamp_s[name] = stamp_s
        queue.append((stamp_s, item))
        if len(queue) > self.max_queue:
            queue.popleft()
            self.stats.dropped[name] += 1
        return self._match()

    def _queue(self, name: str) -> deque[tuple[float, T]]:
        try:
            return self._queues[name]
        except KeyError:
            raise KeyError(f"unknown camera {name!r}; expected one of {', '.join(self.names)}") from None

    def _match(self) -> list[SyncedSet[T]]:
        sets: list[SyncedSet[T]] = []
        while all(self._queues.values()):
            pivot_s = max(queue[0][0] for queue in self._queues.values())
            # A frame older than pivot - tolerance can never join a set: every set from now on
            # contains a frame at or after the pivot (the pivot camera's oldest frame).
            for name, queue in self._queues.items():
                while queue and queue[0][0] < pivot_s - self.tolerance_s:
                    queue.popleft()
                    self.stats.dropped[name] += 1
            if not all(self._queues.values()):
                break
            if max(queue[0][0] for queue in self._queues.values()) != pivot_s:
                continue  # a dropped frame revealed a newer head: choose the pivot again
            members = {name: queue.popleft() for name, queue in self._queues.items()}
            synced = SyncedSet(stamps_s={n: m[0] for n, m in members.items()}, items={n: m[1] for n, m in members.items()})
            self.stats.matched_sets += 1
            self.stats.spread_s_max = max(self.stats.spread_s_max, synced.spread_s)
            self.stats.spread_s_sum += synced.spread_s
            sets.append(synced)
        return sets
