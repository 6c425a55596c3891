"""USB camera or video file node through OpenCV (lifecycle, autostart).

Serves one ``source: opencv`` camera of the robot config: ``device`` is a USB index or a video
file path (the ``device`` parameter overrides it), published as rgb8 at the configured size
(resized when the source differs) and rate (a USB camera is decimated to it; a file plays one
frame per period, looping unless ``loop`` is false). Stamps are the ROS time at which the frame
reached the node. CameraInfo carries the config's ``intrinsics_fx_fy_cx_cy`` when set, else
all-zero K (uncalibrated). A lost device is reported on /diagnostics and reopened.

    python -m wam_ros.nodes.opencv_camera_node --ros-args -p robot_config:=<robot.yaml> -p camera:=side
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wam_ros.cameras.opencv_source import OpenCVCamera, OpenCVSettings
from wam_ros.nodes.camera_common import CameraNode, CameraParameters, served_camera
from wam_ros.parameters import param
from wam_ros.robot import CameraConfig, ConfigError, RobotConfig
from wam_ros.ros.node import run_node


@dataclass
class Parameters(CameraParameters):
    device: str = param("", "USB index or video file; empty: the robot config's device field")
    loop: bool = param(True, "a video file starts over at its end (false: the end is reported like an unplug)")
    read_timeout_s: float = param(1.0, "a USB read that takes longer counts as a lost device")


class OpenCVCameraNode(CameraNode):
    SOURCE = "opencv"
    Parameters = Parameters

    def __init__(self) -> None:
        super().__init__("opencv_camera")

    def make_camera(self, config: CameraConfig) -> OpenCVCamera:
        device = self.params.device or config.device
        if not device:
            raise ValueError(f"camera {config.name!r}: no device (USB index or video file) in the robot config or the device parameter")
        return OpenCVCamera(OpenCVSettings(
            device=device, width=config.width, height=config.height, rate_hz=config.rate_hz,
            loop=self.params.loop, read_timeout_s=self.params.read_timeout_s,
        ))

    def hardware_id(self) -> str:
        return self.params.device or self.camera_config.device

    def extra_diagnostics(self) -> dict[str, str]:
        if self.camera is None or self.camera.native_size is None:
            return {}
        width, height = self.camera.native_size
        return {"native_size": f"{width}x{height}", "source_rate_hz": f"{self.camera.source_rate_hz:.2f}",
                "skipped_deadlines": str(self.camera.pacer.skipped)}


def check(parameters: Parameters, robot: RobotConfig) -> list[str]:
    """Settings that would fail configure (for ``wam-ros bringup --check``; no device is opened)."""
    try:
        camera = served_camera(parameters, robot, OpenCVCameraNode.SOURCE, OpenCVCameraNode.PROVIDES_DEPTH)
    except ConfigError as error:
        return [str(error)]
    device = parameters.device or camera.device
    if not device:
        return [f"camera {camera.name!r}: no device (a USB index or a video file) in {robot.path} or the device parameter"]
    if not OpenCVSettings(device=device, width=camera.width, height=camera.height, rate_hz=camera.rate_hz).is_usb and not Path(device).is_file():
        return [f"camera {camera.name!r}: video file {device}: no such file"]
    return []


def main(args: list[str] | None = None) -> int:
    return run_node(OpenCVCameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
