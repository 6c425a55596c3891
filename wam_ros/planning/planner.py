"""Instruction + scene + current state -> a validated plan of subtasks (ROS-free).

1. Ground the instruction's goal in the scene (:meth:`Domain.ground_goal`).
2. Ask the world model (``imagine``) how each step that could start now would progress from
   the live observation; without a symbolic state, steps it already sees finished count as done.
3. Let the language model propose decompositions (:mod:`wam_ros.planning.proposer`).
4. Search (:mod:`wam_ros.planning.mcts`) with the model's likelihoods as priors and
   :class:`PlanEvaluator` values; return the plan with its scores and the proposal counts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

from wam_ros.planning.domain import Domain, Goal, Scene, State, Step, format_fact
from wam_ros.planning.proposals import ProposalStats
from wam_ros.planning.language_model import LanguageModel
from wam_ros.planning.mcts import ProposalSource, SearchConfig, SearchResult, TreeSearch
from wam_ros.planning.proposer import LanguageModelProposals, ProposalConfig
from wam_ros.planning.value import ImagineFn, PlanEvaluator, ValueWeights


STOP_REASONS = {
    "iterations": "iteration budget used",
    "time": "time budget used",
    "solved": "tree fully explored",
    "optimal": "upper bound reached",
    "canceled": "canceled",
}


@dataclass(frozen=True)
class PlannerConfig:
    search: SearchConfig = SearchConfig()
    proposals: ProposalConfig = ProposalConfig()
    weights: ValueWeights = ValueWeights()
    imagined_done_progress: float = 0.9  # without a symbolic state: imagined progress that counts as done


@dataclass(frozen=True)
class Plan:
    """A plan for one instruction from one state, with what the planner knew and how it searched."""

    instruction: str
    steps: tuple[Step, ...]
    instructions: tuple[str, ...]  # language instruction per step, for the world action model
    value: float  # planner value estimate of the whole plan [0, 1]
    step_scores: tuple[float, ...]  # imagined progress of each step when known, else the plan value
    goal: Goal
    goal_reached: bool  # by the symbolic model, after the plan
    message: str
    planning_time_s: float
    proposal_stats: ProposalStats = field(default_factory=ProposalStats)
    search: SearchResult | None = None
    imagined: dict[str, float | None] = field(default_factory=dict)  # step instruction -> imagined progress (None: no answer)

    @property
    def ok(self) -> bool:
        return self.goal_reached


class TaskPlanner:
    """Plans with a language model (proposals, priors), the symbolic model and imagination."""

    def __init__(
        self,
        domain: Domain,
        model: LanguageModel,
        config: PlannerConfig = PlannerConfig(),
        imagine: ImagineFn | None = None,
    ) -> None:
        self.domain = domain
        self.model = model
        self.config = config
        self.imagine = imagine

    def proposals(self, instruction: str, scene: Scene, max_time_s: float | None = None) -> ProposalSource:
        return LanguageModelProposals(self.model, self.domain, instruction, scene, self.config.proposals, max_time_s)

    def plan(
        self,
        instruction: str,
        scene: Scene,
        state: State | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Plan:
        """Plan ``instruction`` from ``state`` (None: unknown, then imagination decides what is done)."""
        started = time.perf_counter()
        goal = self.domain.ground_goal(instruction, scene)
        if not goal:
            names = ", ".join(scene.names) or "none"
            return self._finish(instruction, (), 0.0, goal, False, f"the instruction names no goal among the scene's objects ({names})", started)
        initial: State = state if state is not None else frozenset()
        imagined = self._imagine_first_steps(scene, initial)
        imagined_in = initial
        if state is None and imagined is not None:
            for step, progress in imagined.items():
                if progress is not None and progress >= self.config.imagined_done_progress:
                    initial = self.domain.apply(initial, step).state
        evaluator = PlanEvaluator(self.domain, goal, initial, imagined, self.config.weights)
        if not evaluator.remaining_goal(initial):
            return self._finish(instruction, (), 1.0, goal, True, "goal already reached", started, evaluator=evaluator, imagined_in=imagined_in)
        # The time budget covers the whole call: at most half of it for sampling proposals.
        budget_s = self.config.search.time_budget_s
        source = self.proposals(instruction, scene, max_time_s=0.5 * budget_s)
        remaining_s = max(0.0, budget_s - (time.perf_counter() - started))
        search_config = replace(self.config.search, time_budget_s=remaining_s)
        search = TreeSearch(self.domain, scene, evaluator, source, search_config).run(should_stop)
        stats = getattr(source, "stats", ProposalStats())
        score = evaluator.score(search.steps)
        reached = not evaluator.remaining_goal(score.final_state)
        missing = ", ".join(format_fact(f) for f in evaluator.remaining_goal(score.final_state))
        message = (
            f"{len(search.steps)} step(s), value {search.value:.2f}, {search.iterations} iterations, {STOP_REASONS[search.stopped]}"
            if reached
            else f"no plan reaches the goal within the budget; missing {missing}"
        )
        if search.stopped == "canceled":
            message = "planning canceled"
        return self._finish(instruction, search.steps, search.value, goal, reached, message, started, stats, search, evaluator, imagined_in)

    def _imagine_first_steps(self, scene: Scene, state: State) -> dict[Step, float | None] | None:
        """Imagined progress of every step that would change ``state`` (one Imagine call each).

        After a call without an answer the rest are not asked (each could wait for its timeout).
        """
        if self.imagine is None:
            return None
        imagined: dict[Step, float | None] = {}
        answering = True
        for step in self.domain.grounded_steps(scene):
            outcome = self.domain.apply(state, step)
            if outcome.applicable and outcome.useful:
                imagined[step] = self.imagine(self.domain.instruction(step, state)) if answering else None
                answering = imagined[step] is not None
        return imagined

    def _finish(
        self,
        instruction: str,
        steps: tuple[Step, ...],
        value: float,
        goal: Goal,
        reached: bool,
        message: str,
        started: float,
        stats: ProposalStats | None = None,
        search: SearchResult | None = None,
        evaluator: PlanEvaluator | None = None,
        imagined_in: State = frozenset(),
    ) -> Plan:
        imagined = evaluator.imagined_progress if evaluator is not None and evaluator.imagined_progress else {}
        scores = tuple(float(imagined[step]) if imagined.get(step) is not None else value for step in steps)
        return Plan(
            instruction=instruction,
            steps=steps,
            instructions=self.domain.instructions(steps, evaluator.initial_state if evaluator is not None else frozenset()),
            value=value,
            step_scores=scores,
            goal=goal,
            goal_reached=reached,
            message=message,
            planning_time_s=time.perf_counter() - started,
            proposal_stats=stats or ProposalStats(),
            search=search,
            imagined={self.domain.instruction(step, imagined_in): progress for step, progress in imagined.items()},
        )
