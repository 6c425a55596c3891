"""TabletopEnv: the MuJoCo Panda tabletop stepped in-process (no ROS graph).

One control step (``step``) is one dataset frame (``SimConfig.control_period_s``, 0.1 s): the
arm's joint impedance target ramps linearly from the previous action to the new one while the
physics runs at 1 kHz, and the impedance law (:mod:`wam_ros.control.impedance`) is evaluated
at every physics step with MuJoCo's bias force as gravity and Coriolis compensation. The sim
node drives the same object through the low-level calls (``set_joint_target``,
``set_joint_motion``, ``set_cartesian_target``, ``set_gripper``, ``advance``).

Rendering is the expensive part and happens only on demand: ``Observation.images`` renders on
first access (and refuses once the simulation has moved on), ``render()`` renders explicitly.
Small cameras draw the robot from its low-poly meshes (see ``SimConfig.low_poly_max_pixels``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering unless the user chose otherwise

import mujoco  # noqa: E402

from wam_ros.control.impedance import CartesianImpedance, JointImpedance  # noqa: E402
from wam_ros.robot import RobotConfig  # noqa: E402
from wam_ros.sim.config import CUBE_COLOUR_STREAM, LIGHT_STREAM, TABLE_STREAM, SimConfig, shift_stream  # noqa: E402
from wam_ros.sim.rendering import SceneRenderer  # noqa: E402
from wam_ros.sim.scene import BIN, CUBES, DISTRACTOR_PREFIX, PARKED_Z_M, SLOT, TARGET, ZONE, build_scene_xml  # noqa: E402
from wam_ros.sim.tasks import EpisodeSpec, SceneState, Task, make_task  # noqa: E402

JOINT_MODE, CARTESIAN_MODE = "joint", "cartesian"
# Random streams of the scene shifts the env draws per reset (tasks.py draws cube sizes and distractors).


class JointMotion(Protocol):
    """Joint impedance targets as a function of simulation time (e.g. a trajectory follower)."""

    def sample(self, times_s: np.ndarray, positions_out: np.ndarray, velocities_out: np.ndarray) -> None:
        """Fill (n, dof) target positions [rad] and velocities [rad/s] at the env times ``times_s``."""


class LinearRamp:
    """Target moving linearly from ``start`` (at ``t0``) to ``goal`` (at ``t1``), then holding."""

    def __init__(self, start: np.ndarray, goal: np.ndarray, t0_s: float, t1_s: float) -> None:
        self.start = np.array(start, float)
        self.goal = np.array(goal, float)
        self.t0_s, self.t1_s = float(t0_s), float(t1_s)
        duration = self.t1_s - self.t0_s
        self.velocity = (self.goal - self.start) / duration if duration > 0 else np.zeros_like(self.goal)

    def sample(self, times_s: np.ndarray, positions_out: np.ndarray, velocities_out: np.ndarray) -> None:
        if times_s[0] >= self.t1_s:  # holding: the cheap, common case
            positions_out[:] = self.goal
            velocities_out[:] = 0.0
            return
        duration = self.t1_s - self.t0_s
        fraction = np.clip((times_s - self.t0_s) / duration, 0.0, 1.0) if duration > 0 else np.ones_like(times_s)
        np.multiply(fraction[:, None], self.goal - self.start, out=positions_out)
        positions_out += self.start
        moving = (times_s > self.t0_s) & (times_s <= self.t1_s + 1e-12)
        velocities_out[:] = 0.0
        velocities_out[moving] = self.velocity


@dataclass
class Observation:
    """The robot's state at ``time_s`` (seconds since reset) and, on demand, the camera images."""

    time_s: float
    state: np.ndarray  # (8,) 7 joint positions [rad] + gripper width [m]
    joint_velocities: np.ndarray  # (8,) 7 joint velocities [rad/s] + gripper width rate [m/s]
    ee_pose: np.ndarray  # (7,) TCP position [m] + quaternion (x, y, z, w) in the base frame
    _renderer: Callable[[], dict[str, np.ndarray]] | None = field(default=None, repr=False)
    _images: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def images(self) -> dict[str, np.ndarray]:
        """{camera: (H, W, 3) uint8}; rendered on first access, only while the sim has not moved on."""
        if self._images is None:
            if self._renderer is None:
                raise RuntimeError("this observation has no renderer")
            self._images = self._renderer()
        return self._images


@dataclass
class TaskStatus:
    """Task progress for the current episode (what /wam/sim/task_status carries)."""

    task: str
    seed: int
    episode: int
    instruction: str
    subtask_instructions: list[str]
    success: bool
    subtasks_done: int
    object_names: list[str]
    object_poses: np.ndarray  # (N, 7) position [m] + quaternion (x, y, z, w), world = base frame


class _NominalScene:
    """The model values the scene shifts change, as compiled; restored at every reset."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.arrays = {name: getattr(model, name).copy() for name in (
            "cam_pos", "cam_quat", "cam_fovy", "light_pos", "light_diffuse", "mat_rgba", "geom_rgba",
            "geom_size", "geom_rbound", "geom_aabb", "body_mass", "body_inertia")}
        self.headlight = (model.vis.headlight.ambient.copy(), model.vis.headlight.diffuse.copy())

    def restore(self, model: mujoco.MjModel) -> None:
        for name, value in self.arrays.items():
            getattr(model, name)[:] = value
        model.vis.headlight.ambient[:], model.vis.headlight.diffuse[:] = self.headlight


class TabletopEnv:
    """The Panda tabletop: reset to a task and seed, step with joint targets, observe, render."""

    def __init__(self, robot: RobotConfig, config: SimConfig | None = None) -> None:
        self.robot = robot
        self.config = config or SimConfig.from_robot(robot)
        self.config.validate()
        self.model = mujoco.MjModel.from_xml_string(build_scene_xml(robot, self.config))
        self.data = mujoco.MjData(self.model)
        self.dof = robot.arm.dof
        model, data = self.model, self.data
        self.timestep_s = float(model.opt.timestep)

        arm_qpos = [int(model.joint(name).qposadr[0]) for name in robot.arm.joint_names]
        arm_dof = [int(model.joint(name).dofadr[0]) for name in robot.arm.joint_names]
        if arm_qpos != list(range(arm_qpos[0], arm_qpos[0] + self.dof)) or arm_dof != list(range(arm_dof[0], arm_dof[0] + self.dof)):
            raise RuntimeError("arm joints are not contiguous in the MuJoCo model")
        self._arm_dofs = slice(arm_dof[0], arm_dof[0] + self.dof)
        self._finger_qpos = np.array([int(model.joint(n).qposadr[0]) for n in robot.gripper.joint_names])
        self._finger_dof = np.array([int(model.joint(n).dofadr[0]) for n in robot.gripper.joint_names])
        # Views into MjData, made once: the per-step loop reads and writes them without allocating.
        self._q = data.qpos[arm_qpos[0] : arm_qpos[0] + self.dof]
        self._dq = data.qvel[arm_dof[0] : arm_dof[0] + self.dof]
        self._bias = data.qfrc_bias[arm_dof[0] : arm_dof[0] + self.dof]
        actuators = [int(model.actuator(f"{name}_torque").id) for name in robot.arm.joint_names]
        self._torque = data.ctrl[actuators[0] : actuators[0] + self.dof]
        self._gripper_actuator = int(model.actuator("gripper").id)
        self._tcp = int(model.body(robot.tcp_frame).id)
        self._tcp_position = data.xpos[self._tcp]
        self._tcp_rotation = data.xmat[self._tcp].reshape(3, 3)
        self._jacobian = np.zeros((6, model.nv))
        self._cube_qpos = {c: int(model.joint(c).qposadr[0]) for c in CUBES}
        self._mocap = {name: int(model.body_mocapid[model.body(name).id]) for name in (BIN, ZONE, TARGET, SLOT)}
        fingers = {int(model.body(name).id) for name in ("panda_leftfinger", "panda_rightfinger")}
        self._finger_geoms = np.array([g for g in range(model.ngeom) if model.geom_bodyid[g] in fingers])
        self._cube_geom = {c: int(model.geom(c).id) for c in CUBES}
        self._distractors = [f"{DISTRACTOR_PREFIX}{i}" for i in range(self.config.distractor_count)]
        self._free_qpos = {**self._cube_qpos, **{d: int(model.joint(d).qposadr[0]) for d in self._distractors}}

        gains = robot.gains
        self.joint_law = JointImpedance(np.array(gains.joint_stiffness_nm_rad), np.array(gains.joint_damping_nms_rad),
                                        np.array(robot.arm.effort_max_nm))
        self.cartesian_law = CartesianImpedance(np.array(gains.cartesian_stiffness), np.array(gains.cartesian_damping),
                                                gains.nullspace_stiffness_nm_rad, np.array(robot.arm.effort_max_nm))
        self.home = np.array(robot.arm.home_rad)
        self.mode = JOINT_MODE
        self._motion: JointMotion = LinearRamp(self.home, self.home, 0.0, 0.0)
        self._arm_target = self.home.copy()  # where the current joint motion ends
        self._cartesian_position = np.zeros(3)
        self._cartesian_rotation = np.eye(3)
        self._nullspace_posture = self.home.copy()
        self._targets = np.zeros((0, self.dof))
        self._step_offsets: dict[int, np.ndarray] = {}
        self._target_velocities = np.zeros((0, self.dof))
        self._gripper_goal_m = robot.gripper.width_max_m
        self._gripper_command_m = robot.gripper.width_max_m
        self.gripper_force_n = self.config.gripper_force_n

        self._nominal = _NominalScene(model)
        self._constant_masses = model.body_mass.copy()  # the masses mj_setConst last saw
        self.renderer = SceneRenderer(model, robot, self.config)
        self._version = 0  # increases whenever the simulation state changes

        self._tasks: dict[str, Task] = {}
        self.task: Task | None = None
        self.spec: EpisodeSpec | None = None
        self.episode = 0

    # -- episodes ----------------------------------------------------------------------------------
    def reset(self, task: str, seed: int) -> Observation:
        """Start an episode of ``task`` with the layout of ``seed``; the arm at home, gripper open."""
        if task not in self._tasks:
            self._tasks[task] = make_task(task, self.config)
        self.task = self._tasks[task]
        self.spec = self.task.sample(int(seed))
        model, data = self.model, self.data
        spec, nominal_size = self.spec, self.config.cube_size_m
        self._nominal.restore(model)
        for cube in CUBES:
            self._resize(cube, spec.cube_size(cube, nominal_size))
        for name, distractor in zip(self._distractors, spec.distractors):
            self._resize(name, distractor.size_m)
            model.geom_rgba[model.geom(name).id, :3] = distractor.rgb
        self._shift_scene(int(seed))
        if not np.array_equal(model.body_mass, self._constant_masses):
            # The constraint solver's mass estimates follow the boxes' masses (mj_setConst uses
            # data as scratch, so before the state is set).
            mujoco.mj_setConst(model, data)
            self._constant_masses = model.body_mass.copy()
        mujoco.mj_resetData(model, data)
        self._q[:] = self.home
        data.qpos[self._finger_qpos] = self.robot.gripper.width_max_m / 2
        for cube in CUBES:
            self._pose(cube, spec.cube_positions[cube], spec.cube_yaws_rad[cube])
        for name, distractor in zip(self._distractors, spec.distractors):
            self._pose(name, distractor.position, distractor.yaw_rad)
        slot = spec.slot_pose
        data.mocap_pos[self._mocap[BIN]] = (*spec.bin_center_xy, 0.0 if slot is None else PARKED_Z_M)
        data.mocap_pos[self._mocap[SLOT]] = (*slot[:2], 0.0) if slot is not None else (0.5, 0.0, PARKED_Z_M)
        data.mocap_quat[self._mocap[SLOT]] = (math.cos(slot[2] / 2), 0.0, 0.0, math.sin(slot[2] / 2)) if slot is not None else (1.0, 0.0, 0.0, 0.0)
        zone = spec.zone_center_xy
        data.mocap_pos[self._mocap[ZONE]] = (*zone, 0.0) if zone is not None else (0.5, 0.0, PARKED_Z_M)
        target = spec.target_position
        data.mocap_pos[self._mocap[TARGET]] = target if target is not None else (0.5, 0.0, PARKED_Z_M)
        self.mode = JOINT_MODE
        self.set_joint_target(self.home, self.robot.gripper.width_max_m)
        self._gripper_command_m = self.robot.gripper.width_max_m
        self.set_gripper(self.robot.gripper.width_max_m, self.config.gripper_force_n)
        mujoco.mj_forward(model, data)
        self.advance(0.05)  # let the cubes settle onto the table
        data.time = 0.0
        self.episode += 1
        return self.observation()

    def _pose(self, body: str, position: np.ndarray, yaw_rad: float) -> None:
        """A free box at rest at ``position``, turned by ``yaw_rad`` about the vertical."""
        adr = self._free_qpos[body]
        self.data.qpos[adr : adr + 3] = position
        self.data.qpos[adr + 3 : adr + 7] = (math.cos(yaw_rad / 2), 0.0, 0.0, math.sin(yaw_rad / 2))

    def _resize(self, body: str, size_m: float) -> None:
        """A free box's edge [m]; its mass and inertia follow the volume (cube_mass_kg at cube_size_m)."""
        model = self.model
        geom, body_id = model.geom(body).id, model.body(body).id
        half = size_m / 2
        if model.geom_size[geom, 0] == half:
            return
        mass = self.config.cube_mass_kg * (size_m / self.config.cube_size_m) ** 3
        model.geom_size[geom] = half
        model.geom_rbound[geom] = math.sqrt(3.0) * half
        model.geom_aabb[geom, 3:] = half
        model.body_mass[body_id] = mass
        model.body_inertia[body_id] = mass * size_m**2 / 6.0

    def _shift_scene(self, seed: int) -> None:
        """The config's per-reset scene shifts (cameras, lights, colours), each kind from its own
        random stream of ``seed``; the model's nominal values were restored before."""
        model, config = self.model, self.config
        for name in sorted({*config.camera_position_jitter_m, *config.camera_rotation_jitter_deg, *config.camera_fovy_jitter_deg}):
            camera = model.camera(name).id
            shift = config.camera_shift(name, seed)
            model.cam_pos[camera] += shift.offset_m
            angle = float(np.linalg.norm(shift.rotation_rad))
            if angle > 0:
                # A MuJoCo camera's frame is the optical frame turned 180 degrees about x: y and z flip.
                axis = np.array([shift.rotation_rad[0], -shift.rotation_rad[1], -shift.rotation_rad[2]]) / angle
                delta, quat = np.zeros(4), np.zeros(4)
                mujoco.mju_axisAngle2Quat(delta, axis, angle)
                mujoco.mju_mulQuat(quat, model.cam_quat[camera].copy(), delta)
                model.cam_quat[camera] = quat
            model.cam_fovy[camera] += shift.fovy_deg
        if config.light_intensity_jitter_fraction > 0 or config.light_position_jitter_m > 0:
            rng = shift_stream(seed, LIGHT_STREAM)
            scale = 1.0 + rng.uniform(-1, 1) * config.light_intensity_jitter_fraction
            model.light_diffuse[:] = np.clip(model.light_diffuse * scale, 0.0, 1.0)
            model.vis.headlight.ambient[:] = np.clip(model.vis.headlight.ambient * scale, 0.0, 1.0)
            model.vis.headlight.diffuse[:] = np.clip(model.vis.headlight.diffuse * scale, 0.0, 1.0)
            model.light_pos[:] += rng.uniform(-1, 1, model.light_pos.shape) * config.light_position_jitter_m
        if config.table_rgb_jitter > 0:
            table = model.material("table").id
            shift = shift_stream(seed, TABLE_STREAM).uniform(-1, 1, 3) * config.table_rgb_jitter
            model.mat_rgba[table, :3] = np.clip(model.mat_rgba[table, :3] + shift, 0.0, 1.0)
        if config.cube_rgb_jitter > 0:
            rng = shift_stream(seed, CUBE_COLOUR_STREAM)
            for cube in CUBES:
                geom = self._cube_geom[cube]
                model.geom_rgba[geom, :3] = np.clip(model.geom_rgba[geom, :3] + rng.uniform(-1, 1, 3) * config.cube_rgb_jitter, 0.0, 1.0)

    # -- commands ----------------------------------------------------------------------------------
    def step(self, action: np.ndarray) -> Observation:
        """Apply an (8,) action (7 joint targets [rad] + gripper width [m]) for one control period.

        The joint target ramps linearly from the previous action to this one over the period;
        the gripper width is clipped to its range. Non-finite actions raise ValueError.
        """
        action = np.asarray(action, dtype=float)
        if action.shape != (self.dof + 1,):
            raise ValueError(f"action must have shape ({self.dof + 1},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite values: {action.tolist()}")
        width = float(np.clip(action[-1], self.robot.gripper.width_min_m, self.robot.gripper.width_max_m))
        period = self.config.control_period_s
        start = self._arm_target if self.mode == JOINT_MODE else self._q.copy()  # from Cartesian mode: from where the arm is
        self.mode = JOINT_MODE
        self._motion = LinearRamp(start, action[: self.dof], self.data.time, self.data.time + period)
        self._arm_target = action[: self.dof].copy()
        self._gripper_goal_m = width
        self.advance(period)
        return self.observation()

    def set_joint_target(self, q: np.ndarray, gripper_width_m: float | None = None) -> None:
        """Hold the joint impedance target at ``q`` [rad] (joint mode); optionally set the gripper width."""
        q = self._checked_joints(q)
        self.mode = JOINT_MODE
        self._motion = LinearRamp(q, q, self.data.time, self.data.time)
        self._arm_target = q.copy()
        if gripper_width_m is not None:
            self.set_gripper(gripper_width_m)

    def set_joint_motion(self, motion: JointMotion, end_target: np.ndarray | None = None) -> None:
        """Follow ``motion`` (targets as a function of env time) in joint mode, e.g. a trajectory."""
        self.mode = JOINT_MODE
        self._motion = motion
        if end_target is not None:
            self._arm_target = self._checked_joints(end_target).copy()

    def set_cartesian_target(
        self,
        position: np.ndarray,
        quaternion_xyzw: np.ndarray,
        stiffness: np.ndarray | None = None,
        damping: np.ndarray | None = None,
        nullspace_stiffness: float | None = None,
    ) -> None:
        """Cartesian impedance mode: pull the TCP towards the pose (base frame); gains optional."""
        position = np.asarray(position, float)
        quat = np.asarray(quaternion_xyzw, float)
        if position.shape != (3,) or quat.shape != (4,) or not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat))):
            raise ValueError("Cartesian target needs a finite position (3,) and quaternion (4,)")
        norm = float(np.linalg.norm(quat))
        if not 0.9 < norm < 1.1:
            raise ValueError(f"quaternion is not unit length (norm {norm:.3f})")
        if stiffness is not None or damping is not None or nullspace_stiffness is not None:
            self.cartesian_law.set_gains(
                self.cartesian_law.stiffness if stiffness is None else stiffness,
                self.cartesian_law.damping if damping is None else damping,
                self.cartesian_law.nullspace_stiffness if nullspace_stiffness is None else nullspace_stiffness,
            )
        if self.mode != CARTESIAN_MODE:
            self._nullspace_posture[:] = self._q  # keep the current posture in the null space
        self.mode = CARTESIAN_MODE
        self._cartesian_position[:] = position
        x, y, z, w = quat / norm
        matrix = np.zeros(9)
        mujoco.mju_quat2Mat(matrix, np.array([w, x, y, z]))
        self._cartesian_rotation[:] = matrix.reshape(3, 3)

    def set_gripper(self, width_m: float, force_n: float | None = None) -> None:
        """Gripper width goal [m] (approached at the gripper's speed limit) and grasp force [N]."""
        gripper = self.robot.gripper
        if not math.isfinite(width_m) or not gripper.width_min_m - 1e-9 <= width_m <= gripper.width_max_m + 1e-9:
            raise ValueError(f"gripper width {width_m} m outside [{gripper.width_min_m}, {gripper.width_max_m}]")
        self._gripper_goal_m = float(np.clip(width_m, gripper.width_min_m, gripper.width_max_m))
        if force_n is not None:
            if not math.isfinite(force_n) or not 0 < force_n <= gripper.force_max_n:
                raise ValueError(f"gripper force {force_n} N outside (0, {gripper.force_max_n}]")
            self.gripper_force_n = float(force_n)
            # The tendon force splits in half onto the two fingers.
            self.model.actuator_forcerange[self._gripper_actuator] = (-2 * force_n, 2 * force_n)

    def _checked_joints(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        if q.shape != (self.dof,) or not np.all(np.isfinite(q)):
            raise ValueError(f"joint target must be {self.dof} finite values, got {np.asarray(q).tolist()}")
        return q

    # -- physics -----------------------------------------------------------------------------------
    def advance(self, duration_s: float) -> None:
        """Run the physics for ``duration_s`` (rounded to whole 1 ms steps) under the active law."""
        steps = int(round(duration_s / self.timestep_s))
        if steps <= 0:
            return
        model, data = self.model, self.data
        if steps not in self._step_offsets:
            self._step_offsets[steps] = self.timestep_s * np.arange(1, steps + 1)
        times = data.time + self._step_offsets[steps]
        gripper = self._gripper_ramp(steps)
        ctrl, g = data.ctrl, self._gripper_actuator
        ctrl[g] = gripper[0]
        moving_gripper = gripper[0] != gripper[-1]
        q, dq, bias, torque = self._q, self._dq, self._bias, self._torque
        if self.mode == JOINT_MODE:
            if len(self._targets) < steps:
                self._targets = np.zeros((steps, self.dof))
                self._target_velocities = np.zeros((steps, self.dof))
            targets, velocities = self._targets[:steps], self._target_velocities[:steps]
            self._motion.sample(times, targets, velocities)
            law = self.joint_law
            for k in range(steps):
                mujoco.mj_step1(model, data)
                law.torque(q, dq, targets[k], velocities[k], bias, torque)
                if moving_gripper:
                    ctrl[g] = gripper[k]
                mujoco.mj_step2(model, data)
        else:
            cartesian = self.cartesian_law
            jacobian, arm = self._jacobian, self._arm_dofs
            for k in range(steps):
                mujoco.mj_step1(model, data)
                mujoco.mj_jacBody(model, data, jacobian[:3], jacobian[3:], self._tcp)
                cartesian.torque(self._tcp_position, self._tcp_rotation, jacobian[:, arm], q, dq, self._cartesian_position,
                                 self._cartesian_rotation, self._nullspace_posture, bias, torque)
                if moving_gripper:
                    ctrl[g] = gripper[k]
                mujoco.mj_step2(model, data)
        self._gripper_command_m = float(gripper[-1])
        self._version += 1

    def _gripper_ramp(self, steps: int) -> np.ndarray:
        """Gripper width commands for the next steps, moving to the goal at the speed limit."""
        start, goal = self._gripper_command_m, self._gripper_goal_m
        if start == goal:
            return np.array([goal, goal])  # only the first and last entries are read when it stands still
        travel = self.robot.gripper.speed_max_m_s * self.timestep_s * np.arange(1, steps + 1)
        return goal + np.sign(start - goal) * np.maximum(abs(start - goal) - travel, 0.0)

    # -- state -------------------------------------------------------------------------------------
    @property
    def time_s(self) -> float:
        return float(self.data.time)

    def joint_positions(self) -> np.ndarray:
        """Arm joints then finger joints [rad, m] (what /joint_states carries)."""
        return np.concatenate([self._q, self.data.qpos[self._finger_qpos]])

    def joint_velocities_all(self) -> np.ndarray:
        """Arm joint velocities then finger joint velocities [rad/s, m/s]."""
        return np.concatenate([self._dq, self.data.qvel[self._finger_dof]])

    def joint_efforts(self) -> np.ndarray:
        """Commanded arm torques [N m] then the force on each finger [N]."""
        efforts = np.empty(self.dof + len(self._finger_dof))
        efforts[: self.dof] = self._torque
        efforts[self.dof :] = self.data.actuator_force[self._gripper_actuator] / 2
        return efforts

    def observation(self) -> Observation:
        data = self.data
        width = float(data.qpos[self._finger_qpos].sum())
        width_rate = float(data.qvel[self._finger_dof].sum())
        quat = data.xquat[self._tcp]
        version = self._version

        def render() -> dict[str, np.ndarray]:
            if self._version != version:
                raise RuntimeError("the simulation moved on since this observation was taken; read .images before stepping")
            return self.render()

        return Observation(
            time_s=float(data.time),
            state=np.append(self._q, width),
            joint_velocities=np.append(self._dq, width_rate),
            ee_pose=np.array([*self._tcp_position, quat[1], quat[2], quat[3], quat[0]]),
            _renderer=render,
        )

    def tcp_position(self) -> np.ndarray:
        """The TCP's position in the base frame [m], as the physics has it now."""
        return self._tcp_position.copy()

    def held(self, cube: str) -> bool:
        """Does a finger touch ``cube``?"""
        contacts = self.data.contact.geom[: self.data.ncon]
        geom = self._cube_geom[cube]
        finger_a = np.isin(contacts[:, 0], self._finger_geoms) & (contacts[:, 1] == geom)
        finger_b = np.isin(contacts[:, 1], self._finger_geoms) & (contacts[:, 0] == geom)
        return bool(np.any(finger_a | finger_b))

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Position [m] and quaternion (x, y, z, w) of a body (cube, bin, zone, target)."""
        body = self.model.body(name).id
        w, x, y, z = self.data.xquat[body]
        return self.data.xpos[body].copy(), np.array([x, y, z, w])

    def set_object_pose(self, name: str, position: np.ndarray, quaternion_xyzw: np.ndarray = (0.0, 0.0, 0.0, 1.0)) -> None:
        """Place a cube (at rest) or a mocap marker; for constructing test states."""
        x, y, z, w = np.asarray(quaternion_xyzw, float)
        if name in self._cube_qpos:
            adr = self._cube_qpos[name]
            self.data.qpos[adr : adr + 7] = (*position, w, x, y, z)
            dof = int(self.model.joint(name).dofadr[0])
            self.data.qvel[dof : dof + 6] = 0.0
        elif name in self._mocap:
            self.data.mocap_pos[self._mocap[name]] = position
            self.data.mocap_quat[self._mocap[name]] = (w, x, y, z)
        else:
            raise KeyError(f"no object {name!r}; objects: {', '.join([*CUBES, BIN, ZONE, TARGET, SLOT])}")
        mujoco.mj_forward(self.model, self.data)
        self._version += 1

    def scene_state(self) -> SceneState:
        positions, quats = {}, {}
        for cube in CUBES:
            positions[cube], quats[cube] = self.object_pose(cube)
        spec = self.spec
        return SceneState(
            cube_positions=positions,
            cube_quats_xyzw=quats,
            held={cube: self.held(cube) for cube in CUBES},
            tcp_position=self._tcp_position.copy(),
            bin_center=self.data.mocap_pos[self._mocap[BIN]][:2].copy(),
            zone_center=self.data.mocap_pos[self._mocap[ZONE]][:2].copy() if spec and spec.zone_center_xy is not None else None,
            target_position=self.data.mocap_pos[self._mocap[TARGET]].copy() if spec and spec.target_position is not None else None,
        )

    def task_status(self) -> TaskStatus:
        if self.task is None or self.spec is None:
            raise RuntimeError("call reset(task, seed) first")
        state = self.scene_state()
        done = self.task.subtasks_done(self.spec, state)
        names = ([*CUBES, BIN] + ([ZONE] if self.spec.zone_center_xy is not None else []) + ([TARGET] if self.spec.target_position is not None else [])
                 + ([SLOT] if self.spec.slot_pose is not None else []) + self._distractors)
        poses = np.array([np.concatenate(self.object_pose(name)) for name in names])
        return TaskStatus(
            task=self.task.name,
            seed=self.spec.seed,
            episode=self.episode,
            instruction=self.spec.instruction,
            subtask_instructions=list(self.spec.subtask_instructions),
            success=done == len(self.spec.subtask_instructions),
            subtasks_done=done,
            object_names=names,
            object_poses=poses,
        )

    # -- rendering ---------------------------------------------------------------------------------
    def render(self, cameras: list[str] | None = None) -> dict[str, np.ndarray]:
        """RGB images {camera: (H, W, 3) uint8} of the robot config's cameras (or the ones named)."""
        return self.renderer.render(self.data, cameras)

    def render_depth(self, cameras: list[str] | None = None) -> dict[str, np.ndarray]:
        """Depth images {camera: (H, W) float32 metres along the optical axis}."""
        return self.renderer.render_depth(self.data, cameras)

    def render_camera(self, camera: str, height: int, width: int, low_poly: bool | None = None) -> np.ndarray:
        """RGB image of any scene camera at any size, e.g. a 640x480 front view for a demo video."""
        return self.renderer.render_camera(camera, height, width, self.data, low_poly)

    def close(self) -> None:
        """Release the renderers' GL contexts."""
        self.renderer.close()

    def __enter__(self) -> "TabletopEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
