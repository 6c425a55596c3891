"""ROS wiring shared by the camera nodes (realsense_camera, opencv_camera).

A :class:`CameraNode` is a lifecycle node: configure loads the robot config, opens the camera
(a missing device or file fails configure with a clear message, and with ``autostart`` the
process exits 1), activate starts the capture thread (:class:`wam_ros.cameras.capture.CaptureLoop`),
deactivate stops it, cleanup and shutdown release the device.

Topics (names from the robot config's camera ``name``; frame id = its ``frame_id``):
  /wam/cameras/<name>/image        sensor_msgs/Image rgb8
  /wam/cameras/<name>/depth        sensor_msgs/Image 16UC1, millimetres, 0 = no data, aligned to
                                   colour (same frame id, same CameraInfo); depth cameras only, and
                                   computed only while the topic has subscribers
  /wam/cameras/<name>/camera_info  sensor_msgs/CameraInfo of the published image
  /diagnostics                     diagnostic_msgs/DiagnosticArray: rate, drops, outages, latency
All three camera topics of one frame carry the same stamp.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image

from wam_ros.cameras.capture import Camera, CaptureLoop
from wam_ros.cameras.health import StreamHealth
from wam_ros.cameras.types import CameraError, CameraFrame, Intrinsics
from wam_ros.parameters import param
from wam_ros.robot import CameraConfig, ConfigError, RobotConfig, load_robot_config
from wam_ros.ros import qos
from wam_ros.ros.conversions import numpy_to_image, seconds_to_time
from wam_ros.ros.node import ReleasingLifecycleNode, autostart, declare_parameters

IDENTITY_3X3 = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


@dataclass
class CameraParameters:
    robot_config: str = param("", "robot YAML whose cameras list describes this camera (filled in by bringup)")
    camera: str = param("", "name of this camera in the robot config's cameras list")
    reconnect_interval_s: float = param(1.0, "after losing the device, try to open it again this often")
    diagnostics_period_s: float = param(1.0, "period of the /diagnostics status")
    autostart: bool = param(True, "configure and activate at start-up (no lifecycle manager needed)")


def camera_info_message(intrinsics: Intrinsics | None, width: int, height: int) -> CameraInfo:
    """CameraInfo for the published image; all-zero K/P marks an uncalibrated camera (ROS convention)."""
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5, r=IDENTITY_3X3)
    if intrinsics is not None:
        info.distortion_model = intrinsics.distortion_model
        info.d = list(intrinsics.distortion)
        info.k = intrinsics.k
        info.p = intrinsics.p
    return info


def served_camera(parameters: CameraParameters, robot: RobotConfig, source: str, provides_depth: bool) -> CameraConfig:
    """The robot config's camera that ``parameters`` name, checked against what the node serves (ConfigError if not)."""
    if not parameters.camera:
        raise ConfigError(robot.path, "camera", f"parameter not set; cameras: {[c.name for c in robot.cameras]}")
    try:
        config = robot.camera(parameters.camera)
    except KeyError as error:
        raise ConfigError(robot.path, "camera", error.args[0]) from None
    if config.source != source:
        raise ConfigError(robot.path, f"cameras.{config.name}.source", f"is {config.source!r}, this node serves {source!r}")
    if config.depth and not provides_depth:
        raise ConfigError(robot.path, f"cameras.{config.name}.depth", f"{source} cameras have no depth stream")
    return config


class CameraNode(ReleasingLifecycleNode):
    """Base of the camera nodes: subclasses say how to open their camera and how to stamp frames."""

    SOURCE = ""  # the robot config's camera ``source`` this node serves
    PROVIDES_DEPTH = False
    Parameters: type[CameraParameters] = CameraParameters

    def __init__(self, default_name: str) -> None:
        # Set before the node exists: destroy_node() must work even if construction fails.
        self.camera_config: CameraConfig | None = None
        self.camera: Camera | None = None
        self.loop: CaptureLoop | None = None
        self.health: StreamHealth | None = None
        self.intrinsics: Intrinsics | None = None
        self._info_template: CameraInfo | None = None
        self._camera_publishers: dict = {}
        self._diagnostics_timer = None
        super().__init__(default_name)
        self.params = declare_parameters(self, self.Parameters)
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "diagnostics", qos.COMMANDS)
        if self.params.autostart:
            autostart(self)

    # --- what a camera kind provides -------------------------------------------------------
    def make_camera(self, config: CameraConfig) -> Camera:
        raise NotImplementedError

    def native_intrinsics(self) -> Intrinsics | None:
        """Intrinsics the opened device reports for the published image, if it knows them."""
        return None

    def frame_stamp_s(self, frame: CameraFrame, arrival_s: float) -> float:
        """ROS time of a frame that reached this process at ``arrival_s`` (ROS seconds)."""
        return arrival_s

    def after_publish(self) -> None:
        """Called after each published frame (capture thread)."""

    def depth_subscribers(self) -> int:
        publisher = self._camera_publishers.get("depth")
        return publisher.get_subscription_count() if publisher is not None else 0

    def hardware_id(self) -> str:
        return self.camera_config.device if self.camera_config else ""

    def extra_diagnostics(self) -> dict[str, str]:
        return {}

    # --- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            if not self.params.robot_config:
                raise ConfigError("", "robot_config", "parameter not set (bringup sets it; standalone: -p robot_config:=<path>)")
            config = served_camera(self.params, load_robot_config(self.params.robot_config), self.SOURCE, self.PROVIDES_DEPTH)
            self.camera_config = config
            self.camera = self.make_camera(config)
            self.camera.open()
        except (CameraError, ConfigError, KeyError, ValueError) as error:
            message = error.args[0] if isinstance(error, KeyError) else str(error)
            self.get_logger().error(f"configure failed: {message}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.intrinsics = self.native_intrinsics()
        if config.intrinsics_fx_fy_cx_cy:
            base = self.intrinsics or Intrinsics(config.width, config.height, 0.0, 0.0, 0.0, 0.0)
            self.intrinsics = base.with_override(config.intrinsics_fx_fy_cx_cy)
        self._info_template = camera_info_message(self.intrinsics, config.width, config.height)
        self._camera_publishers = {
            "image": self.create_lifecycle_publisher(Image, config.image_topic, qos.SENSORS),
            "camera_info": self.create_lifecycle_publisher(CameraInfo, config.camera_info_topic, qos.SENSORS),
        }
        if config.depth:
            self._camera_publishers["depth"] = self.create_lifecycle_publisher(Image, config.depth_topic, qos.SENSORS)
        source = self.camera.settings.source
        self.health = StreamHealth(source, config.rate_hz)
        self.loop = CaptureLoop(self.camera, self._publish_frame, self.health, self.params.reconnect_interval_s, self._log)
        self._diagnostics_timer = self.create_timer(self.params.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(f"configured {source} -> {config.image_topic} ({config.width}x{config.height} @ {config.rate_hz} Hz)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self.loop.start()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.loop.stop()
        return super().on_deactivate(state)

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()

    def _release(self) -> None:
        """Stop the capture thread, close the device, drop publishers and timer (idempotent)."""
        if self.loop is not None:
            self.loop.stop()
            self.loop = None
        if self.camera is not None:
            self.camera.close()
            self.camera = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        for publisher in self._camera_publishers.values():
            self.destroy_lifecycle_publisher(publisher)
        self._camera_publishers = {}

    # --- data path (capture thread) ----------------------------------------------------------
    def _publish_frame(self, frame: CameraFrame) -> None:
        try:
            self._publish_frame_messages(frame)
        except Exception:
            if self.context.ok():
                raise
            # Ctrl-C / SIGTERM shut the context down while this frame was on its way: drop it.

    def _publish_frame_messages(self, frame: CameraFrame) -> None:
        config = self.camera_config
        now_s = self.get_clock().now().nanoseconds * 1e-9
        arrival_s = now_s - (time.monotonic() - frame.received_monotonic_s)
        stamp = seconds_to_time(self.frame_stamp_s(frame, arrival_s))
        self._camera_publishers["image"].publish(numpy_to_image(frame.color_rgb, "rgb8", stamp, config.frame_id))
        if frame.depth_mm is not None and "depth" in self._camera_publishers:
            self._camera_publishers["depth"].publish(numpy_to_image(frame.depth_mm, "16UC1", stamp, config.frame_id))
        info = _copy_info(self._info_template)
        info.header.stamp, info.header.frame_id = stamp, config.frame_id
        self._camera_publishers["camera_info"].publish(info)
        published_s = self.get_clock().now().nanoseconds * 1e-9
        self.health.record_latency(published_s - (stamp.sec + stamp.nanosec * 1e-9))
        self.after_publish()

    def _publish_diagnostics(self) -> None:
        if self.health is None:
            return
        report = self.health.report(time.monotonic())
        values = {**report.values, **self.extra_diagnostics()}
        status = DiagnosticStatus(
            level=bytes([int(report.level)]),
            name=f"{self.get_name()}: camera {self.camera_config.name}",
            message=report.message,
            hardware_id=self.hardware_id(),
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_publisher.publish(array)

    def _log(self, level: str, message: str) -> None:
        if not self.context.ok():
            return  # shutting down: rosout is gone
        # rclpy fixes a logger call site's severity on first use: one call site per level.
        logger = self.get_logger()
        if level == "error":
            logger.error(message)
        elif level == "warn":
            logger.warning(message)
        else:
            logger.info(message)


def _copy_info(template: CameraInfo) -> CameraInfo:
    return CameraInfo(width=template.width, height=template.height, distortion_model=template.distortion_model,
                      d=list(template.d), k=list(template.k), r=list(template.r), p=list(template.p))
