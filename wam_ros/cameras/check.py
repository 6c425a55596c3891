"""Camera checks without ROS, for bringing up a real robot's cameras (``wam-ros cameras``).

    wam-ros cameras list                       # RealSense serials, USB video devices
    wam-ros cameras check --robot fr3_real     # open every configured camera, measure it
    wam-ros cameras record --serial 123456789012 --seconds 10 front.db3

``check`` exits non-zero when a camera cannot be opened or delivers below 80 % of its rate;
``record`` writes a librealsense recording that the camera node replays with ``playback_file``.
"""
from __future__ import annotations

import glob
import time

import numpy as np

from wam_ros.cameras.opencv_source import OpenCVCamera, OpenCVSettings
from wam_ros.cameras.realsense import RealSenseCamera, RealSenseSettings, import_pyrealsense2, list_devices
from wam_ros.cameras.types import CameraError
from wam_ros.robot import CameraConfig, ConfigError, load_robot_config


def list_cameras() -> int:
    try:
        devices = list_devices()
    except CameraError as error:
        print(f"RealSense: {error}")
        devices = []
    print(f"RealSense devices: {len(devices)}")
    for device in devices:
        print(f"  {device}")
    video = sorted(glob.glob("/dev/video*"))
    print(f"USB video devices: {', '.join(video) or 'none'}")
    return 0


def open_camera(camera: CameraConfig) -> RealSenseCamera | OpenCVCamera:
    if camera.source == "realsense":
        return RealSenseCamera(RealSenseSettings(serial_number=camera.device, width=camera.width, height=camera.height,
                                                 rate_hz=camera.rate_hz, depth=camera.depth))
    if camera.source == "opencv":
        return OpenCVCamera(OpenCVSettings(device=camera.device, width=camera.width, height=camera.height, rate_hz=camera.rate_hz))
    raise CameraError(f"camera {camera.name}: source {camera.source!r} has no hardware to check")


def check_camera(camera: CameraConfig, seconds: float) -> bool:
    """Open one camera, read for ``seconds`` and print what it delivered; True when it is healthy."""
    try:
        source = open_camera(camera)
        source.open()
    except CameraError as error:
        print(f"[FAIL] {camera.name}: {error}")
        return False
    try:
        frames, numbers, valid_depth = 0, [], []
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            frame = source.read()
            frames += 1
            numbers.append(frame.frame_number)
            if frame.depth_mm is not None:
                valid_depth.append(float(np.mean(frame.depth_mm > 0)))
        rate = frames / (time.monotonic() - start)
    except CameraError as error:
        print(f"[FAIL] {camera.name}: {error}")
        return False
    finally:
        source.close()
    gaps = int(np.sum(np.maximum(np.diff(numbers) - 1, 0))) if len(numbers) > 1 else 0
    healthy = rate >= 0.8 * camera.rate_hz
    depth = f", depth valid on {100 * np.mean(valid_depth):.0f} % of pixels" if valid_depth else ""
    intrinsics = getattr(source, "intrinsics", None)
    k = f", fx {intrinsics.fx:.1f} fy {intrinsics.fy:.1f} cx {intrinsics.cx:.1f} cy {intrinsics.cy:.1f}" if intrinsics else ""
    device = getattr(source, "device_info", None) or camera.device
    print(f"[{'ok' if healthy else 'FAIL'}] {camera.name} ({device}): {rate:.1f} Hz of {camera.rate_hz:g}, "
          f"{gaps} dropped{depth}{k}")
    return healthy


def check(robot_name: str, seconds: float) -> int:
    try:
        robot = load_robot_config(robot_name)
    except ConfigError as error:
        print(error)
        return 2
    results = [check_camera(camera, seconds) for camera in robot.cameras if camera.source != "sim"]
    if not results:
        print(f"{robot.name} has no hardware cameras")
    return 0 if all(results) else 1


def record(serial: str, seconds: float, path: str, width: int, height: int, rate_hz: int) -> int:
    """Record colour + depth of one RealSense for ``seconds`` into ``path`` (.db3)."""
    rs = import_pyrealsense2()
    config = rs.config()
    config.enable_device(serial)
    config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, rate_hz)
    config.enable_stream(rs.stream.depth, width, height, rs.format.z16, rate_hz)
    config.enable_record_to_file(path)
    pipeline = rs.pipeline()
    try:
        pipeline.start(config)
    except RuntimeError as error:
        print(f"RealSense {serial}: cannot start {width}x{height} @ {rate_hz} Hz: {error}")
        return 1
    frames, code = 0, 0
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pipeline.wait_for_frames(2000)
            frames += 1
    except KeyboardInterrupt:
        pass
    except RuntimeError as error:  # unplugged while recording: keep what was written
        print(f"RealSense {serial}: {error}")
        code = 1
    finally:
        pipeline.stop()
    print(f"recorded {frames} framesets to {path}")
    return code
