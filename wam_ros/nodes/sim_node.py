"""MuJoCo Panda tabletop as a ROS 2 node that stands in for the real arm, cameras and clock.

Publishes /clock (it runs on wall time; every other node uses sim time), /joint_states, the
configured cameras (``/wam/cameras/<name>/image``, ``.../camera_info``, ``.../depth``) and
``/wam/sim/task_status``; serves ``/wam/sim/reset``. Takes the commands a real arm's
controllers take, on the topics of the robot config's ``backend:`` section:
trajectory_msgs/JointTrajectory (joint_trajectory_controller semantics, see
wam_ros.sim.trajectory), geometry_msgs/PoseStamped + wam_ros/ImpedanceGains (CRISP-style
Cartesian impedance) and the gripper the way the robot config's ``gripper.interface`` names:
wam_ros/GripperCommand on the backend's topic, or control_msgs/action/GripperCommand goals, served
like ros2_controllers' gripper_action_controller (wam_ros.sim.gripper_server). A bad command is
rejected with a logged reason and the simulation runs on. The physics and the control laws live
in wam_ros.sim (no ROS).
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from control_msgs.action import GripperCommand as GripperCommandAction
from geometry_msgs.msg import Pose, PoseStamped
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory

from wam_ros_interfaces.msg import GripperCommand, ImpedanceGains, TaskStatus
from wam_ros.parameters import param
from wam_ros.robot import load_robot_config
from wam_ros.ros import qos
from wam_ros.ros.conversions import numpy_to_image, seconds_to_time, time_to_seconds
from wam_ros.ros.node import autostart, declare_parameters, in_thread, run_node
from wam_ros.sim.gripper_server import REACHED, STALLED, GripperGoalWatch
from wam_ros_interfaces.srv import ResetSim


#: How often a running GripperCommand goal looks at the fingers [s, wall time].
GRIPPER_POLL_S = 0.01


@dataclass
class Parameters:
    PROVIDES_CLOCK: ClassVar[bool] = True  # the simulator publishes /clock and runs on wall time

    robot_config: str = param("", "path of the robot YAML (filled in by bringup)")
    task: str = param("pick_place", "task of the first episode: reach, push, pick_place, stack, bin_three")
    scene_overrides: list[str] = param([], "SimConfig changes as KEY=VALUE (YAML value), e.g. 'cube_region_min_xy_m=[0.40, 0.30]': an evaluation condition")
    seed: int = param(0, "seed of the first episode")
    real_time_factor: float = param(1.0, "sim seconds per wall second; 0 runs as fast as possible")
    joint_state_rate_hz: float = param(500.0, "rate of /joint_states [Hz of sim time]")
    clock_rate_hz: float = param(250.0, "rate of /clock [Hz of sim time], at most joint_state_rate_hz; every sim-time node "
                                 "handles each one, and its timers fire at most this often: not below the bridge's output_rate_hz")
    camera_rate_hz: float = param(0.0, "frame rate of every camera [Hz of sim time]; 0 keeps each camera's rate_hz")
    camera_lockstep: bool = param(False, "physics waits for each due camera frame: exact camera rates, less real time")
    task_status_rate_hz: float = param(5.0, "rate of /wam/sim/task_status [Hz of sim time]")
    stats_period_s: float = param(10.0, "period of the real-time-factor log line [s of wall time]")
    autostart: bool = param(True, "configure and activate at start-up")


def _pose(values: np.ndarray) -> Pose:
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in values[:3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in values[3:7])
    return pose


class SimNode(LifecycleNode):
    """The simulated arm: physics in a paced thread, commands in, sensors and /clock out."""

    def __init__(self) -> None:
        super().__init__("sim")
        self.params = declare_parameters(self, Parameters)
        if self.get_parameter("use_sim_time").value:
            raise ValueError("the sim node publishes /clock and must run on wall time (use_sim_time false)")
        self.runner: Any = None
        self.entities: list[tuple[Any, Any]] = []  # (destroy function, publisher / subscription / service)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.gripper_state = (0.0, 0.0, 0.0)  # sim time [s], width [m], width rate [m/s] of the newest joint state
        self.gripper_goal: ServerGoalHandle | None = None  # the goal the gripper follows (a newer one preempts it)
        self.context.on_shutdown(self.stop.set)  # stop publishing before the context goes away
        if self.params.autostart:
            autostart(self)

    # -- lifecycle ---------------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as error:  # noqa: BLE001 - any failure fails configure with its reason
            self.get_logger().error(f"configure failed: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        from wam_ros.sim.config import SimConfig, parse_overrides
        from wam_ros.sim.env import TabletopEnv
        from wam_ros.sim.runner import SimRunner

        p = self.params
        self.robot = load_robot_config(p.robot_config or "panda_sim")
        env = TabletopEnv(self.robot, SimConfig.from_robot(self.robot, parse_overrides(p.scene_overrides)))
        cameras = [c for c in self.robot.cameras if c.source == "sim"]
        rates = {c.name: p.camera_rate_hz for c in cameras} if p.camera_rate_hz > 0 else None
        self.runner = SimRunner(env, p.real_time_factor, p.joint_state_rate_hz, p.task_status_rate_hz, rates, p.camera_lockstep)
        if not 0 < p.clock_rate_hz <= 1.0 / self.runner.tick_s + 1e-6:
            raise ValueError(f"clock_rate_hz {p.clock_rate_hz:g} must be in (0, {1.0 / self.runner.tick_s:g}]: /clock ticks with the joint states")
        self.clock_period_s = 1.0 / p.clock_rate_hz
        self.next_clock_s = 0.0
        status = self.runner.reset(p.task, p.seed)
        self.joint_names = [*self.robot.arm.joint_names, *self.robot.gripper.joint_names]
        backend = self.robot.backend
        self.clock_pub = self._publisher(Clock, "clock", qos.SENSORS)
        self.joint_pub = self._publisher(JointState, "joint_states", qos.SENSORS)
        self.status_pub = self._publisher(TaskStatus, "wam/sim/task_status", qos.STATUS)
        self.image_pubs, self.info_pubs, self.depth_pubs, self.infos = {}, {}, {}, {}
        for camera in cameras:
            self.image_pubs[camera.name] = self._publisher(Image, camera.image_topic, qos.SENSORS)
            self.info_pubs[camera.name] = self._publisher(CameraInfo, camera.camera_info_topic, qos.SENSORS)
            if camera.depth:
                self.depth_pubs[camera.name] = self._publisher(Image, camera.depth_topic, qos.SENSORS)
            self.infos[camera.name] = self._camera_info(camera.name)
        gripper = self.robot.gripper
        commands = [
            (JointTrajectory, backend.joint_trajectory_topic, self._on_trajectory),
            (PoseStamped, backend.target_pose_topic, self._on_target_pose),
            (ImpedanceGains, backend.gains_topic, self._on_gains),
        ]
        if gripper.interface == "topic":
            commands.append((GripperCommand, backend.gripper_command_topic, self._on_gripper))
        for msg_type, topic, callback in commands:
            self.entities.append((self.destroy_subscription, self.create_subscription(msg_type, topic, callback, qos.COMMANDS)))
        if gripper.joint_names and gripper.interface == "action":
            server = ActionServer(self, GripperCommandAction, gripper.action_name, self._execute_gripper_goal,
                                  goal_callback=self._on_gripper_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
                                  callback_group=ReentrantCallbackGroup())
            self.entities.append((lambda entity: entity.destroy(), server))
        self.entities.append((self.destroy_service, self.create_service(ResetSim, "wam/sim/reset", self._on_reset)))
        self.get_logger().info(
            f"{self.robot.name}: task {status.task} seed {status.seed} ({status.instruction!r}); real-time factor "
            f"{p.real_time_factor:g}, joint states every {self.runner.tick_s * 1000:g} ms of sim time, /clock every "
            f"{self.clock_period_s * 1000:g} ms, cameras "
            + ", ".join(f"{n} {1 / period:g} Hz" for n, period in self.runner.camera_periods_s.items())
        )

    def _publisher(self, msg_type: Any, topic: str, profile: Any) -> Any:
        publisher = self.create_publisher(msg_type, topic, profile)
        self.entities.append((self.destroy_publisher, publisher))
        return publisher

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.stop.clear()
        self.thread = threading.Thread(target=self._run, name="sim_physics", daemon=True)
        self.thread.start()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_thread()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._stop_thread()
        for destroy, entity in self.entities:
            destroy(entity)
        self.entities.clear()
        if self.runner is not None:
            self.runner.env.close()
            self.runner = None
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._stop_thread()
        super().destroy_node()

    def _stop_thread(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10.0)
            self.thread = None

    # -- the physics thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.runner.run(self.stop, self._publish_joint_state, self._guarded(self._publish_frame), self._publish_status,
                            self._log_stats, self.params.stats_period_s)
        except Exception as error:  # noqa: BLE001 - a dead physics thread must be visible
            if self.context.ok():
                self.get_logger().fatal(f"simulation stopped: {type(error).__name__}: {error}")
                raise

    def _guarded(self, publish: Any) -> Any:
        """A publishing callback that goes quiet (instead of raising) once ROS is shutting down."""

        def call(*args: Any) -> None:
            try:
                publish(*args)
            except Exception:  # noqa: BLE001 - re-raised unless the context is going away
                if self.context.ok():
                    raise
                self.stop.set()

        return call

    def _publish_joint_state(self, sample: Any) -> None:
        stamp = seconds_to_time(sample.clock_s)
        if sample.clock_s + 1e-9 >= self.next_clock_s:
            self.clock_pub.publish(Clock(clock=stamp))
            self.next_clock_s = max(self.next_clock_s + self.clock_period_s, sample.clock_s)
        message = JointState()
        message.header.stamp = stamp
        message.name = self.joint_names
        message.position = sample.positions.tolist()
        message.velocity = sample.velocities.tolist()
        message.effort = sample.efforts.tolist()
        self.joint_pub.publish(message)
        fingers = self.robot.arm.dof
        self.gripper_state = (sample.clock_s, float(sample.positions[fingers:].sum()), float(sample.velocities[fingers:].sum()))

    def _publish_frame(self, frame: Any) -> None:
        camera = self.robot.camera(frame.camera)
        stamp = seconds_to_time(frame.clock_s)
        self.image_pubs[frame.camera].publish(numpy_to_image(frame.rgb, "rgb8", stamp, camera.frame_id))
        info = self.infos[frame.camera]
        info.header.stamp = stamp
        self.info_pubs[frame.camera].publish(info)
        if frame.depth_m is not None and frame.camera in self.depth_pubs:
            millimetres = np.clip(np.round(frame.depth_m * 1000.0), 0, 65535).astype(np.uint16)
            self.depth_pubs[frame.camera].publish(numpy_to_image(millimetres, "16UC1", stamp, camera.frame_id))

    def _publish_status(self, status: Any, clock_s: float) -> None:
        message = TaskStatus()
        message.header.stamp = seconds_to_time(clock_s)
        message.header.frame_id = self.robot.base_frame
        message.task = status.task
        message.instruction = status.instruction
        message.seed = int(status.seed)
        message.episode = int(status.episode)
        message.success = bool(status.success)
        message.subtasks_done = int(status.subtasks_done)
        message.subtask_instructions = list(status.subtask_instructions)
        message.object_names = list(status.object_names)
        message.object_poses = [_pose(pose) for pose in status.object_poses]
        self.status_pub.publish(message)

    def _log_stats(self, stats: Any) -> None:
        cameras = ", ".join(f"{name} {rate:.1f} Hz" for name, rate in stats.camera_rates_hz.items())
        self.get_logger().info(f"real-time factor {stats.real_time_factor:.2f}, "
                               f"physics + control law {stats.advance_us_per_physics_step:.0f} us per 1 ms step, physics "
                               f"thread {stats.thread_cpu_us_per_physics_step:.0f} us CPU per step, cameras {cameras}")

    def _camera_info(self, name: str) -> CameraInfo:
        camera = self.robot.camera(name)
        fx, fy, cx, cy = self.runner.env.renderer.intrinsics(name)
        info = CameraInfo()
        info.header.frame_id = camera.frame_id
        info.width, info.height = camera.width, camera.height
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    # -- commands (executor thread) --------------------------------------------------------------------
    def _reject(self, what: str, error: Exception) -> None:
        self.get_logger().warning(f"rejected {what}: {error}")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        from wam_ros.sim.runner import CommandError

        try:
            self.runner.command_trajectory(
                list(msg.joint_names),
                time_to_seconds(msg.header.stamp),
                [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points],
                [list(p.positions) for p in msg.points],
                [list(p.velocities) for p in msg.points],
                [list(p.accelerations) for p in msg.points],
            )
        except CommandError as error:
            self._reject("JointTrajectory", error)

    def _on_target_pose(self, msg: PoseStamped) -> None:
        from wam_ros.sim.runner import CommandError

        p, o = msg.pose.position, msg.pose.orientation
        try:
            self.runner.command_pose(msg.header.frame_id, np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w]))
        except CommandError as error:
            self._reject("target pose", error)

    def _on_gains(self, msg: ImpedanceGains) -> None:
        from wam_ros.sim.runner import CommandError

        try:
            self.runner.command_gains(np.array(msg.stiffness), np.array(msg.damping), float(msg.nullspace_stiffness))
        except CommandError as error:
            self._reject("impedance gains", error)

    def _on_gripper(self, msg: GripperCommand) -> None:
        from wam_ros.sim.runner import CommandError

        try:
            self.runner.command_gripper(float(msg.width_m), float(msg.force_n))
        except CommandError as error:
            self._reject("gripper command", error)

    def _gripper_command(self, goal: GripperCommandAction.Goal) -> tuple[float, float]:
        """Width [m] and force [N] of a GripperCommand goal (max_effort 0 or less: keep the force)."""
        return self.robot.gripper.width_from_position(goal.command.position), max(goal.command.max_effort, 0.0)

    def _on_gripper_goal(self, goal: GripperCommandAction.Goal) -> GoalResponse:
        """Reject a goal the simulated gripper would refuse (width or force out of range), naming why."""
        from wam_ros.sim.runner import CommandError

        width, force = self._gripper_command(goal)
        gripper = self.robot.gripper
        try:
            if not gripper.width_min_m - 1e-9 <= width <= gripper.width_max_m + 1e-9:
                raise CommandError(f"gripper width {width} m (position {goal.command.position}) outside "
                                   f"[{gripper.width_min_m}, {gripper.width_max_m}]")
            if not force <= gripper.force_max_n:
                raise CommandError(f"gripper force {force} N above {gripper.force_max_n}")
        except CommandError as error:
            self._reject("GripperCommand goal", error)
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    async def _execute_gripper_goal(self, goal_handle: ServerGoalHandle) -> GripperCommandAction.Result:
        """Drive the fingers to the goal's width; succeed when reached, abort (stalled) when they stop short."""
        width, force = self._gripper_command(goal_handle.request)
        self.gripper_goal = goal_handle  # a goal still running is preempted (aborted)
        self.runner.command_gripper(min(max(width, self.robot.gripper.width_min_m), self.robot.gripper.width_max_m), force)
        watch = GripperGoalWatch(width, self.gripper_state[0])
        end = await in_thread(self, lambda: self._watch_gripper(goal_handle, watch), "sim_gripper_goal")
        _, measured, _ = self.gripper_state
        result = GripperCommandAction.Result(position=self.robot.gripper.position_from_width(measured), effort=force,
                                             stalled=end == STALLED, reached_goal=end == REACHED)
        if end == REACHED:
            goal_handle.succeed()
        elif goal_handle.is_cancel_requested:  # the gripper stops where it is
            if self.gripper_goal is goal_handle:
                self.runner.command_gripper(min(max(measured, self.robot.gripper.width_min_m), self.robot.gripper.width_max_m), 0.0)
            goal_handle.canceled()
        else:  # stalled short of the width, preempted by a newer goal, or the node stopping
            goal_handle.abort()
        return result

    def _watch_gripper(self, goal_handle: ServerGoalHandle, watch: GripperGoalWatch) -> str:
        """Poll the fingers (own thread) until the goal ends: REACHED, STALLED, or "ended" (canceled, preempted, stopping)."""
        feedback = GripperCommandAction.Feedback()
        while not self.stop.is_set() and self.gripper_goal is goal_handle and not goal_handle.is_cancel_requested:
            clock_s, width, speed = self.gripper_state
            end = watch.update(clock_s, width, speed)
            if end is not None:
                return end
            feedback.position = self.robot.gripper.position_from_width(width)
            goal_handle.publish_feedback(feedback)
            time.sleep(GRIPPER_POLL_S)
        return "ended"

    def _on_reset(self, request: ResetSim.Request, response: ResetSim.Response) -> ResetSim.Response:
        try:
            status = self.runner.reset(request.task, int(request.seed))
        except (ValueError, RuntimeError) as error:
            response.success = False
            response.message = str(error)
            self.get_logger().warning(f"reset refused: {error}")
            return response
        response.success = True
        response.message = f"episode {status.episode}: {status.task} seed {status.seed}"
        response.instruction = status.instruction
        response.subtask_instructions = list(status.subtask_instructions)
        self.get_logger().info(f"reset: {response.message} ({status.instruction!r})")
        return response


def main(args: list[str] | None = None) -> int:
    # The physics thread runs short Python stretches between MuJoCo calls; a 0.5 ms GIL switch
    # interval (default 5 ms) lets the executor pick up 250 Hz commands without waiting for it.
    sys.setswitchinterval(0.0005)
    return run_node(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
