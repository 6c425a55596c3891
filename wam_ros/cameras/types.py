"""Types shared by the camera sources: frames, intrinsics, errors."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


class CameraError(RuntimeError):
    """A camera cannot be opened or stopped delivering frames; the message says what to check."""


class DeviceNotFoundError(CameraError):
    """The requested device (serial number, USB index or file) does not exist."""


class FrameTimeoutError(CameraError):
    """No frame arrived within the timeout (device unplugged, stalled, or a file that ended)."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the published image (pixels) plus the lens distortion model.

    ``distortion_model`` uses ROS' names (sensor_msgs/distortion_models): ``plumb_bob``
    (k1, k2, p1, p2, k3) or ``equidistant`` (k1..k4).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def k(self) -> list[float]:
        """Row-major 3x3 camera matrix, as in sensor_msgs/CameraInfo.k."""
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    @property
    def p(self) -> list[float]:
        """Row-major 3x4 projection matrix of a monocular camera (no baseline)."""
        return [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]

    def with_override(self, fx_fy_cx_cy: tuple[float, ...]) -> "Intrinsics":
        """The config's ``intrinsics_fx_fy_cx_cy`` (a calibration of ours) replaces the device's; empty keeps them."""
        if not fx_fy_cx_cy:
            return self
        if len(fx_fy_cx_cy) != 4:
            raise ValueError(f"intrinsics override needs fx, fy, cx, cy, got {fx_fy_cx_cy!r}")
        fx, fy, cx, cy = fx_fy_cx_cy
        return replace(self, fx=fx, fy=fy, cx=cx, cy=cy)


@dataclass(frozen=True)
class CameraFrame:
    """One captured frame: colour (RGB) and, for depth cameras, depth aligned to colour.

    ``device_time_s`` is the device's own stamp (None when the source has none); the node maps
    it to ROS time. ``frame_number`` counts device frames, so gaps reveal drops.
    """

    color_rgb: np.ndarray  # (H, W, 3) uint8
    frame_number: int
    device_time_s: float | None = None
    depth_mm: np.ndarray | None = None  # (H, W) uint16, millimetres, 0 = no measurement
    received_monotonic_s: float = 0.0  # time.monotonic() when the frame reached this process
