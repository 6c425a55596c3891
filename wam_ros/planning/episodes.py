"""Planner episodes in-process: the task planner's loop on the MuJoCo sim, without a ROS graph.

For benchmarks and tests. It mirrors the node (wam_ros/nodes/task_planner_node.py): plan
(:class:`TaskPlanner`, imagination from the WAM on the current observation), execute each
subtask with the WAM's policy (``execute_steps`` actions per chunk), read the scene detector every
``detector_every_steps`` control steps into a :class:`FactBelief`, and let
:class:`PlanExecution` decide (next, replan, done, fail). **The planner reads only what a robot
has**: camera frames and joint states. The sim's task status and object poses are read by the
judge (success, the order the cubes entered the bin) and by the test harness's perturbations and
corrections (when to act), never by the planner (``EpisodeOutcome.ground_truth_used`` is False).

Differences from the graph: no DDS and no real time: chunks are computed while the sim waits,
and planning stops the sim clock (in the graph the arm holds or keeps at its subtask meanwhile).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from wam_ros.planning.domain import Domain, Scene
from wam_ros.planning.execution import Action, ExecutionConfig, PlanExecution
from wam_ros.planning.planner import Plan, TaskPlanner
from wam_ros.planning.proposer import RunningTask
from wam_ros.planning.success import BeliefConfig, FactBelief, SceneDetector, relation_words


@dataclass(frozen=True)
class Perturbation:
    """The harness knocks a cube out of the bin (onto a free spot of the table) ``delay_steps``
    control steps after the sim shows ``after_cubes`` cubes in the bin."""

    after_cubes: int = 1
    delay_steps: int = 15


@dataclass(frozen=True)
class Correction:
    """The operator's new instruction, sent when the planner has completed ``after_subtasks``."""

    instruction: str
    after_subtasks: int = 1


@dataclass
class EpisodeOutcome:
    seed: int
    instruction: str
    success: bool = False  # by the judge
    plan_ok: bool = False  # the planner accepted the instruction
    message: str = ""
    entered: list[str] = field(default_factory=list)  # cubes in the order they entered the bin (the last entry counts)
    in_bin: set[str] = field(default_factory=set)
    plans: list[tuple[str, ...]] = field(default_factory=list)
    goal_from: list[str] = field(default_factory=list)
    replans: int = 0
    planning_s: list[float] = field(default_factory=list)
    steps: int = 0
    perturbed: str = ""  # which cube was knocked out
    corrected: bool = False
    done_before_correction: tuple[str, ...] = ()
    sim_subtasks_done: int = 0
    ground_truth_used: bool = False


def cubes_in_bin(env: Any) -> set[str]:
    """The judge's view: which cubes the sim's predicate puts in the bin."""
    state = env.scene_state()
    return {cube for cube in state.cube_positions if env.task.in_bin(state, cube)}


def knock_out(env: Any, cube: str, rng: np.random.Generator) -> None:
    """Put ``cube`` back on the table at a free spot of the cube region (a perturbation)."""
    config = env.config
    state = env.scene_state()
    others = [p[:2] for name, p in state.cube_positions.items() if name != cube]
    low, high = np.asarray(config.cube_region_min_xy_m), np.asarray(config.cube_region_max_xy_m)
    for _ in range(1000):
        xy = rng.uniform(low, high)
        if all(np.linalg.norm(xy - o) > 0.09 for o in others) and np.linalg.norm(xy - state.tcp_position[:2]) > 0.12:
            break
    env.set_object_pose(cube, np.array([xy[0], xy[1], config.cube_size_m / 2]))


class PlannerEpisodes:
    """Runs planner + WAM episodes on one in-process sim (see the module docstring)."""

    def __init__(
        self,
        env: Any,
        runtime: Any,
        planner: TaskPlanner,
        detector: SceneDetector | None,
        execution: ExecutionConfig = ExecutionConfig(subtask_timeout_s=60.0, task_timeout_s=150.0, max_replans=3),
        belief: BeliefConfig = BeliefConfig(),
        detector_every_steps: int = 5,
        imagine: bool = True,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.env, self.runtime, self.planner, self.detector = env, runtime, planner, detector
        self.domain: Domain = planner.domain
        self.execution_config = execution
        self.belief_config = belief
        self.detector_every = detector_every_steps
        self.use_imagination = imagine
        self.log = log
        self.max_steps = int(round(execution.task_timeout_s / env.config.control_period_s))

    # -- observation ------------------------------------------------------------------------------
    def _frame(self, observation: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        cameras = set(self.runtime.config.cameras) | (set(self.detector.config.cameras) if self.detector else set())
        return {c: observation.images[c] for c in cameras}, observation.state.copy()

    def _model_input(self, frame: tuple[dict[str, np.ndarray], np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        images, state = frame
        return {c: images[c][None] for c in self.runtime.config.cameras}, state[None]

    def _read_scene(self, belief: FactBelief | None, frame, positions: dict) -> None:
        if self.detector is None or belief is None:
            return
        estimate = self.detector.predict({c: frame[0][c] for c in self.detector.config.cameras})
        belief.update(estimate.facts)
        positions.clear()
        positions.update(estimate.positions)

    # -- one episode ---------------------------------------------------------------------------------
    def run(self, task: str, seed: int, instruction: str, judge: Callable[[EpisodeOutcome], bool] | None = None,
            perturbation: Perturbation | None = None, correction: Correction | None = None) -> EpisodeOutcome:
        env, runtime = self.env, self.runtime
        outcome = EpisodeOutcome(seed=seed, instruction=instruction)
        observation = env.reset(task, seed)
        rng = np.random.default_rng([seed, 77])
        frame = self._frame(observation)
        scene: Scene = self.domain.scene()
        belief = FactBelief(self.detector.facts, self.belief_config) if self.detector is not None else None
        positions: dict[str, tuple[float, float]] = {}
        for _ in range(self.belief_config.confirmations + 1):  # the arm is at rest: the same frame, read like the node reads it
            self._read_scene(belief, frame, positions)
        in_bin = cubes_in_bin(env)
        perturb_at: int | None = None
        goal_text, goal_running = instruction, None  # what a replan plans: the correction, read against what it corrected

        def state_now():
            return belief.state if belief is not None else None

        def plan(text: str, running: RunningTask | None = None) -> Plan:
            images, state = self._model_input(frame)
            imagine = (lambda instr: runtime.imagine(images, state, instr)[1]) if self.use_imagination else None
            self.planner.imagine = imagine
            started = time.perf_counter()
            result = self.planner.plan(text, scene, state_now(), words=relation_words(positions, scene, self.domain), running=running)
            outcome.planning_s.append(time.perf_counter() - started)
            outcome.plans.append(tuple(str(s) for s in result.steps))
            outcome.goal_from.append(result.goal_from)
            self.log(f"seed {seed}: plan {list(outcome.plans[-1])} ({result.goal_from}; {result.message})")
            return result

        current = plan(instruction)
        outcome.plan_ok = current.ok
        if not current.ok:
            outcome.message = f"refused: {current.message}"
            return self._judged(outcome, judge)
        if not current.steps:
            outcome.message = current.message
            return self._judged(outcome, judge)
        execution = PlanExecution(self.domain, current.steps, self.execution_config, env.time_s)
        subtask_text = current.instructions[0]
        step = 0
        finished = False
        while step < self.max_steps and not finished:
            images, state = self._model_input(frame)
            chunk = runtime.policy(images, state, subtask_text)
            restart = False
            for action in chunk[: runtime.config.execute_steps]:
                observation = env.step(action)
                step += 1
                frame = self._frame(observation)
                now_in = cubes_in_bin(env)
                for cube in sorted(now_in - in_bin):
                    if cube in outcome.entered:
                        outcome.entered.remove(cube)
                    outcome.entered.append(cube)
                in_bin = now_in
                # The harness's perturbation, timed by the sim (the planner is not told).
                if perturbation is not None and not outcome.perturbed:
                    if perturb_at is None and len(in_bin) >= perturbation.after_cubes:
                        perturb_at = step + perturbation.delay_steps
                    if perturb_at is not None and step >= perturb_at and in_bin:
                        victim = outcome.entered[0] if outcome.entered and outcome.entered[0] in in_bin else sorted(in_bin)[0]
                        knock_out(env, victim, rng)
                        outcome.perturbed = victim
                        self.log(f"seed {seed}: the harness knocked {victim} out of the bin at step {step}")
                        observation = env.observation()
                        frame = self._frame(observation)
                        in_bin = cubes_in_bin(env)
                if step % self.detector_every:
                    continue
                self._read_scene(belief, frame, positions)
                # The operator's correction, once the planner has completed enough subtasks.
                if correction is not None and not outcome.corrected and execution.completed >= correction.after_subtasks:
                    done = tuple(s for s in execution.completed_steps if execution.holds(s, frozenset(execution.achieved)))
                    running = RunningTask(instruction, done, tuple(execution.steps[execution.index:]))
                    goal_text, goal_running = correction.instruction, running
                    outcome.corrected = True
                    outcome.done_before_correction = tuple(s.arguments[0] for s in done)
                    current = plan(correction.instruction, running)
                    if not current.ok:
                        outcome.message = f"correction refused: {current.message}"
                        finished = True
                        break
                    if not current.steps:
                        outcome.message = current.message
                        finished = True
                        break
                    execution = PlanExecution(self.domain, current.steps, self.execution_config, env.time_s)
                    subtask_text = current.instructions[0]
                    restart = True
                    break
                decision = execution.update(env.time_s, state=state_now())
                if decision.action == Action.CONTINUE:
                    continue
                self.log(f"seed {seed} t={env.time_s:.1f}s: {decision.action.value}: {decision.reason}")
                if decision.action == Action.NEXT:
                    subtask_text = current.instructions[execution.index]
                    restart = True
                    break
                if decision.action in (Action.DONE, Action.FAIL):
                    outcome.message = decision.reason
                    finished = True
                    break
                if decision.action == Action.REPLAN:
                    outcome.replans += 1
                    current = plan(goal_text, goal_running)
                    if not current.ok or not current.steps:
                        outcome.message = f"replanning: {current.message}"
                        finished = not current.ok or not current.steps
                        break
                    execution.replace_plan(current.steps, env.time_s)
                    subtask_text = current.instructions[0]
                    restart = True
                    break
            if restart:
                continue
        outcome.steps = step
        if not outcome.message:
            outcome.message = f"out of time after {step} steps"
        return self._judged(outcome, judge)

    def _judged(self, outcome: EpisodeOutcome, judge: Callable[[EpisodeOutcome], bool] | None) -> EpisodeOutcome:
        status = self.env.task_status()
        outcome.in_bin = cubes_in_bin(self.env)
        outcome.sim_subtasks_done = int(status.subtasks_done)
        outcome.success = judge(outcome) if judge is not None else bool(status.success)
        return outcome


def whole_instruction_episode(env: Any, runtime: Any, task: str, seed: int, instruction: str, max_steps: int) -> tuple[bool, int]:
    """The baseline: the WAM alone, conditioned on the whole instruction; the sim's success and subtasks done."""
    observation = env.reset(task, seed)
    step = 0
    while step < max_steps:
        images = {c: observation.images[c][None] for c in runtime.config.cameras}
        chunk = runtime.policy(images, observation.state[None], instruction)
        for action in chunk[: runtime.config.execute_steps]:
            observation = env.step(action)
            step += 1
            if env.task_status().success or step >= max_steps:
                status = env.task_status()
                return bool(status.success), int(status.subtasks_done)
    status = env.task_status()
    return bool(status.success), int(status.subtasks_done)

