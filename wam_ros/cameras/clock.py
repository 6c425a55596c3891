"""Device timestamps -> host (ROS) time, with drift tracking and re-synchronisation (no ROS).

A camera stamps each frame with its own clock (a RealSense: the hardware clock in ms). The host
sees the frame some time later: ``arrival = device + offset + delay``, with ``offset`` the
unknown, slowly drifting difference of the two clocks and ``delay`` >= 0 the transport latency
(USB, driver, our thread). The frame's host time is estimated as ``device + offset_est`` with

    offset_est = min(arrival - device) over the frames of the last ``window_s`` seconds,

the minimum-delay estimate: the least-delayed frame bounds the offset from above, so stamps
lie at most the smallest observed delay after the true capture time and keep the device's
frame spacing (no arrival jitter). The window lets the estimate follow clock drift: with a
drift of ``d`` (e.g. 50 ppm) the estimate lags by at most ``d * window_s`` (0.5 ms for 10 s).

Re-synchronisation: when the device clock jumps (runs backwards, after a reconnect or a
looping playback file), or a frame would get a stamp more than ``resync_threshold_s`` away
from its arrival, the window is cleared and the estimate restarts from that frame; the number
of such resets is reported. Stamps are strictly increasing between resets.
"""
from __future__ import annotations

import math
from collections import deque


class DeviceClockMapper:
    """Maps device timestamps (seconds) to host timestamps (seconds) with a windowed min-delay offset."""

    def __init__(self, window_s: float = 10.0, resync_threshold_s: float = 0.5) -> None:
        if not (window_s > 0 and resync_threshold_s > 0):
            raise ValueError(f"window_s and resync_threshold_s must be positive, got {window_s}, {resync_threshold_s}")
        self.window_s = window_s
        self.resync_threshold_s = resync_threshold_s
        self.resets = 0
        self._offsets: deque[tuple[float, float]] = deque()  # (arrival_s, arrival - device), increasing offsets
        self._last_device_s = -math.inf
        self._last_host_s = -math.inf

    @property
    def offset_s(self) -> float | None:
        """Current estimate of host - device clock (None before the first frame)."""
        return self._offsets[0][1] if self._offsets else None

    def to_host(self, device_s: float, arrival_s: float) -> float:
        """Host time of a frame stamped ``device_s`` by the device that arrived at ``arrival_s``."""
        if not (math.isfinite(device_s) and math.isfinite(arrival_s)):
            raise ValueError(f"timestamps must be finite, got device {device_s!r}, arrival {arrival_s!r}")
        if device_s <= self._last_device_s:
            self.reset()
        offset = arrival_s - device_s
        # Monotonic deque of offsets: older entries with a larger offset can never be the minimum again.
        while self._offsets and self._offsets[-1][1] >= offset:
            self._offsets.pop()
        self._offsets.append((arrival_s, offset))
        while self._offsets[0][0] < arrival_s - self.window_s:
            self._offsets.popleft()
        host_s = device_s + self._offsets[0][1]
        if abs(arrival_s - host_s) > self.resync_threshold_s:
            # The device clock or the host clock jumped: trust this frame alone.
            self.reset()
            self._offsets.append((arrival_s, offset))
            host_s = arrival_s
        self._last_device_s = device_s
        if host_s <= self._last_host_s:
            host_s = math.nextafter(self._last_host_s, math.inf)
        self._last_host_s = host_s
        return host_s

    def reset(self) -> None:
        """Forget the offset estimate (e.g. after a reconnect); the next frame starts a new one."""
        if self._offsets:
            self.resets += 1
        self._offsets.clear()
        self._last_device_s = -math.inf
        self._last_host_s = -math.inf
