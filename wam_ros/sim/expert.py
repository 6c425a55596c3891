"""Scripted experts: Cartesian waypoints timed with ruckig, executed as joint targets.

An expert knows the true object poses (it reads the simulator) and returns, for every control
step, the same (8,) action a learned policy returns: 7 joint position targets + gripper width.
Between waypoints the TCP moves on a straight line with a yaw change, timed by ruckig within
velocity, acceleration and jerk limits (the TCP speed stays below the robot's
``safety.ee_speed_max_m_s``, so the safety bridge passes expert commands unchanged); each
10 Hz sample is turned into joint targets by warm-started inverse kinematics.

Scripts are generators (one ``yield`` per control step), so retries read naturally: a grasp
that did not hold the cube is tried again from a fresh look at the cube.

The expert sees the scene through a :class:`SceneView` (object poses, which cube is held) and
solves IK with an :class:`ArmIK`: in sim demos both are the env itself and its MuJoCo model
(:meth:`ScriptedExpert.for_env`); the scripted operator (``wam_ros.teleop.scripted_operator``)
gives it what a person at the arm sees (the task status topic's poses) and the URDF's kinematics.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Protocol

import numpy as np
from ruckig import InputParameter, Result, Ruckig, Synchronization, Trajectory

from wam_ros.robot import RobotConfig
from wam_ros.sim.config import SimConfig
from wam_ros.sim.env import TabletopEnv
from wam_ros.sim.kinematics import ArmKinematics
from wam_ros.sim.tasks import BIN_SLOT_OFFSETS_X_M, EpisodeSpec

TRANSIT_HEIGHT_M = 0.16  # TCP height for moves between places (above cubes and bin walls)
APPROACH_HEIGHT_M = 0.08  # above a grasp or place pose, the last part is slow and vertical
GRASP_ATTEMPTS = 3


def top_down_rotation(yaw_rad: float) -> np.ndarray:
    """TCP orientation pointing straight down, fingers closing along the rotated -y axis."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def closest_grasp_yaw(object_yaw_rad: float, reference_rad: float = 0.0) -> float:
    """The yaw among object_yaw + k * 90 deg nearest to ``reference`` (cube symmetry)."""
    candidates = object_yaw_rad + (math.pi / 2) * np.arange(-4, 5)
    return float(candidates[np.argmin(np.abs(candidates - reference_rad))])


def yaw_of(quat_xyzw: np.ndarray) -> float:
    """Rotation about the vertical axis of a body's orientation."""
    x, y, z, w = quat_xyzw
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class SceneView(Protocol):
    """What the expert looks at: :class:`TabletopEnv` itself, or the operator's view of the task status."""

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Position [m] and quaternion (x, y, z, w) of a cube or the bin, base frame."""

    def held(self, cube: str) -> bool:
        """Is ``cube`` in the gripper?"""

    def tcp_position(self) -> np.ndarray:
        """Where the TCP is (measured, base frame) [m]."""


class ArmIK(Protocol):
    """TCP kinematics: the sim's :class:`ArmKinematics` (MuJoCo) or the URDF's (``wam_ros.teleop.scripted_operator``)."""

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (3,) and rotation (3, 3) in the base frame."""

    def inverse(self, position: np.ndarray, rotation: np.ndarray, q_init: np.ndarray, q_rest: np.ndarray) -> np.ndarray:
        """Joints that put the TCP there; raises when the pose cannot be reached."""


class ScriptedExpert:
    """Expert for one episode; call ``act(observation)`` once per control step.

    ``script`` (default: the task's whole script) is a generator function of the expert, e.g.
    ``lambda expert: expert.pick("red_cube")`` for a recovery; ``gripper_width_m`` is the width
    it starts commanding (default open).
    """

    def __init__(self, scene: SceneView, spec: EpisodeSpec, robot: RobotConfig, config: SimConfig, kinematics: ArmIK,
                 q_start: np.ndarray, gripper_width_m: float | None = None, speed_m_s: float | None = None,
                 script: Callable[["ScriptedExpert"], Iterator[None]] | None = None) -> None:
        self.scene = scene
        self.spec = spec
        self.config = config
        self.period_s = config.control_period_s
        self.kinematics = kinematics
        self.speed_m_s = speed_m_s if speed_m_s is not None else 0.8 * robot.safety.ee_speed_max_m_s
        self.q_rest = np.array(robot.arm.home_rad)
        self.q_command = np.array(q_start, float)
        position, rotation = self.kinematics.forward(self.q_command)
        self.position = position
        self.yaw = math.atan2(rotation[1, 0], rotation[0, 0])
        self.open_width_m = robot.gripper.width_max_m
        self.gripper_width_m = self.open_width_m if gripper_width_m is None else gripper_width_m
        self.done = False
        self.failed = False
        self.releasing = False  # lowering a held object onto its place and letting go (DART noise fades out, demos.py)
        self.message = ""
        self._script = (script or SCRIPTS[self.spec.task])(self)
        self._ruckig = Ruckig(2)

    @classmethod
    def for_env(cls, env: TabletopEnv, speed_m_s: float | None = None) -> "ScriptedExpert":
        """The whole task's expert for the env's current episode, seeing the true scene."""
        if env.spec is None or env.task is None:
            raise RuntimeError("reset the env before making an expert")
        robot = env.robot
        kinematics = ArmKinematics(env.model, robot.tcp_frame, robot.arm.joint_names,
                                   np.array(robot.arm.position_lower_rad), np.array(robot.arm.position_upper_rad))
        return cls(env, env.spec, robot, env.config, kinematics, env.observation().state[: env.dof], speed_m_s=speed_m_s)

    def act(self, observation: object = None) -> np.ndarray:
        """The next (8,) action; after the script ends, the last action is held."""
        if not self.done:
            try:
                next(self._script)
            except StopIteration:
                self.done = True
        return np.append(self.q_command, self.gripper_width_m)

    # -- primitives (generators: one yield per control step) -------------------------------------
    def move(self, position: np.ndarray, yaw_rad: float, speed_m_s: float | None = None) -> Iterator[None]:
        """Straight TCP line with a yaw change, ruckig-timed, as joint targets every control step."""
        start, goal = self.position.copy(), np.asarray(position, float)
        length = float(np.linalg.norm(goal - start))
        speed = speed_m_s or self.speed_m_s
        parameters = InputParameter(2)
        parameters.current_position = [0.0, self.yaw]
        parameters.target_position = [length, yaw_rad]
        parameters.max_velocity = [speed, 1.2]
        parameters.max_acceleration = [1.0, 4.0]
        parameters.max_jerk = [6.0, 20.0]
        parameters.synchronization = Synchronization.Time
        trajectory = Trajectory(2)
        result = self._ruckig.calculate(parameters, trajectory)
        if result not in (Result.Working, Result.Finished):
            raise RuntimeError(f"ruckig could not time the move ({result})")
        steps = max(1, math.ceil(trajectory.duration / self.period_s - 1e-9))
        for k in range(1, steps + 1):
            (distance, yaw), _, _ = trajectory.at_time(min(k * self.period_s, trajectory.duration))
            point = start + (goal - start) * (distance / length if length > 1e-9 else 1.0)
            self.q_command = self.kinematics.inverse(point, top_down_rotation(yaw), self.q_command, self.q_rest)
            self.position, self.yaw = point, yaw
            yield

    def wait(self, duration_s: float) -> Iterator[None]:
        for _ in range(max(1, round(duration_s / self.period_s))):
            yield

    def grip(self, width_m: float, duration_s: float) -> Iterator[None]:
        self.gripper_width_m = width_m
        yield from self.wait(duration_s)

    def cube_pose(self, cube: str) -> tuple[np.ndarray, float]:
        position, quat = self.scene.object_pose(cube)
        return position, yaw_of(quat)

    def pick(self, cube: str) -> Iterator[None]:
        """Grasp ``cube`` from above and lift it; tries again if it did not come along."""
        for _ in range(GRASP_ATTEMPTS):
            position, cube_yaw = self.cube_pose(cube)
            yaw = closest_grasp_yaw(cube_yaw)
            if self.gripper_width_m < self.open_width_m:
                yield from self.grip(self.open_width_m, 0.5)
            above = np.array([position[0], position[1], max(TRANSIT_HEIGHT_M, self.position[2])])
            yield from self.move(above, yaw)
            yield from self.move([position[0], position[1], position[2] + APPROACH_HEIGHT_M], yaw)
            yield from self.move(position, yaw, speed_m_s=0.1)
            yield from self.grip(0.0, 0.7)
            yield from self.move([position[0], position[1], TRANSIT_HEIGHT_M], yaw, speed_m_s=0.15)
            lifted, _ = self.scene.object_pose(cube)
            if self.scene.held(cube) and lifted[2] > TRANSIT_HEIGHT_M / 2:
                return
        self.failed = True
        self.message = f"could not grasp {cube} in {GRASP_ATTEMPTS} attempts"

    def place(self, position: np.ndarray, yaw_rad: float, held: str | None = None) -> Iterator[None]:
        """Carry the held cube over ``position`` (its centre on release), lower it, let go, retreat.

        With ``held`` (the cube in the hand), the cube's centre and faces, not the TCP's, go to
        ``position`` and ``yaw_rad`` (modulo 90 degrees): a grasp a few millimetres off-centre or
        turned in the fingers is made up for on the way down, as a person places what they see.
        """
        above = np.array([position[0], position[1], TRANSIT_HEIGHT_M])
        yield from self.move(above, yaw_rad)
        target, yaw = np.asarray(position, float), yaw_rad
        if held is not None:
            cube_position, cube_quat = self.scene.object_pose(held)
            twist = (yaw_of(cube_quat) - self.yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4
            yaw = yaw_rad - twist
            c, s = math.cos(yaw - self.yaw), math.sin(yaw - self.yaw)
            offset = cube_position[:2] - self.scene.tcp_position()[:2]
            if np.linalg.norm(offset) > self.config.cube_size_m / 2:
                offset = np.zeros(2)  # not an offset in the fingers: a stale pose (the operator's 5 Hz status)
            target = np.array([*(target[:2] - np.array([c * offset[0] - s * offset[1], s * offset[0] + c * offset[1]])), target[2]])
            yield from self.move([target[0], target[1], TRANSIT_HEIGHT_M], yaw)
        self.releasing = True
        yield from self.move(target, yaw, speed_m_s=0.1)
        yield from self.grip(self.open_width_m, 0.5)
        self.releasing = False
        yield from self.move([target[0], target[1], TRANSIT_HEIGHT_M], yaw, speed_m_s=0.15)

    def place_in_bin(self, cube: str, slot: int) -> Iterator[None]:
        if self.failed:
            return
        bin_position, bin_quat = self.scene.object_pose("bin")
        bin_yaw = yaw_of(bin_quat)
        offset = BIN_SLOT_OFFSETS_X_M[slot % len(BIN_SLOT_OFFSETS_X_M)]
        drop = bin_position + np.array([offset * math.cos(bin_yaw), offset * math.sin(bin_yaw), 0.0])
        drop[2] = self.config.bin_wall_height_m + self.spec.cube_size(cube, self.config.cube_size_m) / 2 + 0.015
        yield from self.place(drop, closest_grasp_yaw(bin_yaw, self.yaw), held=cube)



def _reach(expert: ScriptedExpert) -> Iterator[None]:
    assert expert.spec.target_position is not None
    yield from expert.move(expert.spec.target_position, 0.0)
    yield from expert.wait(0.5)


def _insert(expert: ScriptedExpert) -> Iterator[None]:
    assert expert.spec.slot_pose is not None
    cube = expert.spec.cubes[0]
    yield from expert.pick(cube)
    if expert.failed:
        return
    x, y, yaw = expert.spec.slot_pose
    # Released with the cube's bottom 4 mm above the table, turned to the slot (cube symmetry: 90 degrees).
    release = np.array([x, y, expert.spec.cube_size(cube, expert.config.cube_size_m) / 2 + 0.004])
    yield from expert.place(release, closest_grasp_yaw(yaw, expert.yaw), held=cube)


def _push(expert: ScriptedExpert) -> Iterator[None]:
    assert expert.spec.zone_center_xy is not None
    cube = expert.spec.cubes[0]
    half = expert.spec.cube_size(cube, expert.config.cube_size_m) / 2
    position, _ = expert.cube_pose(cube)
    zone = np.array([*expert.spec.zone_center_xy, position[2]])
    direction = zone - position
    direction[2] = 0.0
    direction /= np.linalg.norm(direction)
    # Fingers (closed to a narrow width) side by side across the push direction: two contact points.
    yaw = math.atan2(direction[1], direction[0])
    yaw = yaw - math.pi if yaw > math.pi / 2 else yaw + math.pi if yaw < -math.pi / 2 else yaw
    pusher_offset = half + 0.012  # TCP to the fingertip faces is about 1 cm
    push_height = 0.02
    start = position - direction * (pusher_offset + 0.04)
    # The fingers close where the push starts and open where it ends, so the gripper's events mark
    # both ends of the push, as a grasp and a release mark a pick and a place: the hindsight goal
    # labels (wam_ros.model.goal) then say where a push starts and ends without a rule of their own.
    yield from expert.move([start[0], start[1], TRANSIT_HEIGHT_M], yaw)
    yield from expert.move([start[0], start[1], push_height], yaw)
    yield from expert.grip(0.02, 0.3)
    end = zone - direction * pusher_offset
    yield from expert.move([end[0], end[1], push_height], yaw, speed_m_s=0.08)
    # Up off the cube's face before opening: fingers spreading against it turned or tipped the
    # cube out of the square (seeds 6 and 23 of 0-49 failed; 100 of 100 succeed with the lift).
    yield from expert.move([end[0], end[1], push_height + 0.04], yaw, speed_m_s=0.08)
    yield from expert.grip(expert.open_width_m, 0.3)
    back = end - direction * 0.04
    yield from expert.move([back[0], back[1], TRANSIT_HEIGHT_M], yaw)


def _pick_place(expert: ScriptedExpert) -> Iterator[None]:
    cube = expert.spec.cubes[0]
    yield from expert.pick(cube)
    yield from expert.place_in_bin(cube, 0)


def _stack(expert: ScriptedExpert) -> Iterator[None]:
    top, bottom = expert.spec.cubes
    yield from expert.pick(top)
    if expert.failed:
        return
    position, bottom_yaw = expert.cube_pose(bottom)
    nominal = expert.config.cube_size_m
    release = position + np.array([0.0, 0.0, (expert.spec.cube_size(top, nominal) + expert.spec.cube_size(bottom, nominal)) / 2 + 0.004])
    yield from expert.place(release, closest_grasp_yaw(bottom_yaw, expert.yaw), held=top)


def _bin_three(expert: ScriptedExpert) -> Iterator[None]:
    for slot, cube in enumerate(expert.spec.cubes):
        yield from expert.pick(cube)
        if expert.failed:
            return
        yield from expert.place_in_bin(cube, slot)


SCRIPTS = {"reach": _reach, "push": _push, "pick_place": _pick_place, "stack": _stack, "bin_three": _bin_three, "insert": _insert}


def make_expert(env: TabletopEnv) -> ScriptedExpert:
    """The scripted expert for the env's current task and episode (call after ``env.reset``)."""
    return ScriptedExpert.for_env(env)
