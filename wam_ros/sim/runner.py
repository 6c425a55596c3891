"""The sim node's engine without ROS: paced physics, command intake, camera and status schedules.

:class:`SimRunner` owns a :class:`TabletopEnv` and a simulation clock that never runs backwards
(resets included; it is what the node publishes on /clock). Its loop advances the physics in
ticks of ``1 / joint_state_rate_hz`` sim seconds, paced to wall time by ``real_time_factor``
(0 = as fast as possible; a stall longer than ``MAX_CATCH_UP_S`` is not made up at full speed),
and hands every tick's joint state to a callback. Camera frames are
captured on the sim clock at each camera's rate and rendered by a separate thread, so a slow
640x480 render delays that camera, never the joint states (``camera_lockstep`` instead makes
the physics wait for the renderer: exact camera rates in sim time, at the cost of real time). Commands are validated here; a bad
one raises :class:`CommandError` with the reason and changes nothing.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from wam_ros.robot import RobotConfig
from wam_ros.sim.env import CARTESIAN_MODE, TabletopEnv, TaskStatus
from wam_ros.sim.rendering import SceneRenderer
from wam_ros.sim.trajectory import TrajectoryError, TrajectoryFollower


#: Largest lag behind the real-time factor [s of wall time] that the loop makes up by running
#: faster; a longer stall slows sim time down instead (the real-time factor drops, reported in
#: the stats), so sim time never runs much faster than ``real_time_factor`` for any consumer.
MAX_CATCH_UP_S = 0.02


class CommandError(ValueError):
    """A command the simulated arm refuses; the message says why."""


@dataclass
class JointSample:
    """One tick's joint state: arm joints then finger joints."""

    clock_s: float
    positions: np.ndarray
    velocities: np.ndarray
    efforts: np.ndarray


@dataclass
class CameraFrame:
    camera: str
    clock_s: float  # sim time the frame shows
    rgb: np.ndarray  # (H, W, 3) uint8
    depth_m: np.ndarray | None  # (H, W) float32 metres, when the camera has depth


@dataclass
class RunnerStats:
    """Measured over the last report period."""

    real_time_factor: float  # sim seconds per wall second
    advance_us_per_physics_step: float  # wall time of env.advance (physics + control law) per 1 ms step
    thread_cpu_us_per_physics_step: float  # CPU time of the whole physics thread (publishing included) per 1 ms step
    camera_rates_hz: dict[str, float]  # frames rendered per sim second


class _ClockedMotion:
    """The follower (on the sim clock) as a joint motion on the env's episode time."""

    def __init__(self, runner: "SimRunner") -> None:
        self.runner = runner

    def sample(self, times_s: np.ndarray, positions_out: np.ndarray, velocities_out: np.ndarray) -> None:
        self.runner.follower.sample(times_s + self.runner.clock_offset_s, positions_out, velocities_out)


class SimRunner:
    """Paced simulation with JTC-style trajectories, Cartesian targets and a gripper."""

    def __init__(
        self,
        env: TabletopEnv,
        real_time_factor: float = 1.0,
        joint_state_rate_hz: float = 500.0,
        task_status_rate_hz: float = 5.0,
        camera_rates_hz: dict[str, float] | None = None,
        camera_lockstep: bool = False,
    ) -> None:
        if joint_state_rate_hz <= 0 or task_status_rate_hz <= 0:
            raise ValueError("joint_state_rate_hz and task_status_rate_hz must be positive")
        self.env = env
        self.robot: RobotConfig = env.robot
        self.real_time_factor = real_time_factor
        self.camera_lockstep = camera_lockstep
        steps = max(1, round(1.0 / joint_state_rate_hz / env.timestep_s))
        self.tick_s = steps * env.timestep_s  # whole physics steps per joint-state message
        self.status_period_s = 1.0 / task_status_rate_hz
        cameras = {c.name: c for c in self.robot.cameras if c.source == "sim"}
        rates = {name: c.rate_hz for name, c in cameras.items()}
        rates.update(camera_rates_hz or {})
        unknown = set(rates) - set(cameras)
        if unknown:
            raise ValueError(f"camera rates for unknown cameras {sorted(unknown)}; cameras: {sorted(cameras)}")
        self.camera_periods_s = {name: 1.0 / rate for name, rate in rates.items() if rate > 0}
        self.depth_cameras = {name for name, c in cameras.items() if c.depth}
        self.lock = threading.RLock()
        self.clock_s = 0.0
        self.clock_offset_s = 0.0  # clock = env time + offset
        self.follower = TrajectoryFollower(env.home, np.array(self.robot.arm.position_lower_rad), np.array(self.robot.arm.position_upper_rad))
        self._joint_index = {name: i for i, name in enumerate(self.robot.arm.joint_names)}
        self._next_camera_s = {name: 0.0 for name in self.camera_periods_s}
        self._next_status_s = 0.0
        self._status_due = True
        self._frames: dict[str, int] = {name: 0 for name in self.camera_periods_s}
        self._advance_wall_s = 0.0
        self._advance_steps = 0
        self._thread_cpu_s = 0.0  # thread CPU time at the last report (time.thread_time is slow here: read it rarely)

    # -- episodes --------------------------------------------------------------------------------
    def reset(self, task: str, seed: int) -> TaskStatus:
        """New episode; the sim clock keeps running forward. Raises ValueError for an unknown task."""
        with self.lock:
            task = task or (self.env.task.name if self.env.task else "")
            if not task:
                raise ValueError("no task given and none active")
            self.env.reset(task, seed)
            self.clock_offset_s = self.clock_s - self.env.time_s
            self.follower.hold(self.env.home, self.clock_s)
            self.env.set_joint_motion(_ClockedMotion(self), end_target=self.env.home)
            self._status_due = True
            return self.env.task_status()

    # -- commands --------------------------------------------------------------------------------
    def command_trajectory(
        self,
        joint_names: list[str],
        start_s: float,
        times_from_start_s: list[float],
        positions: list[list[float]],
        velocities: list[list[float]],
        accelerations: list[list[float]],
    ) -> None:
        """A trajectory_msgs/JointTrajectory, as lists. Empty velocity lists mean positions only."""
        dof = self.robot.arm.dof
        if len(set(joint_names)) != len(joint_names):
            raise CommandError(f"duplicate joint names {joint_names}")
        unknown = [n for n in joint_names if n not in self._joint_index]
        if unknown:
            raise CommandError(f"unknown joint names {unknown}; expected {list(self.robot.arm.joint_names)}")
        if len(joint_names) != dof:
            raise CommandError(f"got {len(joint_names)} joints, the arm needs all {dof}: {list(self.robot.arm.joint_names)}")
        order = [joint_names.index(name) for name in self.robot.arm.joint_names]
        for index, point in enumerate(positions):
            if len(point) != dof:
                raise CommandError(f"point {index} has {len(point)} positions for {dof} joints")
        with_velocities = [len(v) > 0 for v in velocities]
        if any(with_velocities) and not all(with_velocities):
            raise CommandError("either every point or none carries velocities")
        for name, values in (("velocities", velocities), ("accelerations", accelerations)):
            for index, point in enumerate(values):
                if len(point) not in (0, dof):
                    raise CommandError(f"point {index} has {len(point)} {name} for {dof} joints")
        if not (len(times_from_start_s) == len(positions) == len(velocities) == len(accelerations)):
            raise CommandError("times, positions, velocities and accelerations differ in length")
        array = np.array(positions, float).reshape(len(positions), dof)[:, order]
        velocity_array = np.array(velocities, float).reshape(len(positions), dof)[:, order] if all(with_velocities) and positions else None
        with self.lock:
            if self.env.mode == CARTESIAN_MODE:
                self.follower.hold(self.env.observation().state[:dof], self.clock_s)  # take over from where the arm is
            try:
                self.follower.replace(self.clock_s, start_s, np.array(times_from_start_s, float), array, velocity_array)
            except TrajectoryError as error:
                raise CommandError(str(error)) from None
            self.env.set_joint_motion(_ClockedMotion(self), end_target=self.follower.end_position)

    def command_pose(self, frame_id: str, position: np.ndarray, quaternion_xyzw: np.ndarray) -> None:
        """A Cartesian impedance target for the TCP, in the base frame."""
        if frame_id not in ("", self.robot.base_frame):
            raise CommandError(f"target pose in frame {frame_id!r}; send it in {self.robot.base_frame!r}")
        try:
            with self.lock:
                self.env.set_cartesian_target(position, quaternion_xyzw)
        except ValueError as error:
            raise CommandError(str(error)) from None

    def command_gains(self, stiffness: np.ndarray, damping: np.ndarray, nullspace_stiffness: float) -> None:
        """Cartesian stiffness [N/m, N m/rad], damping and null-space stiffness for the Cartesian law."""
        try:
            with self.lock:
                self.env.cartesian_law.set_gains(stiffness, damping, nullspace_stiffness)
        except ValueError as error:
            raise CommandError(str(error)) from None

    def command_gripper(self, width_m: float, force_n: float) -> None:
        """Gripper width [m] and grasp force [N] (0 keeps the current force)."""
        gripper = self.robot.gripper
        if not math.isfinite(width_m) or not gripper.width_min_m <= width_m <= gripper.width_max_m:
            raise CommandError(f"gripper width {width_m} m outside [{gripper.width_min_m}, {gripper.width_max_m}]")
        if not math.isfinite(force_n) or not 0 <= force_n <= gripper.force_max_n:
            raise CommandError(f"gripper force {force_n} N outside [0, {gripper.force_max_n}]")
        with self.lock:
            self.env.set_gripper(width_m, force_n if force_n > 0 else None)

    # -- the loop ----------------------------------------------------------------------------------
    def tick(self) -> JointSample:
        """Advance the physics by one tick; returns the joint state at the new clock."""
        with self.lock:
            started = time.perf_counter()
            self.env.advance(self.tick_s)
            self._advance_wall_s += time.perf_counter() - started
            self._advance_steps += round(self.tick_s / self.env.timestep_s)
            self.clock_s = self.env.time_s + self.clock_offset_s
            if self.env.mode != CARTESIAN_MODE and self._advance_steps % 200 == 0:
                self.follower.prune(self.clock_s)
            return JointSample(self.clock_s, self.env.joint_positions(), self.env.joint_velocities_all(), self.env.joint_efforts())

    def due_cameras(self) -> list[str]:
        """Cameras whose next frame is due at the current clock."""
        return [name for name, due in self._next_camera_s.items() if self.clock_s + 1e-9 >= due]

    def run(
        self,
        stop: threading.Event,
        on_joint_state: Callable[[JointSample], None],
        on_frame: Callable[[CameraFrame], None],
        on_status: Callable[[TaskStatus, float], None],
        on_stats: Callable[[RunnerStats], None] | None = None,
        stats_period_s: float = 10.0,
    ) -> None:
        """Run until ``stop`` is set. Callbacks run in this thread (frames in the render thread)."""
        render_request = threading.Event()
        render_done = threading.Event()
        render_done.set()
        job: dict[str, object] = {}
        renderer = SceneRenderer(self.env.model, self.robot, self.env.config)
        render_thread = threading.Thread(target=self._render_loop, args=(stop, renderer, render_request, render_done, job, on_frame),
                                         name="sim_render", daemon=True)
        render_thread.start()
        wall_anchor, clock_anchor = time.monotonic(), self.clock_s
        report_wall, report_clock = wall_anchor, self.clock_s
        self._thread_cpu_s = time.thread_time()
        try:
            while not stop.is_set():
                sample = self.tick()
                on_joint_state(sample)
                due = self.due_cameras()
                if due and self.camera_lockstep:
                    render_done.wait()  # exact camera rates in sim time, at the cost of real time
                if due and render_done.is_set():  # else the frame waits for the renderer: late, not lost
                    with self.lock:
                        job["clock_s"] = renderer.capture(self.env.data) + self.clock_offset_s
                    for name in due:
                        # A late frame restarts its camera's schedule: the next one a full period on.
                        self._next_camera_s[name] = max(self._next_camera_s[name], self.clock_s) + self.camera_periods_s[name]
                    job["cameras"] = due
                    render_done.clear()
                    render_request.set()
                if self._status_due or self.clock_s >= self._next_status_s:
                    with self.lock:
                        status = self.env.task_status()
                    self._status_due = False
                    self._next_status_s = self.clock_s + self.status_period_s
                    on_status(status, self.clock_s)
                now = time.monotonic()
                if on_stats is not None and now - report_wall >= stats_period_s:
                    on_stats(self._stats(self.clock_s - report_clock, now - report_wall))
                    report_wall, report_clock = now, self.clock_s
                if self.real_time_factor > 0:
                    target = wall_anchor + (self.clock_s - clock_anchor) / self.real_time_factor
                    delay = target - time.monotonic()
                    if delay > 0:
                        stop.wait(delay)
                    elif delay < -MAX_CATCH_UP_S:
                        # Behind (the thread waited for a core): go on at the real-time factor from
                        # here instead of running the missed sim time at full speed. Catching up
                        # squeezes that much sim time into a few wall milliseconds: /clock leaps by
                        # it in every node, and a 100 ms joint-state watchdog saw 300-400 ms jumps.
                        wall_anchor, clock_anchor = time.monotonic(), self.clock_s
        finally:
            stop.set()
            render_request.set()
            render_thread.join(timeout=5.0)

    def _render_loop(self, stop: threading.Event, renderer: SceneRenderer, request: threading.Event, done: threading.Event,
                     job: dict[str, object], on_frame: Callable[[CameraFrame], None]) -> None:
        try:
            while True:
                request.wait()
                request.clear()
                if stop.is_set():
                    return
                cameras = list(job["cameras"])  # type: ignore[call-overload]
                clock_s = float(job["clock_s"])  # type: ignore[arg-type]
                images = renderer.render(cameras=cameras)
                depths = renderer.render_depth(cameras=[c for c in cameras if c in self.depth_cameras])
                for name, rgb in images.items():
                    on_frame(CameraFrame(name, clock_s, rgb, depths.get(name)))
                    self._frames[name] += 1
                done.set()
        finally:
            renderer.close()

    def _stats(self, sim_elapsed_s: float, wall_elapsed_s: float) -> RunnerStats:
        steps = max(self._advance_steps, 1)
        stats = RunnerStats(
            real_time_factor=sim_elapsed_s / max(wall_elapsed_s, 1e-9),
            advance_us_per_physics_step=1e6 * self._advance_wall_s / steps,
            thread_cpu_us_per_physics_step=1e6 * (time.thread_time() - self._thread_cpu_s) / steps,
            camera_rates_hz={name: count / max(sim_elapsed_s, 1e-9) for name, count in self._frames.items()},
        )
        self._thread_cpu_s = time.thread_time()
        self._advance_wall_s, self._advance_steps = 0.0, 0
        self._frames = {name: 0 for name in self._frames}
        return stats
