"""RealSense colour + aligned depth camera node (lifecycle, autostart).

Serves one ``source: realsense`` camera of the robot config: the device is picked by serial
number (the config's ``device``, or the ``serial_number`` parameter), streamed at the
configured resolution and rate, depth aligned to colour (16UC1 millimetres), intrinsics from
the device (or the config's override) as CameraInfo. ``playback_file`` plays a recording
through the same librealsense pipeline instead of a device.

Time stamps: the device stamps each frame with its own clock; :class:`DeviceClockMapper` maps
it to ROS time with a windowed minimum-delay offset (drift followed within ``clock_window_s``,
re-synchronised after a clock jump or a reconnect); see docs/real_robot.md.
After an unplug (no frame within ``frame_timeout_s``) the node reports ERROR on /diagnostics,
closes the device and reopens it every ``reconnect_interval_s`` until it is back.

    python -m wam_ros.nodes.realsense_camera_node --ros-args -p robot_config:=config/robots/fr3_real.yaml -p camera:=front
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wam_ros.cameras.clock import DeviceClockMapper
from wam_ros.cameras.realsense import RealSenseCamera, RealSenseSettings
from wam_ros.cameras.types import CameraFrame, Intrinsics
from wam_ros.nodes.camera_common import CameraNode, CameraParameters, served_camera
from wam_ros.parameters import param
from wam_ros.robot import CameraConfig, ConfigError, RobotConfig
from wam_ros.ros.node import run_node


@dataclass
class Parameters(CameraParameters):
    serial_number: str = param("", "serial number of the device; empty: the robot config's device field")
    playback_file: str = param("", "play this librealsense recording (.db3/.bag) instead of a live device")
    frame_timeout_s: float = param(1.0, "no frame for this long counts as a lost device")
    clock_window_s: float = param(10.0, "window of the minimum-delay device-to-ROS clock offset estimate")
    clock_resync_threshold_s: float = param(0.5, "re-synchronise the clock when a stamp strays this far from arrival")


class RealSenseCameraNode(CameraNode):
    SOURCE = "realsense"
    PROVIDES_DEPTH = True
    Parameters = Parameters

    def __init__(self) -> None:
        super().__init__("realsense_camera")
        self.clock = DeviceClockMapper(self.params.clock_window_s, self.params.clock_resync_threshold_s)
        self._clock_epoch = 0

    def make_camera(self, config: CameraConfig) -> RealSenseCamera:
        return RealSenseCamera(RealSenseSettings(
            serial_number=self.params.serial_number or config.device,
            width=config.width,
            height=config.height,
            rate_hz=config.rate_hz,
            depth=config.depth,
            playback_file=self.params.playback_file,
            frame_timeout_s=self.params.frame_timeout_s,
        ))

    def native_intrinsics(self) -> Intrinsics | None:
        return self.camera.intrinsics

    def after_publish(self) -> None:
        # Aligning depth costs most of a frame's CPU: skip it while nobody listens to depth.
        self.camera.align_depth = self.depth_subscribers() > 0

    def frame_stamp_s(self, frame: CameraFrame, arrival_s: float) -> float:
        if self.health.reconnects != self._clock_epoch:
            self._clock_epoch = self.health.reconnects
            self.clock.reset()  # a reconnected device may have restarted its clock
        return self.clock.to_host(frame.device_time_s, arrival_s)

    def hardware_id(self) -> str:
        info = self.camera.device_info if self.camera is not None else None
        return info.serial_number if info else (self.params.serial_number or self.camera_config.device)

    def extra_diagnostics(self) -> dict[str, str]:
        values = {"clock_resets": str(self.clock.resets)}
        if self.clock.offset_s is not None:
            values["clock_offset_s"] = f"{self.clock.offset_s:.6f}"
        if self.camera is not None:
            values["skipped_framesets"] = str(self.camera.skipped_sets)
            if self.camera.device_info is not None:
                values["device"] = str(self.camera.device_info)
        return values


def check(parameters: Parameters, robot: RobotConfig) -> list[str]:
    """Settings that would fail configure (for ``wam-ros bringup --check``; no device is opened)."""
    try:
        camera = served_camera(parameters, robot, RealSenseCameraNode.SOURCE, RealSenseCameraNode.PROVIDES_DEPTH)
    except ConfigError as error:
        return [str(error)]
    if parameters.playback_file:
        path = Path(parameters.playback_file)
        return [] if path.is_file() else [f"playback_file {path}: no such file"]
    realsense = [c.name for c in robot.cameras if c.source == RealSenseCameraNode.SOURCE]
    if not (parameters.serial_number or camera.device) and len(realsense) > 1:
        return [f"camera {camera.name!r} has no serial number, and {robot.path} has {len(realsense)} RealSense cameras "
                f"({', '.join(realsense)}): set each camera's device to its serial (`wam-ros cameras list` prints them) "
                "or pass serial_number:=\"'<serial>'\""]
    return []


def main(args: list[str] | None = None) -> int:
    return run_node(RealSenseCameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
