"""Executing a plan: which subtask is active, when it is done, when to replan, when to give up.

Pure bookkeeping driven by the caller's clock (the planner node passes ROS time, so sim time
works): :meth:`PlanExecution.update` takes what is known now (the symbolic state from a task
status, the task's success flag, the world model's progress estimate on the live observation)
and returns a :class:`Decision`. A subtask is done when its effects hold in the symbolic state,
or, without one, when the progress estimate stays at or above a threshold for a few readings.
A timed-out subtask leads to a replan (if any are left), and so does a stuck one (the progress
estimate has not moved for ``stuck_window_s``) and a regression (an effect an earlier subtask
achieved no longer holds: a cube knocked out of the bin). The operator always wins: any mode
change the planner did not request (an operator's HOLD or takeover, the bridge's own stop, an
e-stop) ends the task at once, never followed by a replan.

On a robot the symbolic state comes from the scene monitor (the planner's scene detector on the
cameras, :mod:`wam_ros.planning.success`), not from a simulator.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Sequence

from wam_ros.planning.domain import Domain, Scene, State, Step


class Status(enum.IntEnum):
    """Subtask status; the values are those of wam_ros_interfaces/msg/Subtask STATUS_*."""

    PENDING = 0
    ACTIVE = 1
    SUCCEEDED = 2
    FAILED = 3
    SKIPPED = 4


class Action(enum.Enum):
    CONTINUE = "continue"  # keep executing the active subtask
    NEXT = "next"  # the active subtask is done; a new one is active
    DONE = "done"  # the task is complete
    REPLAN = "replan"  # plan again from the current state
    FAIL = "fail"  # out of time or retries


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""


@dataclass(frozen=True)
class Interruption:
    """The bridge left the AUTONOMY the planner was granted, and the planner did not ask for it."""

    mode: str  # the bridge's mode now, e.g. "HOLD", "TELEOP"
    requester: str  # who put it there (SafetyStatus.mode_requester)
    reason: str

    def __str__(self) -> str:
        return f"stopped by {self.requester or 'an unnamed requester'}: {self.mode}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class ExecutionConfig:
    subtask_timeout_s: float = 60.0
    task_timeout_s: float = 300.0
    max_replans: int = 2
    progress_done_threshold: float = 0.9
    progress_confirmations: int = 2
    stuck_window_s: float = 0.0  # > 0: replan when the progress estimate moved less than stuck_progress_delta over this long
    stuck_progress_delta: float = 0.05


def state_from_task_status(domain: Domain, scene: Scene, subtask_instructions: Sequence[str], subtasks_done: int) -> State:
    """Symbolic state from a task monitor's report: the effects of its finished subtasks.

    Only finished subtasks are read; an instruction outside the skill vocabulary is ignored.
    """
    steps = []
    for text in list(subtask_instructions)[: max(0, subtasks_done)]:
        step = domain.step_from_instruction(text, scene)
        if step is not None:
            steps.append(step)
    return domain.state_from_steps_done(steps)


@dataclass
class PlanExecution:
    """One plan being executed; replace it with :meth:`replace_plan` after replanning."""

    domain: Domain
    steps: tuple[Step, ...]
    config: ExecutionConfig
    now_s: float
    statuses: list[Status] = field(default_factory=list)
    index: int = 0
    replans: int = 0
    subtask_started_s: float = 0.0
    task_started_s: float = 0.0
    progress: float = 0.0
    completed_before: int = 0  # subtasks completed under earlier plans of this task
    achieved: set = field(default_factory=set)  # positive effects of the subtasks completed so far (this task)
    completed_steps: list = field(default_factory=list)  # the steps completed so far, across plans
    _progress_hits: int = 0
    _progress_log: list = field(default_factory=list)  # (time, progress) of the active subtask

    def __post_init__(self) -> None:
        self.task_started_s = self.now_s
        self._start_plan(self.steps, self.now_s)

    def _start_plan(self, steps: tuple[Step, ...], now_s: float) -> None:
        self.steps = steps
        self.statuses = [Status.PENDING] * len(steps)
        self.index = 0
        self._activate(now_s)

    def _activate(self, now_s: float) -> None:
        self.subtask_started_s = now_s
        self.progress = 0.0
        self._progress_hits = 0
        self._progress_log = []
        if self.index < len(self.steps):
            self.statuses[self.index] = Status.ACTIVE

    @property
    def current(self) -> Step | None:
        return self.steps[self.index] if self.index < len(self.steps) else None

    @property
    def completed(self) -> int:
        """Subtasks of this task completed so far, under this plan and earlier ones."""
        return self.completed_before + sum(status in (Status.SUCCEEDED, Status.SKIPPED) for status in self.statuses)

    def replace_plan(self, steps: tuple[Step, ...], now_s: float) -> None:
        """A new plan from the current state (counts as a replan)."""
        self.replans += 1
        self.completed_before = self.completed
        self._start_plan(steps, now_s)

    def can_replan(self) -> bool:
        return self.replans < self.config.max_replans

    def holds(self, step: Step, state: State) -> bool:
        """Every positive effect of ``step`` is true in ``state``."""
        return all(fact in state for fact in self.effects(step))

    def effects(self, step: Step) -> tuple:
        skill = self.domain.skills[step.skill]
        return tuple(t.ground(step.arguments) for t in skill.effects if not t.negated)

    def _complete(self, index: int, status: Status) -> None:
        self.statuses[index] = status
        self.achieved.update(self.effects(self.steps[index]))
        self.completed_steps.append(self.steps[index])

    def update(
        self,
        now_s: float,
        state: State | None = None,
        success: bool | None = None,
        progress: float | None = None,
        interruption: Interruption | None = None,
    ) -> Decision:
        """Advance with what is known at ``now_s``; ``None`` means unknown (or, for ``interruption``, none)."""
        if success:
            for i in range(self.index, len(self.steps)):
                self.statuses[i] = Status.SUCCEEDED
            self.index = len(self.steps)
            return Decision(Action.DONE, "the task monitor reports success")
        if now_s - self.task_started_s > self.config.task_timeout_s:
            return self._fail_current(f"task timed out after {self.config.task_timeout_s:g} s", allow_replan=False)
        current = self.current
        if current is None:
            return Decision(Action.DONE, "every subtask finished")
        if interruption is not None:  # the operator (or the bridge itself) wins: no replan, no resume
            return self._fail_current(str(interruption), allow_replan=False)
        if state is not None:
            lost = sorted(fact for fact in self.achieved if fact not in state)
            if lost:  # undone behind the plan's back (knocked over, taken away): plan again from what is seen
                self.achieved.difference_update(lost)
                return self._fail_current(f"{', '.join(_fact_text(f) for f in lost)} no longer holds", allow_replan=True)
        if progress is not None:
            self.progress = max(0.0, min(1.0, float(progress)))
            self._progress_hits = self._progress_hits + 1 if self.progress >= self.config.progress_done_threshold else 0
            self._progress_log.append((now_s, self.progress))
        done_by_state = state is not None and self.holds(current, state)
        done_by_progress = state is None and self._progress_hits >= self.config.progress_confirmations
        if done_by_state or done_by_progress:
            self._complete(self.index, Status.SUCCEEDED)
            self.index += 1
            # Later subtasks that already hold (done early or by accident) need no execution.
            while state is not None and self.current is not None and self.holds(self.current, state):
                self._complete(self.index, Status.SKIPPED)
                self.index += 1
            self._activate(now_s)
            if self.current is None:
                return Decision(Action.DONE, "every subtask finished")
            how = "its effects hold" if done_by_state else f"progress >= {self.config.progress_done_threshold:g}"
            return Decision(Action.NEXT, f"subtask {self.index - 1} done ({how})")
        if now_s - self.subtask_started_s > self.config.subtask_timeout_s:
            return self._fail_current(f"subtask {self.index} ({current}) timed out after {self.config.subtask_timeout_s:g} s", allow_replan=True)
        stuck = self._stuck(now_s)
        if stuck:
            return self._fail_current(f"subtask {self.index} ({current}) is stuck: {stuck}", allow_replan=True)
        return Decision(Action.CONTINUE)

    def _stuck(self, now_s: float) -> str:
        """Why the active subtask looks stuck (its progress estimate has not moved for the window), or ''."""
        window = self.config.stuck_window_s
        if window <= 0 or now_s - self.subtask_started_s < window:
            return ""
        recent = [p for t, p in self._progress_log if t >= now_s - window]
        if len(recent) < 3:
            return ""
        if max(recent) - min(recent) < self.config.stuck_progress_delta and max(recent) < self.config.progress_done_threshold:
            return f"progress {min(recent):.2f}-{max(recent):.2f} for {window:g} s"
        return ""

    def _fail_current(self, reason: str, allow_replan: bool) -> Decision:
        """The active subtask failed (or the task must stop): replan if allowed and any are left."""
        if self.index < len(self.steps):
            self.statuses[self.index] = Status.FAILED
        if allow_replan and self.can_replan():
            return Decision(Action.REPLAN, reason)
        if allow_replan:
            reason += f"; no replans left ({self.replans} of {self.config.max_replans} used)"
        return Decision(Action.FAIL, reason)


def _fact_text(fact: tuple) -> str:
    return f"{fact[0]}({', '.join(fact[1:])})"
