"""The bridge's modes, which transitions a request may make, and the persisted ESTOP latch.

Mode numbers are those of ``wam_ros/SafetyStatus`` (MODE_IDLE=0 ... MODE_ESTOP=4).
"""
from __future__ import annotations

import enum
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from wam_ros.files import write_atomic


class Mode(enum.IntEnum):
    IDLE = 0
    TELEOP = 1
    AUTONOMY = 2
    HOLD = 3
    ESTOP = 4


MOTION_MODES = (Mode.TELEOP, Mode.AUTONOMY)


@dataclass(frozen=True)
class Transition:
    """Outcome of a mode request."""

    accepted: bool
    mode: Mode
    message: str


def check_request(current: Mode, requested: int, reset_estop: bool, joint_states_fresh: bool) -> tuple[bool, str]:
    """Whether a SetMode request may change ``current`` into ``requested``, with the reason.

    - ESTOP is always accepted; leaving it needs ``reset_estop`` and goes to IDLE or HOLD only.
    - TELEOP and AUTONOMY need fresh joint states (a switch from rest starts at the measured state).
    - IDLE (stop commanding) only from HOLD or IDLE: a commanded arm is stopped with HOLD first.
    """
    try:
        target = Mode(requested)
    except ValueError:
        return False, f"unknown mode {requested}; expected 0..4 (IDLE, TELEOP, AUTONOMY, HOLD, ESTOP)"
    if target == Mode.ESTOP:
        return True, "ESTOP"
    if current == Mode.ESTOP:
        if not reset_estop:
            return False, "ESTOP is latched: request IDLE or HOLD with reset_estop=true to leave it"
        if target not in (Mode.IDLE, Mode.HOLD):
            return False, f"an ESTOP reset goes to IDLE or HOLD, not {target.name}"
        return True, f"ESTOP reset to {target.name}"
    if target in MOTION_MODES and not joint_states_fresh:
        return False, f"cannot enter {target.name}: no fresh joint states"
    if target == Mode.IDLE and current not in (Mode.IDLE, Mode.HOLD):
        return False, f"cannot go from {current.name} to IDLE while commanding: request HOLD first"
    return True, f"{current.name} -> {target.name}"


@dataclass(frozen=True)
class LatchState:
    latched: bool
    reason: str = ""
    stamp_s: float = 0.0


class EstopLatch:
    """ESTOP state on disk, so that a restarted bridge comes back in ESTOP until an explicit reset.

    Written atomically (temporary file, fsync, rename). A file that exists but cannot be read
    or parsed counts as latched: the fault is reported and only a reset clears it.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @staticmethod
    def default_path(robot_name: str) -> Path:
        """``$ROS_HOME/wam_ros/estop_<robot>.json`` (``~/.ros`` when ROS_HOME is unset)."""
        ros_home = os.environ.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros")
        return Path(ros_home) / "wam_ros" / f"estop_{robot_name}.json"

    def read(self) -> LatchState:
        if not self.path.exists():
            return LatchState(False)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            latched, reason, stamp = data["latched"], data.get("reason", ""), data.get("stamp_s", 0.0)
            if not isinstance(latched, bool) or not isinstance(reason, str) or not isinstance(stamp, (int, float)):
                raise TypeError("wrong field types")
        except (OSError, ValueError, KeyError, TypeError) as error:
            return LatchState(True, f"ESTOP latch file {self.path} unreadable ({type(error).__name__}: {error}); reset required")
        return LatchState(latched, reason, float(stamp) if math.isfinite(stamp) else 0.0)

    def write(self, state: LatchState) -> None:
        """Persist ``state``; raises OSError when the file cannot be written (the caller reports it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"latched": state.latched, "reason": state.reason, "stamp_s": state.stamp_s})
        write_atomic(self.path, payload.encode("utf-8"))


class MemoryLatch(EstopLatch):
    """The ESTOP latch in memory, for fuzzing and benchmarks of the core (no file, no fsync per
    case). A bridge driving an arm uses :class:`EstopLatch`: this one forgets ESTOP on restart."""

    def __init__(self) -> None:
        super().__init__("/nonexistent/estop.json")
        self.state = LatchState(False)

    def read(self) -> LatchState:
        return self.state

    def write(self, state: LatchState) -> None:
        self.state = state
