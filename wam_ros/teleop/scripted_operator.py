"""A scripted operator for the simulation: watches the policy, takes over when it fails, hands back.

It stands in for a person with a leader arm in tests and benchmarks, and sees what such a person
sees: the task's instruction, where the objects are (the task status topic), the arm's joints
and the safety bridge's mode. It never touches the simulator. Its decisions
(:class:`ScriptedOperator.step`) are mode requests (TELEOP to take over, AUTONOMY to hand back,
named ``requester`` and with a reason) and, while it holds TELEOP, leader-arm style joint targets
and gripper widths for ``/wam/teleop/joint_command`` and ``/wam/teleop/gripper``.

When to take over (:class:`FailureMonitor`; thresholds in :class:`OperatorConfig`):

- no task progress for ``no_progress_timeout_s``: progress is the TCP's distance to the cube to
  be picked, then (once the cube is in the hand) the cube's distance to the bin; it must
  improve by ``min_progress_m``;
- the gripper closed on nothing: width below ``empty_grasp_width_m`` for ``empty_grasp_s``;
- a cube other than the instructed one in the hand;
- the TCP out of the task region: ``task_region_margin_m`` beyond the objects' bounding box, or
  above ``max_tcp_height_m``.

How to recover: the scripted expert's own motion (:class:`wam_ros.sim.expert.ScriptedExpert`)
from where the arm is: pick the instructed cube when it is not in the hand, else put it in its
bin slot; then control goes back to the policy. The last allowed takeover
(``max_takeovers``) finishes the whole subtask. Joint targets come at the expert's control
period and are interpolated linearly in between, as a leader arm streams them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from wam_ros.control.kinematics import ChainKinematics, inverse_kinematics
from wam_ros.robot import RobotConfig
from wam_ros.sim.config import SimConfig
from wam_ros.sim.expert import ScriptedExpert
from wam_ros.sim.tasks import BIN_SLOT_PHRASES, COLOURS, EpisodeSpec, cube_name
from wam_ros.teleop.mapping import MODE_AUTONOMY, MODE_TELEOP

BIN = "bin"
EMPTY_GRIPPER_M = 0.01  # fingers closer than this hold nothing


@dataclass
class OperatorConfig:
    """When the operator takes over and how it drives (times on the node clock: sim time in simulation)."""

    no_progress_timeout_s: float = 4.0  # no progress for this long -> take over
    min_progress_m: float = 0.02  # what counts as progress (distance gained)
    empty_grasp_width_m: float = 0.01  # gripper narrower than this holds nothing
    empty_grasp_s: float = 0.5  # ... for this long -> take over
    task_region_margin_m: float = 0.15  # TCP this far outside the objects' bounding box (x, y) -> take over
    max_tcp_height_m: float = 0.55  # TCP above this -> take over (home is at 0.49 m)
    held_distance_m: float = 0.04  # a cube's centre this close under the TCP (x, y), fingers closed on it: in the hand
    handback_grace_s: float = 1.0  # after AUTONOMY (re)starts, the policy gets this long before any rule fires
    max_takeovers: int = 3  # per episode; the last one finishes the subtask
    speed_m_s: float = 0.2  # TCP speed of the recovery moves (the bridge caps it at the robot's ee_speed_max_m_s)

    def validate(self) -> None:
        for name in ("no_progress_timeout_s", "min_progress_m", "empty_grasp_s", "held_distance_m", "speed_m_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_takeovers < 1:
            raise ValueError(f"max_takeovers must be at least 1, got {self.max_takeovers}")


def instruction_target(instruction: str) -> tuple[str, int] | None:
    """The cube an instruction names and its bin slot ("put the green cube in the near end of the bin" -> green_cube, 1)."""
    text = instruction.lower()
    colours = [c for c in COLOURS if f"{c} cube" in text]
    if len(colours) != 1 or "bin" not in text:
        return None
    slot = max((i for i, phrase in enumerate(BIN_SLOT_PHRASES) if phrase in text), key=lambda i: len(BIN_SLOT_PHRASES[i]))
    return cube_name(colours[0]), slot


@dataclass
class Scene:
    """What the operator sees at one instant."""

    time_s: float
    episode: int
    instruction: str  # the current subtask's
    success: bool
    objects: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> position [m], quaternion (x, y, z, w); base frame
    joints: np.ndarray  # arm joint positions [rad]
    gripper_width_m: float


class OperatorView:
    """:class:`wam_ros.sim.expert.SceneView` from a :class:`Scene`: poses as reported, "held" judged by eye."""

    def __init__(self, scene: Scene, tcp_m: np.ndarray, cube_size_m: float, held_distance_m: float) -> None:
        self.scene, self.tcp_m = scene, tcp_m
        self.cube_size_m, self.held_distance_m = cube_size_m, held_distance_m

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        position, quat = self.scene.objects[name]
        return position.copy(), quat.copy()

    def tcp_position(self) -> np.ndarray:
        return self.tcp_m.copy()

    def held(self, cube: str) -> bool:
        """The fingers closed on something (the joints are fresh) with the cube between them: under the
        TCP within ``held_distance_m``, and within 8 cm of its height, because the poses arrive at
        5 Hz and a cube being lifted at 0.15 m/s is centimetres higher than its last reported pose."""
        position = self.scene.objects[cube][0]
        closed_on_something = EMPTY_GRIPPER_M < self.scene.gripper_width_m < self.cube_size_m + 0.01
        under = np.linalg.norm(position[:2] - self.tcp_m[:2]) < self.held_distance_m and abs(position[2] - self.tcp_m[2]) < 0.08
        return bool(closed_on_something and under)


class UrdfArmIK:
    """:class:`wam_ros.sim.expert.ArmIK` on the robot's URDF (what the operator knows of the arm).

    A pose is reached when the TCP is within ``tolerance_m`` and ``tolerance_rad``: a person
    guiding a leader arm is not more exact than that, and the null-space pull towards the home
    posture can hold the orientation a few milliradians off."""

    def __init__(self, robot: RobotConfig, margin_rad: float = 0.05, tolerance_m: float = 0.002, tolerance_rad: float = 0.05) -> None:
        self.tolerance_m, self.tolerance_rad = tolerance_m, tolerance_rad
        self.chain = ChainKinematics.from_urdf(robot.urdf_path, robot.base_frame, robot.tcp_frame, robot.arm.joint_names)
        self.lower = np.asarray(robot.arm.position_lower_rad) + margin_rad
        self.upper = np.asarray(robot.arm.position_upper_rad) - margin_rad

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.chain.forward(q)

    def inverse(self, position: np.ndarray, rotation: np.ndarray, q_init: np.ndarray, q_rest: np.ndarray) -> np.ndarray:
        for posture_gain in (0.1, 0.0):  # without the pull to the home posture when it holds the pose off (a policy's odd posture)
            q, position_error_m, rotation_error_rad = inverse_kinematics(self.chain, position, rotation, q_init, q_rest, self.lower,
                                                                         self.upper, max_iterations=200, posture_gain=posture_gain)
            if position_error_m <= self.tolerance_m and rotation_error_rad <= self.tolerance_rad:
                return q
        raise ValueError(f"no IK solution for {np.round(position, 3).tolist()} "
                         f"({position_error_m * 1000:.1f} mm, {rotation_error_rad * 1000:.0f} mrad off)")


class FailureMonitor:
    """The take-over rules (module docstring) for one stretch of autonomy; :meth:`check` names the failure or returns ''."""

    def __init__(self, config: OperatorConfig, cube_size_m: float) -> None:
        self.config, self.cube_size_m = config, cube_size_m
        self.start_s = 0.0
        self.best = -math.inf
        self.best_s = 0.0
        self.closed_since_s: float | None = None

    def restart(self, now_s: float) -> None:
        self.start_s = self.best_s = now_s
        self.best = -math.inf
        self.closed_since_s = None

    def progress(self, view: OperatorView, cube: str) -> float:
        """Higher is further: minus the TCP's distance to the cube, then 1 minus the cube's (x, y) distance to the bin."""
        if view.held(cube):
            cube_xy, bin_xy = view.object_pose(cube)[0][:2], view.object_pose(BIN)[0][:2]
            return 1.0 - float(np.linalg.norm(cube_xy - bin_xy))
        return -float(np.linalg.norm(view.object_pose(cube)[0] - view.tcp_m))

    def check(self, scene: Scene, view: OperatorView, cube: str) -> str:
        c = self.config
        now = scene.time_s
        value = self.progress(view, cube)
        if value >= self.best + c.min_progress_m or self.best == -math.inf:
            self.best, self.best_s = value, now
        if scene.gripper_width_m < c.empty_grasp_width_m:
            self.closed_since_s = now if self.closed_since_s is None else self.closed_since_s
        else:
            self.closed_since_s = None
        if now - self.start_s < c.handback_grace_s:
            return ""
        if now - self.best_s > c.no_progress_timeout_s:
            return f"no progress for {now - self.best_s:.1f} s"
        if self.closed_since_s is not None and now - self.closed_since_s >= c.empty_grasp_s:
            return f"gripper closed on nothing ({scene.gripper_width_m * 1000:.0f} mm) for {now - self.closed_since_s:.1f} s"
        wrong = [name for name in scene.objects if name.endswith("_cube") and name != cube and view.held(name)]
        if wrong:
            return f"holding {wrong[0]} instead of {cube}"
        xy = np.array([p[:2] for p, _ in scene.objects.values()])
        low, high = xy.min(axis=0) - c.task_region_margin_m, xy.max(axis=0) + c.task_region_margin_m
        if np.any(view.tcp_m[:2] < low) or np.any(view.tcp_m[:2] > high) or view.tcp_m[2] > c.max_tcp_height_m:
            return f"TCP left the task region at {np.round(view.tcp_m, 2).tolist()}"
        return ""


@dataclass
class OperatorCommand:
    """What the operator does at one instant: a mode request, and targets while it drives."""

    request_mode: int | None = None  # MODE_TELEOP or MODE_AUTONOMY
    reason: str = ""
    joint_target: np.ndarray | None = None
    gripper_width_m: float | None = None


@dataclass
class Takeover:
    """One takeover, for the operator's own log."""

    episode: int
    start_s: float
    reason: str
    end_s: float | None = None
    outcome: str = ""


@dataclass
class _Drive:
    """A recovery being driven: the expert and the targets it gave last and next."""

    expert: ScriptedExpert
    finish: bool
    previous: np.ndarray
    target: np.ndarray
    step_start_s: float | None = None  # when the current target's control period began


class ScriptedOperator:
    """The operator's state machine; :meth:`step` at the command rate with the scene and the bridge's mode.

    It acts only on stretches of AUTONOMY it did not start itself and never asks for anything
    while another source holds the arm (HOLD, IDLE, someone else's TELEOP). A mode request it
    makes that the bridge has not granted within ``REQUEST_TIMEOUT_S`` is given up (taking over)
    or repeated (handing back).
    """

    WATCHING, TAKING_OVER, DRIVING, HANDING_BACK = "watching", "taking_over", "driving", "handing_back"
    REQUEST_TIMEOUT_S = 2.0

    def __init__(self, robot: RobotConfig, sim: SimConfig, config: OperatorConfig, name: str = "scripted_operator") -> None:
        config.validate()
        self.robot, self.sim, self.config, self.name = robot, sim, config, name
        self.ik = UrdfArmIK(robot)
        self.monitor = FailureMonitor(config, sim.cube_size_m)
        self.state = self.WATCHING
        self.episode: int | None = None
        self.takeovers: list[Takeover] = []
        self.drive: _Drive | None = None
        self.mode: int | None = None
        self.requested_s = 0.0
        self.pending_reason = ""

    def episode_takeovers(self) -> list[Takeover]:
        return [t for t in self.takeovers if t.episode == self.episode]

    def step(self, scene: Scene, mode: int, mode_requester: str) -> OperatorCommand:
        if scene.episode != self.episode:
            self.episode, self.state, self.drive = scene.episode, self.WATCHING, None
        if mode == MODE_AUTONOMY and self.mode != MODE_AUTONOMY:
            self.monitor.restart(scene.time_s)
        self.mode = mode
        ours = mode == MODE_TELEOP and mode_requester == self.name
        waited = scene.time_s - self.requested_s > self.REQUEST_TIMEOUT_S
        if self.state == self.TAKING_OVER:
            if ours:
                return self._start_drive(scene)
            if mode != MODE_AUTONOMY or waited:  # refused, or someone else acted first
                self.state = self.WATCHING
            return OperatorCommand()
        if self.state == self.HANDING_BACK:
            if mode == MODE_AUTONOMY or not ours:
                self.state, self.drive = self.WATCHING, None
                return OperatorCommand()
            if waited:
                self.requested_s = scene.time_s
                return OperatorCommand(MODE_AUTONOMY, f"{self.name}: hand back (again)")
            return OperatorCommand()
        if self.state == self.DRIVING:
            if not ours:  # someone else (an e-stop, a HOLD, a person) took the arm: stop driving
                self._end_takeover(scene.time_s, "interrupted")
                self.state, self.drive = self.WATCHING, None
                return OperatorCommand()
            return self._drive(scene)
        if mode != MODE_AUTONOMY or scene.success:
            return OperatorCommand()
        target = instruction_target(scene.instruction)
        if target is None or len(self.episode_takeovers()) >= self.config.max_takeovers:
            return OperatorCommand()
        reason = self.monitor.check(scene, self._view(scene), target[0])
        if not reason:
            return OperatorCommand()
        self.state, self.requested_s, self.pending_reason = self.TAKING_OVER, scene.time_s, reason
        return OperatorCommand(MODE_TELEOP, f"{self.name}: take over: {reason}")

    # -- driving -----------------------------------------------------------------------------
    def _view(self, scene: Scene) -> OperatorView:
        tcp, _ = self.ik.forward(scene.joints)
        return OperatorView(scene, tcp, self.sim.cube_size_m, self.config.held_distance_m)

    def _start_drive(self, scene: Scene) -> OperatorCommand:
        self.takeovers.append(Takeover(scene.episode, scene.time_s, self.pending_reason))
        target = instruction_target(scene.instruction)
        assert target is not None  # checked before taking over
        cube, slot = target
        view = self._view(scene)
        holding = view.held(cube)
        finish = len(self.episode_takeovers()) >= self.config.max_takeovers

        def script(expert: ScriptedExpert) -> Iterator[None]:
            if not holding:
                yield from expert.pick(cube)
            if holding or finish:
                yield from expert.place_in_bin(cube, slot)

        spec = EpisodeSpec(task="pick_place", seed=0, instruction=scene.instruction, subtask_instructions=[scene.instruction],
                           cube_positions={}, cube_yaws_rad={}, bin_center_xy=view.object_pose(BIN)[0][:2], cubes=[cube])
        expert = ScriptedExpert(view, spec, self.robot, self.sim, self.ik, scene.joints, 0.0 if holding else scene.gripper_width_m,
                                speed_m_s=min(self.config.speed_m_s, 0.8 * self.robot.safety.ee_speed_max_m_s), script=script)
        self.drive = _Drive(expert, finish or holding, scene.joints.copy(), scene.joints.copy())
        self.state = self.DRIVING
        return self._drive(scene)

    def _advance(self, scene: Scene) -> OperatorCommand | None:
        """The expert's next target; the hand-back request once its script has ended."""
        drive = self.drive
        assert drive is not None
        drive.previous = drive.target
        try:
            action = drive.expert.act()
        except (ValueError, RuntimeError) as error:  # IK or timing: the pose cannot be reached from here
            return self._hand_back(scene, f"recovery failed: {error}")
        drive.target = action[: self.robot.arm.dof]
        if drive.expert.done:
            expert = drive.expert
            return self._hand_back(scene, "failed: " + expert.message if expert.failed else
                                   "finished the subtask" if drive.finish else "recovered")
        return None

    def _drive(self, scene: Scene) -> OperatorCommand:
        drive = self.drive
        assert drive is not None
        drive.expert.scene = self._view(scene)  # a fresh look at every step
        period = self.sim.control_period_s
        if drive.step_start_s is None:
            drive.step_start_s = scene.time_s
            if (handed_back := self._advance(scene)) is not None:
                return handed_back
        while scene.time_s >= drive.step_start_s + period:  # catch up when the clock jumped
            drive.step_start_s += period
            if (handed_back := self._advance(scene)) is not None:
                return handed_back
        fraction = min(max((scene.time_s - drive.step_start_s) / period, 0.0), 1.0)
        joints = drive.previous + fraction * (drive.target - drive.previous)
        return OperatorCommand(joint_target=joints, gripper_width_m=float(drive.expert.gripper_width_m))

    def _hand_back(self, scene: Scene, outcome: str) -> OperatorCommand:
        self._end_takeover(scene.time_s, outcome)
        self.state, self.requested_s = self.HANDING_BACK, scene.time_s
        assert self.drive is not None
        return OperatorCommand(MODE_AUTONOMY, f"{self.name}: hand back: {outcome}", self.drive.target,
                               float(self.drive.expert.gripper_width_m))

    def _end_takeover(self, now_s: float, outcome: str) -> None:
        if self.takeovers and self.takeovers[-1].end_s is None:
            self.takeovers[-1].end_s, self.takeovers[-1].outcome = now_s, outcome
