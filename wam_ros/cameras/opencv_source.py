"""USB cameras and video files through OpenCV (no ROS).

``device`` is a USB index (``"0"``, V4L2 ``/dev/video0``) or a path to a video file. Frames come
out as RGB8 at the configured size (resized with INTER_AREA when the source differs).
Rate control: a USB camera is asked for the rate and its frames are decimated to it (a camera
that delivers faster is read continuously so that the newest frame is used, never a stale
buffered one); a file is paced so that one file frame is published per period, whatever rate
it was encoded at. :class:`RatePacer` does the pacing with absolute deadlines (no drift).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wam_ros.cameras.types import CameraError, CameraFrame, DeviceNotFoundError, FrameTimeoutError


@dataclass(frozen=True)
class OpenCVSettings:
    device: str  # USB index ("0") or a video file path
    width: int
    height: int
    rate_hz: float
    loop: bool = True  # a file starts over at its end (False: the end is reported like an unplug)
    read_timeout_s: float = 1.0  # a USB read that takes longer counts as a lost device

    @property
    def is_usb(self) -> bool:
        return self.device.strip().isdigit()

    @property
    def source(self) -> str:
        return f"USB camera {self.device}" if self.is_usb else f"video file {self.device}"


class RatePacer:
    """Absolute-deadline pacing at ``rate_hz``: ``wait()`` returns at t0, t0 + T, t0 + 2T, ...

    A caller that falls behind by more than one period skips the missed deadlines instead of
    bursting to catch up (``skipped`` counts them).
    """

    def __init__(self, rate_hz: float, clock=time.monotonic, sleep=time.sleep) -> None:  # noqa: ANN001 - injectable for tests
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be positive, got {rate_hz!r}")
        self.period_s = 1.0 / rate_hz
        self.skipped = 0
        self._clock, self._sleep = clock, sleep
        self._next_s: float | None = None
        self._last_arrival_s: float | None = None
        self._source_period_s: float | None = None

    def wait(self) -> float:
        """Sleep until the next deadline; return it."""
        now = self._clock()
        if self._next_s is None:
            self._next_s = now
        elif now > self._next_s + self.period_s:
            missed = int((now - self._next_s) / self.period_s)
            self.skipped += missed
            self._next_s += missed * self.period_s
        if self._next_s > now:
            self._sleep(self._next_s - now)
        deadline = self._next_s
        self._next_s += self.period_s
        return deadline

    def due(self, now_s: float) -> bool:
        """Decimation for a source that pushes frames: True when the frame arriving at ``now_s`` is used.

        A frame counts as on time up to half a *source* period before the deadline (the source
        period is measured), so a camera running at the requested rate is never decimated by
        jitter, and a faster one is thinned to the requested rate.
        """
        if self._last_arrival_s is not None and now_s > self._last_arrival_s:
            interval = now_s - self._last_arrival_s
            self._source_period_s = interval if self._source_period_s is None else 0.9 * self._source_period_s + 0.1 * interval
        self._last_arrival_s = now_s
        slack = 0.5 * min(self.period_s, self._source_period_s or self.period_s)
        if self._next_s is not None and now_s < self._next_s - slack:
            return False
        if self._next_s is None or now_s > self._next_s + self.period_s:
            self._next_s = now_s + self.period_s  # first frame, or the source stalled: restart the schedule
        else:
            self._next_s += self.period_s
        return True


class OpenCVCamera:
    """A USB camera or a video file, read with cv2.VideoCapture."""

    def __init__(self, settings: OpenCVSettings) -> None:
        if settings.width <= 0 or settings.height <= 0:
            raise ValueError(f"width and height must be positive, got {settings.width}x{settings.height}")
        self.settings = settings
        self.pacer = RatePacer(settings.rate_hz)
        self.native_size: tuple[int, int] | None = None  # (width, height) the source delivers
        self.source_rate_hz: float = 0.0
        self._capture: cv2.VideoCapture | None = None
        self._frame_number = 0

    @property
    def is_open(self) -> bool:
        return self._capture is not None

    def open(self) -> None:
        if self._capture is not None:
            return
        s = self.settings
        if s.is_usb:
            capture = cv2.VideoCapture(int(s.device))
            if not capture.isOpened():
                raise DeviceNotFoundError(f"{s.source}: cannot open (is it plugged in? check `ls /dev/video*` and permissions)")
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
            capture.set(cv2.CAP_PROP_FPS, s.rate_hz)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, 1000.0 * s.read_timeout_s)  # where the backend supports it
        else:
            if not Path(s.device).is_file():
                raise DeviceNotFoundError(f"{s.source}: file not found")
            capture = cv2.VideoCapture(s.device)
            if not capture.isOpened():
                raise CameraError(f"{s.source}: OpenCV cannot decode this file")
        ok, first = capture.read()
        if not ok or first is None:
            capture.release()
            raise CameraError(f"{s.source}: opened but delivered no frame")
        self.native_size = (first.shape[1], first.shape[0])
        self.source_rate_hz = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not s.is_usb:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)  # publish the file from its first frame
        self._capture = capture
        self._frame_number = 0

    def read(self) -> CameraFrame:
        """The next frame at the configured rate (blocks until it is due). Raises FrameTimeoutError when the source ends."""
        if self._capture is None:
            raise CameraError(f"{self.settings.source}: read() before open()")
        if self.settings.is_usb:
            return self._read_usb()
        self.pacer.wait()
        ok, bgr = self._capture.read()
        if not ok and self.settings.loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._capture.read()
        if not ok:
            raise FrameTimeoutError(f"{self.settings.source}: end of file")
        return self._frame(bgr)

    def _read_usb(self) -> CameraFrame:
        while True:
            ok, bgr = self._capture.read()
            if not ok:
                raise FrameTimeoutError(f"{self.settings.source}: read failed (unplugged?)")
            if self.pacer.due(time.monotonic()):
                return self._frame(bgr)

    def _frame(self, bgr: np.ndarray) -> CameraFrame:
        received_s = time.monotonic()
        s = self.settings
        if bgr.ndim == 2:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if (rgb.shape[1], rgb.shape[0]) != (s.width, s.height):
            rgb = cv2.resize(rgb, (s.width, s.height), interpolation=cv2.INTER_AREA)
        number = self._frame_number
        self._frame_number += 1
        return CameraFrame(color_rgb=rgb, frame_number=number, received_monotonic_s=received_s)

    def close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()
