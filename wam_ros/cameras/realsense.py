"""Intel RealSense colour + depth through the real librealsense pipeline (pyrealsense2, no ROS).

One :class:`RealSenseCamera` opens a device by serial number (or a recorded ``.db3``/``.bag``
file, which librealsense plays back through the very same ``rs.pipeline``), streams RGB8 colour
and Z16 depth at the configured resolution and rate, aligns depth to colour with ``rs.align``
and hands out :class:`~wam_ros.cameras.types.CameraFrame` objects.

Depth is returned in millimetres as uint16 (0 = no measurement): the sensor's native Z16 when
its depth unit is 1 mm (D400 default), rescaled otherwise (e.g. a D405's 0.1 mm unit).
Colour/depth pairing: librealsense's syncer may hand out a colour frame twice, or pair it with
a depth frame from another exposure; each colour frame is returned once, and only with a depth
frame whose device stamp lies within half a frame period of it (skipped sets are counted).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wam_ros.cameras.types import CameraError, CameraFrame, DeviceNotFoundError, FrameTimeoutError, Intrinsics

_DISTORTION_MODELS = {
    "none": "plumb_bob",
    "brown_conrady": "plumb_bob",
    "modified_brown_conrady": "plumb_bob",
    "inverse_brown_conrady": "plumb_bob",
    "kannala_brandt4": "equidistant",
}


def import_pyrealsense2() -> Any:
    """pyrealsense2, imported on first use.

    Lazy on purpose: the pyrealsense2 wheel exports its own copy of ROS' rcutils symbols (it
    bundles rosbag2 for .db3 recordings). Loaded before rclpy, those copies win and the process
    crashes at exit (SIGSEGV); loaded after rclpy, both work. Nodes import rclpy first.
    """
    try:
        import pyrealsense2
    except ImportError as error:
        raise CameraError(f"pyrealsense2 cannot be imported ({error}); it needs Debian's libusb-1.0-0 (make setup installs it)") from None
    return pyrealsense2


@dataclass(frozen=True)
class DeviceInfo:
    """What librealsense reports about one device."""

    serial_number: str
    name: str
    firmware_version: str = ""
    usb_type: str = ""

    def __str__(self) -> str:
        usb = f", USB {self.usb_type}" if self.usb_type else ""
        firmware = f", firmware {self.firmware_version}" if self.firmware_version else ""
        return f"{self.name} (serial {self.serial_number}{firmware}{usb})"


def _device_info(device: Any) -> DeviceInfo:
    rs = import_pyrealsense2()

    def info(field: Any) -> str:
        return device.get_info(field) if device.supports(field) else ""

    return DeviceInfo(
        serial_number=info(rs.camera_info.serial_number),
        name=info(rs.camera_info.name),
        firmware_version=info(rs.camera_info.firmware_version),
        usb_type=info(rs.camera_info.usb_type_descriptor),
    )


def list_devices() -> list[DeviceInfo]:
    """RealSense devices connected to this machine."""
    rs = import_pyrealsense2()
    return [_device_info(device) for device in rs.context().query_devices()]


@dataclass(frozen=True)
class RealSenseSettings:
    """What to open and how to stream it."""

    serial_number: str = ""  # "" = the only connected device
    width: int = 640
    height: int = 480
    rate_hz: float = 30.0
    depth: bool = True
    playback_file: str = ""  # a recorded .db3 / .bag played back instead of a live device
    frame_timeout_s: float = 1.0  # no frame for this long = device lost

    @property
    def fps(self) -> int:
        fps = int(round(self.rate_hz))
        if fps <= 0 or abs(fps - self.rate_hz) > 1e-6:
            raise CameraError(f"RealSense rate must be a whole number of frames per second (6, 15, 30, 60, 90), got {self.rate_hz}")
        return fps

    @property
    def source(self) -> str:
        """Human-readable name of what is opened, for messages."""
        if self.playback_file:
            return f"RealSense recording {self.playback_file}"
        return f"RealSense {self.serial_number}" if self.serial_number else "RealSense (the only connected one)"


class RealSenseCamera:
    """A started librealsense pipeline: colour (+ aligned depth) frames on demand.

    ``open()`` raises :class:`DeviceNotFoundError` or :class:`CameraError` with a message that
    names the device and what to check; ``read()`` raises :class:`FrameTimeoutError` when the
    device stops delivering (unplugged, or a recording that ended). ``close()`` is idempotent.
    """

    def __init__(self, settings: RealSenseSettings) -> None:
        self._rs = import_pyrealsense2()
        self.fps = settings.fps  # validates the rate before any hardware is touched
        self.settings = settings
        self.device_info: DeviceInfo | None = None
        self.intrinsics: Intrinsics | None = None
        self.depth_scale_m: float = 0.0
        self.skipped_sets = 0  # framesets dropped because colour repeated or depth did not pair
        self.align_depth = True  # False: colour only (rs.align is most of the per-frame CPU); depth stays paired
        self._pipeline: Any = None  # rs.pipeline while open
        self._align: Any = None  # rs.align when depth is streamed
        self._last_color_number: int | None = None
        self._serial = settings.serial_number

    @property
    def is_open(self) -> bool:
        return self._pipeline is not None

    def open(self) -> None:
        """Find the device (or file), check that it offers the requested streams, and start it."""
        if self._pipeline is not None:
            return
        settings, rs = self.settings, self._rs
        config = rs.config()
        if settings.playback_file:
            path = Path(settings.playback_file)
            if not path.is_file():
                raise DeviceNotFoundError(f"{settings.source}: file not found")
            config.enable_device_from_file(os.fspath(path), repeat_playback=False)
        else:
            self._serial = self._resolve_serial()
            config.enable_device(self._serial)
        config.enable_stream(rs.stream.color, settings.width, settings.height, rs.format.rgb8, self.fps)
        if settings.depth:
            config.enable_stream(rs.stream.depth, settings.width, settings.height, rs.format.z16, self.fps)
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(config)
        except RuntimeError as error:
            raise CameraError(f"{settings.source}: cannot start {self._mode()}: {error}. {self._supported_modes()}") from None
        try:
            self._configure_started(profile)
        except Exception:
            pipeline.stop()
            raise
        self._pipeline = pipeline
        self._last_color_number = None

    def _configure_started(self, profile: Any) -> None:
        rs = self._rs
        device = profile.get_device()
        self.device_info = _device_info(device)
        wanted = self.settings.serial_number
        if wanted and self.device_info.serial_number != wanted:
            raise DeviceNotFoundError(
                f"{self.settings.source}: the recording holds serial {self.device_info.serial_number}, not {wanted}"
            )
        if device.is_playback():
            # Replay at the recorded pace, as the camera delivered it.
            device.as_playback().set_real_time(True)
        else:
            # Small sensor queues: under load, frames are dropped instead of growing stale (default 16).
            for sensor in device.query_sensors():
                if sensor.supports(rs.option.frames_queue_size) and not sensor.is_option_read_only(rs.option.frames_queue_size):
                    sensor.set_option(rs.option.frames_queue_size, 2)
        color = profile.get_stream(rs.stream.color).as_video_stream_profile()
        self.intrinsics = _intrinsics(color.get_intrinsics())
        if self.settings.depth:
            self.depth_scale_m = device.first_depth_sensor().get_depth_scale()
            self._align = rs.align(rs.stream.color)

    def _resolve_serial(self) -> str:
        connected = list_devices()
        wanted = self.settings.serial_number
        serials = [d.serial_number for d in connected]
        listing = ", ".join(str(d) for d in connected) or "none"
        if wanted:
            if wanted not in serials:
                raise DeviceNotFoundError(
                    f"no RealSense with serial {wanted} is connected (connected: {listing}); "
                    "check the USB 3 cable and `wam-ros cameras list`"
                )
            return wanted
        if not connected:
            raise DeviceNotFoundError("no RealSense device is connected; check the USB 3 cable and `wam-ros cameras list`")
        if len(connected) > 1:
            raise DeviceNotFoundError(f"several RealSense devices are connected ({listing}); set this camera's serial number (device:) in the robot config")
        return serials[0]

    def _mode(self) -> str:
        s = self.settings
        return f"{s.width}x{s.height} @ {self.fps} Hz rgb8" + (" + z16 depth" if s.depth else "")

    def _supported_modes(self) -> str:
        """Colour modes the live device offers, so a wrong resolution or rate is easy to fix."""
        if self.settings.playback_file:
            return ""
        rs, modes = self._rs, set()
        for device in rs.context().query_devices():
            if _device_info(device).serial_number != self._serial:
                continue
            for sensor in device.query_sensors():
                for stream_profile in sensor.get_stream_profiles():
                    if stream_profile.stream_type() == rs.stream.color and stream_profile.format() == rs.format.rgb8:
                        video = stream_profile.as_video_stream_profile()
                        modes.add((video.width(), video.height(), stream_profile.fps()))
        return "Supported rgb8 colour modes: " + ", ".join(f"{w}x{h}@{f}" for w, h, f in sorted(modes)) if modes else ""

    def read(self) -> CameraFrame:
        """The next new colour frame (with aligned depth). Raises FrameTimeoutError after ``frame_timeout_s``."""
        if self._pipeline is None:
            raise CameraError(f"{self.settings.source}: read() before open()")
        half_period_ms = 500.0 / self.fps
        timeout_s = self.settings.frame_timeout_s
        timeout_ms = max(1, int(timeout_s * 1000))
        while True:
            try:
                ok, frames = self._pipeline.try_wait_for_frames(timeout_ms)
            except RuntimeError as error:  # device removed while waiting
                raise FrameTimeoutError(f"{self.settings.source}: {error}") from None
            if not ok:
                raise FrameTimeoutError(f"{self.settings.source}: no frames for {timeout_s:.2f} s")
            frames = self._newest(frames)
            received_s = time.monotonic()
            color = frames.get_color_frame()
            if not color or color.get_frame_number() == self._last_color_number:
                self.skipped_sets += 1
                continue
            depth_mm = None
            if self.settings.depth:
                depth = frames.get_depth_frame()
                if not depth or abs(depth.get_timestamp() - color.get_timestamp()) > half_period_ms:
                    self.skipped_sets += 1
                    continue
                if self.align_depth:
                    aligned = self._align.process(frames)
                    depth_mm = self._to_millimetres(np.asanyarray(aligned.get_depth_frame().get_data()))
                    color = aligned.get_color_frame()
            self._last_color_number = color.get_frame_number()
            return CameraFrame(
                color_rgb=np.array(np.asanyarray(color.get_data()), copy=True),
                frame_number=int(color.get_frame_number()),
                device_time_s=color.get_timestamp() * 1e-3,
                depth_mm=depth_mm,
                received_monotonic_s=received_s,
            )

    def _newest(self, frames: Any) -> Any:
        """Skip framesets that queued up behind ``frames`` while we were busy: a late frame is worth
        less than a fresh one to a controller (the skipped ones show as frame-number gaps)."""
        while True:
            newer = self._pipeline.poll_for_frames()
            if not newer:
                return frames
            frames = newer

    def _to_millimetres(self, raw: np.ndarray) -> np.ndarray:
        if abs(self.depth_scale_m - 1e-3) < 1e-7:
            return np.array(raw, dtype=np.uint16, copy=True)
        millimetres = np.rint(raw.astype(np.float32) * (self.depth_scale_m * 1e3))
        return np.clip(millimetres, 0, np.iinfo(np.uint16).max).astype(np.uint16)

    def close(self) -> None:
        """Stop streaming and release the device (safe to call twice, or after an unplug)."""
        pipeline, self._pipeline = self._pipeline, None
        self._align = None
        if pipeline is not None:
            try:
                pipeline.stop()
            except RuntimeError:
                pass  # already stopped by librealsense after a disconnect


def _intrinsics(native: Any) -> Intrinsics:
    model = _DISTORTION_MODELS.get(native.model.name, "plumb_bob")
    count = 4 if model == "equidistant" else 5
    return Intrinsics(
        width=native.width, height=native.height, fx=native.fx, fy=native.fy, cx=native.ppx, cy=native.ppy,
        distortion_model=model, distortion=tuple(float(c) for c in list(native.coeffs)[:count]),
    )
