"""Synthetic RealSense recordings: exercise the real librealsense pipeline without a camera.

:func:`record_synthetic_rgbd` builds an ``rs.software_device`` with a colour and a depth sensor
(own intrinsics, a known depth-to-colour extrinsic), feeds it frames of known content at the
given rate and records them with ``rs.recorder``. ``rs.pipeline`` plays the file back exactly
as it would stream a camera (``RealSenseSettings(playback_file=...)``), ``rs.align`` included.

Content (lossless in the recording, so it can be checked pixel for pixel):
colour frame n: R = column gradient, G = row gradient, B = n mod 256 (:func:`synthetic_color`);
depth: a plane at ``plane_mm`` with a rectangle at ``box_mm`` (:func:`synthetic_depth_mm`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wam_ros.cameras.types import Intrinsics


@dataclass(frozen=True)
class SyntheticScene:
    """What the synthetic camera sees and how it is built."""

    serial_number: str = "900000000001"
    width: int = 640
    height: int = 480
    rate_hz: int = 30
    color: Intrinsics = Intrinsics(640, 480, 615.0, 615.0, 322.0, 238.0)
    depth: Intrinsics = Intrinsics(640, 480, 385.0, 385.0, 320.0, 240.0)
    depth_to_color_m: tuple[float, float, float] = (0.015, 0.0, 0.0)  # translation, no rotation
    plane_mm: int = 1000
    box_mm: int = 800
    box_rows: tuple[int, int] = (200, 280)  # depth pixels [start, stop)
    box_cols: tuple[int, int] = (280, 360)
    first_device_time_ms: float = 5000.0
    device_time_scale: float = 1.0  # device clock ticks per host second / 1 (drift: 1 + 50e-6)
    device_times_ms: list[float] = field(default_factory=list, compare=False)


def synthetic_color(frame_number: int, width: int, height: int) -> np.ndarray:
    """RGB frame ``frame_number``: R = column gradient, G = row gradient, B = frame number mod 256."""
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (np.arange(width) * 255 // max(width - 1, 1))[None, :]
    image[..., 1] = (np.arange(height) * 255 // max(height - 1, 1))[:, None]
    image[..., 2] = frame_number % 256
    return image


def synthetic_depth_mm(scene: SyntheticScene) -> np.ndarray:
    """Depth image (mm) in the depth camera's own pixels: a plane with a nearer rectangle."""
    depth = np.full((scene.height, scene.width), scene.plane_mm, np.uint16)
    depth[scene.box_rows[0]:scene.box_rows[1], scene.box_cols[0]:scene.box_cols[1]] = scene.box_mm
    return depth


def _rs_intrinsics(rs, intrinsics: Intrinsics):  # noqa: ANN001, ANN202 - pyrealsense2 types
    native = rs.intrinsics()
    native.width, native.height = intrinsics.width, intrinsics.height
    native.fx, native.fy, native.ppx, native.ppy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    native.model = rs.distortion.none
    native.coeffs = [0.0] * 5
    return native


def record_synthetic_rgbd(path: Path, frames: int, scene: SyntheticScene = SyntheticScene()) -> SyntheticScene:
    """Record ``frames`` colour + depth frames at ``scene.rate_hz`` (takes frames / rate seconds).

    Returns the scene with ``device_times_ms`` filled in (the stamps the device gave each frame).
    """
    import pyrealsense2 as rs

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, scene.serial_number)
    device.register_info(rs.camera_info.name, "Intel RealSense (synthetic software device)")
    depth_sensor, color_sensor = device.add_sensor("Depth"), device.add_sensor("Color")

    def stream(kind, fmt, bpp: int, intrinsics: Intrinsics, uid: int):  # noqa: ANN001, ANN202
        description = rs.video_stream()
        description.type, description.fmt, description.bpp = kind, fmt, bpp
        description.width, description.height, description.fps = scene.width, scene.height, scene.rate_hz
        description.intrinsics, description.index, description.uid = _rs_intrinsics(rs, intrinsics), 0, uid
        return description

    depth_profile = depth_sensor.add_video_stream(stream(rs.stream.depth, rs.format.z16, 2, scene.depth, 0))
    color_profile = color_sensor.add_video_stream(stream(rs.stream.color, rs.format.rgb8, 3, scene.color, 1))
    depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
    extrinsics = rs.extrinsics()
    extrinsics.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    extrinsics.translation = list(scene.depth_to_color_m)
    depth_profile.register_extrinsics_to(color_profile, extrinsics)
    device.create_matcher(rs.matchers.default)

    recorder = rs.recorder(str(path), device)
    sensors = {sensor.name: sensor for sensor in recorder.query_sensors()}
    sink = rs.frame_queue(2 * frames + 2)
    sensors["Depth"].open(depth_profile)
    sensors["Color"].open(color_profile)
    sensors["Depth"].start(sink)
    sensors["Color"].start(sink)
    depth_pixels = synthetic_depth_mm(scene)
    device_times: list[float] = []
    start = time.monotonic()
    for number in range(frames):
        # Absolute deadlines: the recording keeps the rate even when a frame takes longer to push.
        delay = start + number / scene.rate_hz - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp_ms = scene.first_device_time_ms + number * 1000.0 / scene.rate_hz * scene.device_time_scale
        device_times.append(stamp_ms)
        for sensor, profile, pixels, bpp in (
            (depth_sensor, depth_profile, depth_pixels, 2),
            (color_sensor, color_profile, synthetic_color(number, scene.width, scene.height), 3),
        ):
            frame = rs.software_video_frame()
            frame.pixels, frame.stride, frame.bpp = pixels, scene.width * bpp, bpp
            frame.timestamp, frame.domain, frame.frame_number = stamp_ms, rs.timestamp_domain.hardware_clock, number
            frame.profile = profile.as_video_stream_profile()
            if bpp == 2:
                frame.depth_units = 0.001
            sensor.on_video_frame(frame)
    for sensor in sensors.values():
        sensor.stop()
        sensor.close()
    del recorder  # closes and flushes the file
    return SyntheticScene(**{**scene.__dict__, "device_times_ms": device_times})


def expected_aligned_box(scene: SyntheticScene) -> tuple[int, int, int, int]:
    """Bounding box (row0, col0, row1, col1, inclusive) of the near rectangle after alignment to colour.

    Each depth pixel covers [u - 0.5, u + 0.5] and lands, deprojected at its depth and moved by
    the extrinsic, on the colour pixels its footprint overlaps (as ``rs.align`` does).
    """
    z = scene.box_mm / 1000.0
    (r0, r1), (c0, c1) = scene.box_rows, scene.box_cols
    tx, ty, _ = scene.depth_to_color_m
    d, c = scene.depth, scene.color

    def to_color(u: float, v: float) -> tuple[float, float]:
        x = (u - d.cx) / d.fx * z + tx
        y = (v - d.cy) / d.fy * z + ty
        return c.fx * x / z + c.cx, c.fy * y / z + c.cy

    u_lo, v_lo = to_color(c0 - 0.5, r0 - 0.5)
    u_hi, v_hi = to_color(c1 - 1 + 0.5, r1 - 1 + 0.5)
    return round(v_lo), round(u_lo), round(v_hi), round(u_hi)
