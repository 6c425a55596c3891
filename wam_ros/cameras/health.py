"""Health of one camera stream, summarised for diagnostics (no ROS).

The node reports every frame, every loss of the device and every recovery; :meth:`report`
turns that into a level, a one-line message and counters, which the node publishes as a
diagnostic_msgs/DiagnosticStatus. Times are seconds of a monotonic clock.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum


class Level(IntEnum):
    """Same values as diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True)
class HealthReport:
    level: Level
    message: str
    values: dict[str, str]


class StreamHealth:
    """Counts frames, drops, outages and reconnects of one camera; judges the measured rate."""

    def __init__(
        self, source: str, expected_rate_hz: float, rate_window_s: float = 2.0, min_rate_fraction: float = 0.8, latency_samples: int = 300
    ) -> None:
        self.source = source
        self.expected_rate_hz = expected_rate_hz
        self.rate_window_s = rate_window_s
        self.min_rate_fraction = min_rate_fraction
        self.frames = 0
        self.dropped = 0  # gaps in the device's frame numbers
        self.reconnects = 0
        self.connected = False
        self.outage_reason = ""
        self.outage_since_s: float | None = None
        self.last_outage_s = 0.0  # duration of the last outage that ended
        self.first_frame_s: float | None = None
        self._recent: deque[float] = deque()
        self._last_frame_number: int | None = None
        self._latencies_s: deque[float] = deque(maxlen=latency_samples)

    def connected_now(self, now_s: float) -> None:
        """The device was opened (first time or after an outage)."""
        if self.outage_since_s is not None:
            self.reconnects += 1
            self.last_outage_s = now_s - self.outage_since_s
        self.connected, self.outage_since_s, self.outage_reason = True, None, ""
        self._last_frame_number = None
        self.first_frame_s = None  # the rate is measured afresh after each (re)connect
        self._recent.clear()

    def lost(self, now_s: float, reason: str) -> None:
        """The device stopped delivering or could not be opened; the outage began with the last frame."""
        if self.outage_since_s is None:
            self.outage_since_s = self._recent[-1] if self.connected and self._recent else now_s
        self.connected, self.outage_reason = False, reason

    def frame(self, now_s: float, frame_number: int | None = None) -> None:
        """One frame published; ``frame_number`` (when the device counts) reveals drops."""
        self.frames += 1
        if self.first_frame_s is None:
            self.first_frame_s = now_s
        if frame_number is not None:
            if self._last_frame_number is not None and frame_number > self._last_frame_number + 1:
                self.dropped += frame_number - self._last_frame_number - 1
            self._last_frame_number = frame_number
        self._recent.append(now_s)
        self._trim(now_s)

    def record_latency(self, latency_s: float) -> None:
        """Capture-to-publish latency of one frame (publish time minus the frame's stamp)."""
        self._latencies_s.append(latency_s)

    def latency_ms_percentiles(self) -> tuple[float, float]:
        """(p50, p99) over the recent frames; (0, 0) before any."""
        if not self._latencies_s:
            return 0.0, 0.0
        ordered = sorted(self._latencies_s)
        pick = lambda q: 1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
        return pick(0.5), pick(0.99)

    def _trim(self, now_s: float) -> None:
        while self._recent and self._recent[0] < now_s - self.rate_window_s:
            self._recent.popleft()

    def rate_hz(self, now_s: float) -> float:
        """Frames per second over the last ``rate_window_s`` (over the frames so far while shorter)."""
        self._trim(now_s)
        if self.first_frame_s is not None and now_s - self.first_frame_s >= self.rate_window_s:
            return len(self._recent) / self.rate_window_s
        if len(self._recent) < 2 or self._recent[-1] <= self._recent[0]:
            return 0.0
        return (len(self._recent) - 1) / (self._recent[-1] - self._recent[0])

    def report(self, now_s: float) -> HealthReport:
        rate = self.rate_hz(now_s)
        values = {
            "source": self.source,
            "frames": str(self.frames),
            "rate_hz": f"{rate:.2f}",
            "expected_rate_hz": f"{self.expected_rate_hz:.2f}",
            "dropped_frames": str(self.dropped),
            "reconnects": str(self.reconnects),
            "last_outage_s": f"{self.last_outage_s:.2f}",
        }
        p50, p99 = self.latency_ms_percentiles()
        values["capture_to_publish_ms_p50"], values["capture_to_publish_ms_p99"] = f"{p50:.2f}", f"{p99:.2f}"
        if not self.connected:
            since = now_s - self.outage_since_s if self.outage_since_s is not None else 0.0
            return HealthReport(Level.ERROR, f"{self.source}: no frames for {since:.1f} s ({self.outage_reason}); reconnecting", values)
        settled = self.first_frame_s is not None and now_s - self.first_frame_s >= self.rate_window_s
        if settled and rate < self.min_rate_fraction * self.expected_rate_hz:
            return HealthReport(Level.WARN, f"{self.source}: {rate:.1f} Hz, below the configured {self.expected_rate_hz:.1f} Hz", values)
        recovered = f" (recovered after a {self.last_outage_s:.1f} s outage)" if self.reconnects else ""
        return HealthReport(Level.OK, f"{self.source}: streaming at {rate:.1f} Hz{recovered}", values)
