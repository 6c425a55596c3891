"""The safety bridge without ROS: inputs in, one guarded command per output cycle out.

:class:`SafetyBridgeCore` owns the mode, the watchdogs, the command locks and the motion
pipeline. The node (``wam_ros.nodes.safety_bridge_node``) converts messages into calls of
``on_*`` / :meth:`request_mode` and calls :meth:`step` at the output rate; every time is a float
in seconds of the node's clock (sim time in simulation). The policy for each check (clip or
stop) is documented in ``docs/safety.md``.

Pipeline of one cycle: watchdogs -> source target (chunk timeline, teleop twist or joint
command; none in HOLD/ESTOP) -> target clipped into the joint band and pulled back into the
workspace box -> ruckig's next state, with joint velocity limits that respect the TCP speed cap
-> taken only when that step and the brake plan from it keep every limit, else the next command
of the brake plan accepted a cycle earlier (:mod:`wam_ros.control.motion`) ->
:class:`~wam_ros.control.limits.SafetyGuard` (hard invariants) -> output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from wam_ros.control.chunks import ActionTimeline, ChunkInput, ChunkRejected, validate_chunk
from wam_ros.control.gripper import GripperGoal, GripperGoals, GripperResult
from wam_ros.control.kinematics import ChainKinematics, damped_least_squares
from wam_ros.control.limits import Limits, SafetyGuard
from wam_ros.control.modes import MOTION_MODES, EstopLatch, LatchState, Mode, Transition, check_request
from wam_ros.control.motion import JerkLimitedFollower, MotionStep, speed_capped_velocity_limit
from wam_ros.robot import RobotConfig

#: SafetyStatus.mode_requester when the bridge changed the mode by itself (a watchdog, a limit).
SELF_REQUESTER = "safety_bridge"
#: SafetyStatus.mode_requester for a SetMode request that did not say who asks.
UNNAMED_REQUESTER = "unnamed"
#: Most violation strings kept between two status messages (the count keeps counting).
MAX_PENDING_VIOLATIONS = 32
#: Fractions of the way to a target outside the workspace box that are tried; the largest one
#: whose TCP (and every smaller one's) is inside becomes the target. Coarse on purpose: each
#: cycle restarts from a point closer to the wall, so the arm creeps up to it.
_BOX_PULLBACK_FRACTIONS = np.linspace(0.0, 1.0, 17)[1:]


@dataclass(frozen=True)
class BridgeSettings:
    """Timing and teleop settings (the node's parameters); limits come from the robot config."""

    output_rate_hz: float = 250.0
    joint_state_timeout_s: float = 0.1
    action_chunk_timeout_s: float = 0.0
    inference_timeout_s: float = 1.0
    teleop_timeout_s: float = 0.1
    max_future_stamp_s: float = 0.05
    teleop_angular_speed_max_rad_s: float = 0.5
    ik_damping: float = 0.05
    max_tracking_error_rad: float = 0.5
    gripper_resend_period_s: float = 0.1
    gripper_force_n: float = 20.0  # grasp force sent with gripper commands, clipped into the gripper's force range

    @property
    def period_s(self) -> float:
        return 1.0 / self.output_rate_hz

    def validate(self, watchdog_margin_s: float) -> None:
        """Raise ValueError naming the first setting that is out of range."""
        for name in ("output_rate_hz", "joint_state_timeout_s", "inference_timeout_s", "teleop_timeout_s",
                     "teleop_angular_speed_max_rad_s", "ik_damping", "gripper_resend_period_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        for name in ("action_chunk_timeout_s", "max_future_stamp_s", "max_tracking_error_rad", "gripper_force_n"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0 and finite, got {value}")
        if self.output_rate_hz < 250.0:
            raise ValueError(f"output_rate_hz must be at least 250 Hz, got {self.output_rate_hz}")
        if self.period_s * 2 > watchdog_margin_s:
            raise ValueError(f"an output period of {self.period_s * 1e3:.1f} ms cannot meet the watchdog margin of "
                             f"{watchdog_margin_s * 1e3:.1f} ms (robot.safety.watchdog_margin_s): raise output_rate_hz")


@dataclass
class Output:
    """One output cycle: the arm command, and a gripper command when one is due.

    ``gripper_width_m`` is the rate-limited width for the wam_ros GripperCommand topic (with the
    action interface it is the record of what the bridge commands); ``gripper_goal`` a
    control_msgs GripperCommand goal to send (action interface).
    """

    time_s: float
    position: np.ndarray
    velocity: np.ndarray
    gripper_width_m: float | None = None
    gripper_goal: GripperGoal | None = None


@dataclass
class Status:
    """What SafetyStatus reports (ages are -1 when nothing arrived yet)."""

    mode: Mode
    active_limits: list[str]
    violations: list[str]
    violation_count: int
    action_chunk_age_s: float
    joint_state_age_s: float
    teleop_command_age_s: float
    watchdogs_ok: bool
    last_stop_reason: str
    last_stop_stamp_s: float
    command_source: str
    mode_requester: str
    mode_reason: str
    mode_stamp_s: float


class CommandLock:
    """One command source per topic: the first publisher heard after a mode entry holds it."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.holder: str | None = None
        self.holder_name = ""
        self._refused: set[tuple[str, str]] = set()

    def admit(self, source_id: str, source_name: str) -> bool:
        if self.holder is None:
            self.holder, self.holder_name = source_id, source_name
        return source_id == self.holder

    def first_refusal(self, source_id: str, source_name: str) -> bool:
        """True the first time ``source_id`` is refused under ``source_name`` since the lock was taken:
        reported once, and once more when the graph has named a publisher first heard unnamed."""
        key = (source_id, source_name)
        if key in self._refused:
            return False
        self._refused.add(key)
        return True

    def release(self) -> None:
        self.holder, self.holder_name = None, ""
        self._refused.clear()


@dataclass
class _Twist:
    linear_m_s: np.ndarray
    angular_rad_s: np.ndarray
    in_tool_frame: bool
    received_s: float


@dataclass
class _Watchdog:
    """A tripped watchdog: which one, its deadline and when HOLD followed."""

    name: str
    deadline_s: float
    hold_s: float

    @property
    def latency_s(self) -> float:
        return self.hold_s - self.deadline_s


@dataclass
class _Measured:
    position: np.ndarray
    velocity: np.ndarray
    stamp_s: float  # when it was measured: the header stamp, else when it arrived


@dataclass
class _ForeignPublisher:
    """Another node publishing on a topic only the bridge (backend commands) or one driver (the arm's joint states) may."""

    topic: str
    source_id: str
    name: str
    rule: str
    last_heard_s: float

    def describe(self) -> str:
        return f"{self.name or 'a publisher not identified yet (GID ' + self.source_id + ')'} on {self.topic}"

    @property
    def reason(self) -> str:
        return f"foreign publisher: {self.describe()}; {self.rule}"


class SafetyBridgeCore:
    """Mode machine, watchdogs, command locks and the guarded motion pipeline of the bridge."""

    CHUNK_TOPIC = "action_chunk"
    TWIST_TOPIC = "teleop_twist"
    JOINT_TOPIC = "teleop_joints"
    GRIPPER_TOPIC = "teleop_gripper"

    def __init__(self, robot: RobotConfig, settings: BridgeSettings, latch: EstopLatch, kinematics: ChainKinematics | None = None,
                 joint_states_topic: str = "joint_states") -> None:
        """``joint_states_topic``: the measured state's topic as reports name it (the node passes its resolved name)."""
        self.joint_states_topic = joint_states_topic
        settings.validate(robot.safety.watchdog_margin_s)
        self.robot = robot
        self.settings = settings
        self.period_s = settings.period_s
        self.limits = Limits.from_robot(robot)
        self.kinematics = kinematics or ChainKinematics.from_urdf(robot.urdf_path, robot.base_frame, robot.tcp_frame, robot.arm.joint_names)
        self.guard = SafetyGuard(self.limits, self.kinematics, self.period_s)
        self.follower = JerkLimitedFollower(self.limits, self.period_s)
        self.latch = latch
        self.locks = {topic: CommandLock(topic) for topic in (self.CHUNK_TOPIC, self.TWIST_TOPIC, self.JOINT_TOPIC, self.GRIPPER_TOPIC)}
        self.joint_state_source = CommandLock(self.joint_states_topic)  # the one publisher of the arm's joint states
        self.joint_state_source_heard_s = -math.inf
        self.foreign: dict[tuple[str, str], _ForeignPublisher] = {}  # (topic, source id) -> publisher
        self._future_joint_stamp = False  # the last joint state was stamped ahead of the bridge's clock
        self.mode = Mode.IDLE
        self.mode_requester = SELF_REQUESTER
        self.mode_reason = "started"
        self.mode_stamp_s = 0.0
        self.last_stop_reason = ""
        self.last_stop_stamp_s = 0.0
        self.last_watchdog: _Watchdog | None = None
        self.watchdog_holding = False  # HOLD was caused by a watchdog and no mode request came since
        self.joint_states_late = False  # the previous output cycle found the joint-state deadline passed
        self.violation_count = 0
        self.pending_violations: list[str] = []
        self.active_limits: list[str] = []
        self.measured: _Measured | None = None
        self.commanding = False  # follower holds a valid commanded state
        self.tcp_m = np.zeros(3)
        self.timeline: ActionTimeline | None = None
        self.last_chunk_s: float | None = None
        self.autonomy_since_s = 0.0
        self.twist: _Twist | None = None
        self.joint_target: np.ndarray | None = None
        self.joint_target_s = 0.0  # when the joint target arrived
        self.last_teleop_s: float | None = None
        self.gripper_target_m: float | None = None
        self.gripper_command_m: float | None = None
        self.gripper_sent_s = -math.inf
        self._gripper_sent_m: float | None = None
        self.measured_gripper_m: float | None = None
        gripper = robot.gripper
        self.gripper_force_n = min(max(settings.gripper_force_n, gripper.force_min_n), gripper.force_max_n)
        self.gripper_goals = GripperGoals(gripper, self.gripper_force_n) if gripper.joint_names and gripper.interface == "action" else None
        self._motion_failures = 0
        self._jacobian: tuple[np.ndarray, np.ndarray] | None = None  # TCP Jacobian and rotation at the commanded position
        state = latch.read()
        if not state.latched:
            problem = self._write_latch(LatchState(False))  # a latch that cannot be written could not keep an ESTOP
            if problem:
                state = LatchState(True, f"{problem}; an ESTOP would not survive a restart: make estop_latch_file writable, then reset")
        if state.latched:
            self.mode = Mode.ESTOP
            self.last_stop_reason = state.reason or "ESTOP latched before the bridge started"
            self.last_stop_stamp_s = state.stamp_s
            self.mode_reason = f"ESTOP latched before the bridge started: {self.last_stop_reason}"

    # ----------------------------------------------------------------- reporting
    def report(self, check: str, detail: str) -> None:
        """Record a violation: ``"<check>: <detail>"`` in the next status, and count it."""
        self.violation_count += 1
        if len(self.pending_violations) < MAX_PENDING_VIOLATIONS:
            self.pending_violations.append(f"{check}: {detail}")

    def status(self, now_s: float) -> Status:
        """Snapshot for SafetyStatus; drains the violations reported since the previous call."""
        def age(stamp: float | None) -> float:
            return -1.0 if stamp is None else max(now_s - stamp, 0.0)

        topics = (self.CHUNK_TOPIC,) if self.mode == Mode.AUTONOMY else (self.TWIST_TOPIC, self.JOINT_TOPIC) if self.mode == Mode.TELEOP else ()
        holders = [self.locks[topic].holder_name or str(self.locks[topic].holder) for topic in topics if self.locks[topic].holder is not None]
        violations, self.pending_violations = self.pending_violations, []
        return Status(
            mode=self.mode,
            active_limits=list(self.active_limits),
            violations=violations,
            violation_count=self.violation_count,
            action_chunk_age_s=age(self.last_chunk_s),
            joint_state_age_s=age(self.measured.stamp_s if self.measured else None),
            teleop_command_age_s=age(self.last_teleop_s),
            watchdogs_ok=not self.watchdog_holding,
            last_stop_reason=self.last_stop_reason,
            last_stop_stamp_s=self.last_stop_stamp_s,
            command_source=", ".join(holders),
            mode_requester=self.mode_requester,
            mode_reason=self.mode_reason,
            mode_stamp_s=self.mode_stamp_s,
        )

    # ----------------------------------------------------------------- inputs
    def on_joint_state(self, names: Sequence[str], positions: Sequence[float], velocities: Sequence[float], now_s: float,
                       stamp_s: float = 0.0, source_id: str = "", source_name: str = "") -> bool:
        """Take the arm joints out of a JointState; returns False (and reports) when it is unusable.

        ``stamp_s`` is the header stamp (0: none, the arrival ``now_s`` counts); a stamp ahead of
        the clock counts as now. Only one publisher's joint states are taken (:meth:`_admit_joint_state`).
        """
        index = {name: i for i, name in enumerate(names)}
        if any(name in index for name in self.limits.joint_names) and not self._admit_joint_state(source_id, source_name, now_s):
            return False
        if len(positions) != len(names) or any(name not in index for name in self.limits.joint_names):
            self.report("joint_states", f"message lacks arm joints or has {len(positions)} positions for {len(names)} names")
            return False
        order = [index[name] for name in self.limits.joint_names]
        position = np.asarray(positions, dtype=float)[order]
        velocity = np.asarray(velocities, dtype=float)[order] if len(velocities) == len(names) else np.zeros(len(order))
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(velocity))):
            self.report("joint_states", "non-finite joint positions or velocities")
            return False
        ahead = stamp_s - now_s > self.settings.max_future_stamp_s
        if ahead and not self._future_joint_stamp:
            self.report("joint_states", f"stamped {stamp_s - now_s:.3f} s ahead of this clock (more than max_future_stamp_s): "
                                        "are the clocks synchronized? (docs/real_robot.md)")
        self._future_joint_stamp = ahead
        self.measured = _Measured(position, velocity, min(stamp_s, now_s) if stamp_s > 0.0 else now_s)
        gripper = self.robot.gripper
        if gripper.joint_names and all(name in index for name in gripper.joint_names):
            width = float(gripper.width_from_joint_positions(positions[index[name]] for name in gripper.joint_names))
            if math.isfinite(width):
                self.measured_gripper_m = width
        if self.mode in MOTION_MODES and self.commanding and self.settings.max_tracking_error_rad > 0:
            error = np.abs(self.follower.position - position)
            worst = int(np.argmax(error))
            if error[worst] > self.settings.max_tracking_error_rad:
                self._stop(Mode.HOLD, f"tracking error {error[worst]:.3f} rad on {self.limits.joint_names[worst]} "
                                      f"exceeds {self.settings.max_tracking_error_rad} rad", now_s, at_measured=True)
        return True

    def _admit(self, topic: str, source_id: str, source_name: str) -> bool:
        lock = self.locks[topic]
        if lock.admit(source_id, source_name):
            return True
        if lock.first_refusal(source_id, source_name):
            self.report("multiple_publishers", f"{topic}: refused messages from {source_name or source_id}; "
                                               f"command lock held by {lock.holder_name or lock.holder}")
        return False

    def _admit_joint_state(self, source_id: str, source_name: str, now_s: float) -> bool:
        """Whether this publisher's joint states may be the measured state.

        One publisher of the arm's joints: the node the robot config names
        (``safety.joint_state_publisher``), else the first one heard. Any other publisher of them
        is foreign (:meth:`_foreign_publisher`). With a configured name, a publisher whose node
        the graph has not named yet is ignored until it has.
        """
        wanted, source = self.robot.safety.joint_state_publisher, self.joint_state_source
        if wanted and source_name == wanted:
            source.holder, source.holder_name = source_id, source_name
        elif wanted and not source_name:
            return False
        elif wanted or not source.admit(source_id, source_name):
            holder = f"{wanted} (robot.safety.joint_state_publisher)" if wanted else "the first publisher heard"
            self._foreign_publisher(self.joint_states_topic, source_id, source_name, now_s, f"only {holder} may publish the arm's joint states")
            return False
        self.joint_state_source_heard_s = now_s
        return True

    def _foreign_publisher(self, topic: str, source_id: str, source_name: str, now_s: float, rule: str) -> None:
        """Another node on a topic the bridge owns: HOLD when moving the arm, refuse TELEOP and
        AUTONOMY until it is gone (:meth:`observe_output_topic`, :meth:`observe_joint_state_publishers`)."""
        key = (topic, source_id)
        if key in self.foreign:
            self.foreign[key].last_heard_s = now_s
            return
        foreign = self.foreign[key] = _ForeignPublisher(topic, source_id, source_name, rule, now_s)
        self.report("foreign_publisher", foreign.reason)
        if self.mode in MOTION_MODES:
            self._stop(Mode.HOLD, foreign.reason, now_s)

    def observe_output_topic(self, topic: str, publishers: Mapping[str, str], now_s: float) -> None:
        """The publishers other than the bridge on one of its backend command topics (id -> node name), from the graph."""
        for source_id, name in publishers.items():
            self._foreign_publisher(topic, source_id, name, now_s, "only the safety bridge may command the arm")
        for key in [key for key in self.foreign if key[0] == topic and key[1] not in publishers]:
            del self.foreign[key]

    def observe_joint_state_publishers(self, publishers: Mapping[str, str], now_s: float) -> None:
        """The publishers on /joint_states (id -> node name), from the graph: foreign ones that left
        (and have been silent for ``joint_state_timeout_s``) are gone; the lock of a publisher that
        left is released, so a restarted driver can take it."""
        silent_s = self.settings.joint_state_timeout_s
        for key, foreign in list(self.foreign.items()):
            if foreign.topic == self.joint_states_topic and key[1] not in publishers and now_s - foreign.last_heard_s > silent_s:
                del self.foreign[key]
        source = self.joint_state_source
        if source.holder is not None and source.holder not in publishers and now_s - self.joint_state_source_heard_s > silent_s:
            source.release()

    def name_source(self, source_id: str, source_name: str) -> None:
        """Give a source known only by its id (publisher GID) its node name, once the graph knows it."""
        for lock in (*self.locks.values(), self.joint_state_source):
            if lock.holder == source_id:
                lock.holder_name = source_name
        for foreign in self.foreign.values():
            if foreign.source_id == source_id and not foreign.name:
                unnamed, foreign.name = foreign.reason, source_name
                self.report("foreign_publisher", f"{foreign.describe()} (publisher GID {source_id})")
                if self.last_stop_reason == unnamed:  # the stop it caused names it now
                    self.last_stop_reason = foreign.reason
                if self.mode_reason == unnamed:
                    self.mode_reason = foreign.reason

    def observe_publishers(self, topic: str, publisher_names: Sequence[str]) -> None:
        """Report a command topic with more than one publisher (called by the node on graph changes)."""
        if len(publisher_names) > 1:
            lock = self.locks[topic]
            holder = f"; only {lock.holder_name} is accepted" if lock.holder else ""
            self.report("multiple_publishers", f"{topic} has {len(publisher_names)} publishers ({', '.join(publisher_names)}){holder}")

    def on_chunk(self, chunk: ChunkInput, now_s: float, source_id: str = "", source_name: str = "") -> bool:
        """Accept an ActionChunk in AUTONOMY; returns whether it now drives the arm.

        Only a valid chunk takes a free command lock: a stale or malformed chunk from another
        publisher (a stray node of another stack) must not lock out the policy that follows it.
        """
        if self.mode != Mode.AUTONOMY:
            return False
        if self.locks[self.CHUNK_TOPIC].holder is not None and not self._admit(self.CHUNK_TOPIC, source_id, source_name):
            return False
        try:
            timeline = validate_chunk(chunk, self.limits.joint_names, bool(self.robot.gripper.joint_names), now_s, self.settings.max_future_stamp_s)
        except ChunkRejected as error:
            self.report("action_chunk", f"chunk {chunk.chunk_id} from {source_name or source_id or 'an unknown publisher'} refused: {error}")
            if error.check == "non_finite":
                self._stop(Mode.HOLD, f"action chunk {chunk.chunk_id} with non-finite values", now_s)
            return False
        if not self._admit(self.CHUNK_TOPIC, source_id, source_name):
            return False
        self.timeline = timeline
        self.last_chunk_s = now_s
        return True

    def on_teleop_twist(self, linear_m_s: Sequence[float], angular_rad_s: Sequence[float], frame_id: str, now_s: float,
                        source_id: str = "", source_name: str = "") -> bool:
        """A Cartesian velocity command (TwistStamped) in TELEOP: base frame (or empty) or the TCP frame."""
        if self.mode != Mode.TELEOP or not self._admit(self.TWIST_TOPIC, source_id, source_name):
            return False
        linear, angular = np.asarray(linear_m_s, dtype=float), np.asarray(angular_rad_s, dtype=float)
        if not (np.all(np.isfinite(linear)) and np.all(np.isfinite(angular))):
            self.report("teleop_command", "non-finite twist refused")
            self._stop(Mode.HOLD, "teleop twist with non-finite values", now_s)
            return False
        if frame_id not in ("", self.robot.base_frame, self.robot.tcp_frame):
            self.report("teleop_command", f"twist frame {frame_id!r} refused; use {self.robot.base_frame!r} or {self.robot.tcp_frame!r}")
            return False
        with np.errstate(over="ignore"):  # 1e300 m/s is finite but its norm is not: clipped to the cap all the same
            speed, turn = float(np.linalg.norm(linear)), float(np.linalg.norm(angular))
        if speed > self.limits.ee_speed_max_m_s:
            linear = linear * (self.limits.ee_speed_max_m_s / speed)
            self.report("ee_speed", f"teleop linear speed {speed:.3f} m/s clipped to {self.limits.ee_speed_max_m_s} m/s")
        if turn > self.settings.teleop_angular_speed_max_rad_s:
            angular = angular * (self.settings.teleop_angular_speed_max_rad_s / turn)
            self.report("angular_speed", f"teleop angular speed {turn:.3f} rad/s clipped to {self.settings.teleop_angular_speed_max_rad_s} rad/s")
        self.twist = _Twist(linear, angular, frame_id == self.robot.tcp_frame, now_s)
        self.joint_target = None
        self.last_teleop_s = now_s
        return True

    def on_teleop_joints(self, names: Sequence[str], positions: Sequence[float], now_s: float,
                         source_id: str = "", source_name: str = "") -> bool:
        """Joint position targets (a leader arm's JointState) in TELEOP; all arm joints, any order."""
        if self.mode != Mode.TELEOP or not self._admit(self.JOINT_TOPIC, source_id, source_name):
            return False
        if sorted(names) != sorted(self.limits.joint_names) or len(positions) != len(names):
            self.report("teleop_command", f"joint command must name every arm joint once with one position each, got {list(names)}")
            return False
        values = np.asarray(positions, dtype=float)
        if not np.all(np.isfinite(values)):
            self.report("teleop_command", "non-finite joint command refused")
            self._stop(Mode.HOLD, "teleop joint command with non-finite values", now_s)
            return False
        order = [list(names).index(name) for name in self.limits.joint_names]
        self.joint_target = values[order]
        self.joint_target_s = now_s
        self.twist = None
        self.last_teleop_s = now_s
        return True

    def on_teleop_gripper(self, width_m: float, now_s: float, source_id: str = "", source_name: str = "") -> bool:
        """A gripper opening target from the teleop device (clipped to the gripper's range)."""
        if self.mode != Mode.TELEOP or not self.robot.gripper.joint_names or not self._admit(self.GRIPPER_TOPIC, source_id, source_name):
            return False
        if not math.isfinite(width_m):
            self.report("teleop_command", "non-finite gripper width refused")
            return False
        self.gripper_target_m = width_m
        self.last_teleop_s = now_s
        return True

    # ----------------------------------------------------------------- modes
    def request_mode(self, requested: int, reason: str, reset_estop: bool, now_s: float, requester: str = "") -> Transition:
        """Handle a SetMode request: refused with a reason, or carried out (``requester`` is recorded)."""
        accepted, message = check_request(self.mode, requested, reset_estop, self._joint_states_fresh(now_s))
        if not accepted:
            if self.measured is not None and "no fresh joint states" in message:
                message += f" (the newest is {now_s - self.measured.stamp_s:.3f} s old by its stamp)"
            return Transition(False, self.mode, message)
        target = Mode(requested)
        if target in MOTION_MODES and self.foreign:
            return Transition(False, self.mode, f"cannot enter {target.name}: foreign publisher "
                                                + "; ".join(foreign.describe() for foreign in self.foreign.values()))
        previous = self.mode
        why = f"{message} ({reason})" if reason else message
        if self.mode == Mode.ESTOP and target != Mode.ESTOP:
            problem = self._write_latch(LatchState(False))
            if problem:  # the file would still say ESTOP, or say nothing: stay in ESTOP until it can be written
                return Transition(False, self.mode, f"ESTOP reset refused: {problem}")
        if target in (Mode.HOLD, Mode.ESTOP):
            if target != self.mode or self.mode == Mode.ESTOP:
                self._stop(target, f"requested: {reason or 'no reason given'}", now_s)
        else:
            self._enter(target, now_s)
        if self.mode != previous or target in MOTION_MODES:  # a repeated HOLD or IDLE changes nothing
            self._record_mode(requester or UNNAMED_REQUESTER, reason, now_s)
        return Transition(True, self.mode, why)

    def _record_mode(self, requester: str, reason: str, now_s: float) -> None:
        self.mode_requester, self.mode_reason, self.mode_stamp_s = requester, reason, now_s

    def _joint_states_fresh(self, now_s: float) -> bool:
        return self.measured is not None and now_s - self.measured.stamp_s <= self.settings.joint_state_timeout_s

    def _enter(self, mode: Mode, now_s: float) -> None:
        """Switch into IDLE, TELEOP or AUTONOMY: from rest at the measured state, in motion continuing the command."""
        self.mode = mode
        self.watchdog_holding = False
        self.timeline = None
        self.twist = None
        self.joint_target = None
        self.gripper_target_m = None
        self.gripper_command_m = None
        if self.gripper_goals is not None:
            self.gripper_goals.restart()
        for lock in self.locks.values():
            lock.release()
        if mode == Mode.IDLE:
            return  # step() stops commanding once a braking arm is at rest
        assert self.measured is not None  # check_request made sure
        self._start_from_measured(keep_motion=True)
        if mode == Mode.AUTONOMY:
            self.autonomy_since_s = now_s
            self.last_chunk_s = None

    def _start_from_measured(self, keep_motion: bool) -> None:
        """Restart the commanded state at the measured joint positions, or, with ``keep_motion``
        while a command is moving, continue it as it is.

        A handover while the arm moves (TELEOP <-> AUTONOMY, leaving a brake) keeps position,
        velocity and acceleration of the command: its verified brake plan stays valid and the
        output does not step back by the arm's tracking lag (an impedance or position controller
        would see that step as a jump of its target). From rest, the command starts where the
        arm is (a held position may have drifted from the measured one).
        """
        assert self.measured is not None
        follower = self.follower
        if not (keep_motion and self.commanding and not follower.at_rest):
            follower.reset(self.measured.position)
        self.tcp_m = self.kinematics.positions(follower.position)
        self._jacobian = None
        self.commanding = True

    def _stop(self, mode: Mode, reason: str, now_s: float, at_measured: bool = False) -> None:
        """Enter HOLD or ESTOP: a jerk-limited brake from the commanded state (a controlled stop).

        ``at_measured`` holds where the arm is instead (after a tracking error: stop pushing).
        When nothing was commanded yet, the hold starts at the measured state.
        """
        if mode == Mode.ESTOP:
            problem = self._write_latch(LatchState(True, reason, now_s))
            if problem:
                reason = f"{reason} (not persisted: {problem})"
        self.mode = mode
        self.last_stop_reason = reason
        self.last_stop_stamp_s = now_s
        self._record_mode(SELF_REQUESTER, reason, now_s)  # request_mode overwrites it for a requested stop
        self.watchdog_holding = False  # trip() sets it again after a watchdog stop
        self.timeline = None
        self.twist = None
        self.joint_target = None
        if (at_measured or not self.commanding) and self._joint_states_fresh(now_s):
            self._start_from_measured(keep_motion=False)

    def _write_latch(self, state: LatchState) -> str:
        """Persist the ESTOP latch; returns what went wrong (reported as a violation), "" when written."""
        try:
            self.latch.write(state)
        except OSError as error:
            problem = f"cannot write the ESTOP latch {self.latch.path}: {error}"
            self.report("estop_latch", problem)
            return problem
        return ""

    def trip(self, name: str, deadline_s: float, now_s: float) -> None:
        """A watchdog passed its deadline: HOLD, recording the deadline-to-HOLD time."""
        self.last_watchdog = _Watchdog(name, deadline_s, now_s)
        self._stop(Mode.HOLD, f"watchdog {name}: deadline passed {(now_s - deadline_s) * 1e3:.1f} ms ago", now_s)
        self.watchdog_holding = True

    def _check_watchdogs(self, now_s: float) -> None:
        if self.mode not in MOTION_MODES:
            self.joint_states_late = False
            return
        assert self.measured is not None
        deadline = self.measured.stamp_s + self.settings.joint_state_timeout_s
        if now_s > deadline:
            # Confirmed on the next output cycle. A ROS executor runs a ready timer before the
            # subscriptions of the same wait: when a /clock update (sim time) or a stall moves the
            # clock past the deadline, this cycle can run before the joint state that arrived
            # with it is taken. A stream that has stopped trips one period later (docs/safety.md).
            if self.joint_states_late:
                self.trip("joint_states", deadline, now_s)
                return
            self.joint_states_late = True
        else:
            self.joint_states_late = False
        if self.mode != Mode.AUTONOMY:
            return
        heard = self.last_chunk_s if self.last_chunk_s is not None else self.autonomy_since_s
        deadline = heard + self.settings.inference_timeout_s
        if now_s > deadline:
            self.trip("inference_silent", deadline, now_s)
            return
        if self.timeline is not None:
            deadline = self.timeline.end_s + self.settings.action_chunk_timeout_s
            if now_s > deadline:
                self.trip("action_chunk_stale", deadline, now_s)

    # ----------------------------------------------------------------- output
    def step(self, now_s: float) -> Output | None:
        """One output cycle at ``now_s``: the command meant for ``now_s + period``, or None when the arm is not commanded."""
        self.active_limits = []
        if self.gripper_goals is not None:
            self._gripper_fault(self.gripper_goals.expire(now_s), now_s)
        self._check_watchdogs(now_s)
        if not self.commanding:
            if self.mode == Mode.HOLD and self.measured is not None:
                self._start_from_measured(keep_motion=False)  # HOLD requested before any joint state: hold the first one
            else:
                return None
        if self.mode in (Mode.IDLE, Mode.ESTOP) and self.follower.at_rest:
            # Braked to standstill: commands cease (IDLE: the backend keeps the last target; ESTOP,
            # category 1: the robot's own brakes / e-stop take over).
            self.commanding = self.mode == Mode.ESTOP
            return None
        previous = self.follower.position
        step: MotionStep | None = None  # None: brake along the plan accepted a cycle ago
        if self.mode == Mode.AUTONOMY and self.timeline is not None:
            target, velocity, width = self.timeline.sample(now_s + self.period_s)
            if width is not None:
                self.gripper_target_m = width
            step = self._track(target, velocity)
        elif self.mode == Mode.TELEOP and self.joint_target is not None and self._teleop_fresh(self.joint_target_s, now_s):
            step = self._track(self.joint_target, np.zeros(self.limits.dof))
        elif self.mode == Mode.TELEOP and self.twist is not None and self._teleop_fresh(self.twist.received_s, now_s):
            step = self._servo(self.twist)
        elif self.mode == Mode.AUTONOMY:
            step = self._track(previous, np.zeros(self.limits.dof))  # no plan yet: hold
        if self.follower.failures != self._motion_failures:
            self._motion_failures = self.follower.failures
            self.report("motion_generator", f"ruckig found no trajectory; braking ({self.follower.last_error})")
        if step is not None:
            problems = self.guard.path_problems(self.follower.history, np.vstack([step.position, step.plan_positions]))
            if problems:  # it could not stop from there within the limits: brake now instead
                self.active_limits.extend(problems)
                step = None
        if step is None:
            step = self.follower.braking_step()
        result = self.guard.apply(previous, self.tcp_m, step.position)
        if result.clipped:
            self.follower.commit_position(result.position)
        else:
            self.follower.commit(step)
        self.tcp_m = result.tcp_position_m
        self._jacobian = None if result.jacobian is None else (result.jacobian, result.tcp_rotation)
        self.active_limits.extend(result.clipped)
        if "non_finite" in result.clipped:
            self._stop(Mode.HOLD, "internal: non-finite command replaced by the previous one", now_s)
        width, goal = self._gripper(now_s)
        return Output(now_s, result.position.copy(), self.follower.velocity.copy(), width, goal)

    def _teleop_fresh(self, received_s: float, now_s: float) -> bool:
        """A teleop command (twist or joint target) younger than ``teleop_timeout_s``: older ones brake the arm."""
        return now_s - received_s <= self.settings.teleop_timeout_s

    def _track(self, target: np.ndarray, velocity: np.ndarray) -> MotionStep | None:
        """Ruckig towards a position target clipped into the joint band and the workspace box."""
        clipped = self.limits.clip_positions(target)
        for index in np.flatnonzero(clipped != target):
            self.active_limits.append(f"joint_position:{self.limits.joint_names[index]}")
        if np.any(clipped != target):
            velocity = np.zeros_like(velocity)
        clipped = self._pull_into_box(clipped)
        jac, _ = self._jacobian_here()
        direction = clipped - self.follower.position
        if float(direction @ direction) < 1e-18:
            direction = self.follower.velocity
        limit = speed_capped_velocity_limit(self.limits, jac[:3], direction)
        return self.follower.track(clipped, velocity, limit)

    def _jacobian_here(self) -> tuple[np.ndarray, np.ndarray]:
        """TCP Jacobian and rotation at the commanded position (the guard's, when it computed them)."""
        if self._jacobian is None:
            jac, _, rotation = self.kinematics.jacobian(self.follower.position)
            self._jacobian = (jac, rotation)
        return self._jacobian

    def _pull_into_box(self, target: np.ndarray) -> np.ndarray:
        """Move a target whose TCP lies outside the box back towards the commanded position until it is inside."""
        limits = self.limits
        if limits.box_distance_m(self.kinematics.positions(target)) <= 0.0:
            return target
        self.active_limits.append("workspace")
        start = self.follower.position
        if limits.box_distance_m(self.tcp_m) > 0.0:
            return start  # already outside: do not wander; the guard lets the arm move back in only
        fractions = _BOX_PULLBACK_FRACTIONS[:, None]
        inside = limits.box_distance_m(self.kinematics.positions(start + fractions * (target - start))) <= 0.0
        last_inside = int(np.argmin(inside)) - 1  # the fraction before the first one outside (the full target is outside)
        return start if last_inside < 0 else start + _BOX_PULLBACK_FRACTIONS[last_inside] * (target - start)

    def _servo(self, twist: _Twist) -> MotionStep | None:
        """Joint velocities for a Cartesian twist (damped least squares), reached with jerk-limited motion.

        A twist into a joint limit or the workspace wall stops at it: near it, a step's brake plan
        would cross it, so the bridge brakes instead (:meth:`step`).
        """
        jac, rotation = self._jacobian_here()
        linear, angular = twist.linear_m_s, twist.angular_rad_s
        if twist.in_tool_frame:
            linear, angular = rotation @ linear, rotation @ angular
        joint_velocity = damped_least_squares(jac, np.concatenate([linear, angular]), self.settings.ik_damping)
        peak = np.max(np.abs(joint_velocity) / self.limits.velocity_max_rad_s)
        if peak > 1.0:
            joint_velocity = joint_velocity / peak
            self.active_limits.append("joint_velocity")
        limit = speed_capped_velocity_limit(self.limits, jac[:3], joint_velocity)
        return self.follower.track_velocity(joint_velocity, limit)

    def _gripper(self, now_s: float) -> tuple[float | None, GripperGoal | None]:
        """The rate-limited gripper width when it changed or is due for a resend, and an action goal when one is due.

        An action goal carries the clipped target itself: the gripper moves at its own speed.
        """
        gripper = self.robot.gripper
        if not gripper.joint_names or self.gripper_target_m is None or self.mode not in MOTION_MODES:
            return None, None
        target = min(max(self.gripper_target_m, gripper.width_min_m), gripper.width_max_m)
        if target != self.gripper_target_m:
            self.active_limits.append("gripper_width")
        goal = None if self.gripper_goals is None else self.gripper_goals.next_goal(target, now_s)
        # From the last command sent (a grasp stays closed across a mode switch), else the measured width.
        current = next((w for w in (self.gripper_command_m, self._gripper_sent_m, self.measured_gripper_m) if w is not None), target)
        step = gripper.speed_max_m_s * self.period_s
        self.gripper_command_m = current + min(max(target - current, -step), step)
        changed = self._gripper_sent_m is None or abs(self.gripper_command_m - self._gripper_sent_m) >= 1e-4
        if changed or now_s - self.gripper_sent_s >= self.settings.gripper_resend_period_s:
            self.gripper_sent_s, self._gripper_sent_m = now_s, self.gripper_command_m
            return self.gripper_command_m, goal
        return None, goal

    # ----------------------------------------------------------------- gripper action (control_msgs GripperCommand)
    def on_gripper_response(self, seq: int, accepted: bool, now_s: float) -> None:
        """The action server accepted or rejected goal ``seq``."""
        assert self.gripper_goals is not None
        self._gripper_fault(self.gripper_goals.on_response(seq, accepted), now_s)

    def on_gripper_result(self, seq: int, result: GripperResult, now_s: float) -> None:
        """Goal ``seq`` finished with ``result``."""
        assert self.gripper_goals is not None
        self._gripper_fault(self.gripper_goals.on_result(seq, result), now_s)

    def on_gripper_not_sent(self, seq: int, problem: str, now_s: float) -> None:
        """Goal ``seq`` could not be sent (no action server)."""
        assert self.gripper_goals is not None
        self._gripper_fault(self.gripper_goals.fail(seq, problem), now_s)

    def _gripper_fault(self, reason: str, now_s: float) -> None:
        """A gripper goal failed (``reason`` names the action and the result): HOLD a commanded arm."""
        if not reason:
            return
        self.report("gripper", reason)
        if self.mode in MOTION_MODES:
            self._stop(Mode.HOLD, reason, now_s)

    def stop_for_shutdown(self, reason: str, now_s: float) -> None:
        """The bridge is exiting: brake a commanded arm to standstill in HOLD (IDLE and ESTOP stay)."""
        if self.mode in MOTION_MODES or (self.mode == Mode.HOLD and self.commanding):
            self._stop(Mode.HOLD, reason, now_s)

    @property
    def at_standstill(self) -> bool:
        """No commanded motion: not commanding, or the commanded state is at rest."""
        return not self.commanding or self.follower.at_rest

    @property
    def deadline_to_hold_s(self) -> float | None:
        """Time from the last tripped watchdog's deadline to HOLD (None before any trip)."""
        return None if self.last_watchdog is None else self.last_watchdog.latency_s
