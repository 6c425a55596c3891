"""Instruction + scene + current state -> a validated plan of subtasks (ROS-free).

1. Ground the instruction's goal in the scene (:meth:`Domain.ground_goal`), unless the rules
   cannot resolve it (:meth:`Domain.rules_cannot_resolve`: exclusions, references by position,
   quantifiers over unnamed objects, or a correction of a running task): then the language model
   decides what the instruction asks (``goal_source``).
2. Ask the world model (``imagine``) how each step that could start now would progress from
   the live observation; without a symbolic state, steps it already sees finished count as done.
3. Let the language model propose decompositions (:mod:`wam_ros.planning.proposer`).
4. Search (:mod:`wam_ros.planning.mcts`) with the model's likelihoods as priors and
   :class:`PlanEvaluator` values (a rule-grounded goal), or :class:`LikelihoodEvaluator` values
   (the language model's probability of the plan: constrained decoding by search); return the
   plan with its scores and the proposal counts.

``goal_source``: ``rules`` (the rule grounder only: an instruction it cannot ground is
refused), ``auto`` (rules where they can, the language model otherwise) or ``language_model``.
``language_model_mode``: ``search`` (likelihood values and priors) or ``vote`` (the sampled
proposals vote the goal, the search has uniform priors: the language model as a generator only).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

from collections import Counter
from typing import Mapping, Sequence

from wam_ros.planning.domain import Domain, Goal, Scene, State, Step, format_fact
from wam_ros.planning.proposals import ProposalStats
from wam_ros.planning.language_model import LanguageModel
from wam_ros.planning.mcts import ProposalSource, SearchConfig, SearchResult, TreeSearch
from wam_ros.planning.proposer import LanguageModelProposals, ProposalConfig, RunningTask
from wam_ros.planning.value import ImagineFn, ImaginePlanFn, LikelihoodEvaluator, PlanEvaluator, ValueWeights

GOAL_SOURCES = ("rules", "auto", "language_model")
LANGUAGE_MODEL_MODES = ("search", "vote")


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
    goal_source: str = "auto"  # rules | auto | language_model (module docstring)
    language_model_mode: str = "search"  # search | vote
    min_plan_probability: float = 0.05  # a language-model plan less likely than this is refused, not guessed

    def __post_init__(self) -> None:
        if self.goal_source not in GOAL_SOURCES:
            raise ValueError(f"goal_source must be one of {', '.join(GOAL_SOURCES)}, got {self.goal_source!r}")
        if self.language_model_mode not in LANGUAGE_MODEL_MODES:
            raise ValueError(f"language_model_mode must be one of {', '.join(LANGUAGE_MODEL_MODES)}, got {self.language_model_mode!r}")


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
    goal_from: str = "rules"  # rules, or language model (search / vote)
    route_reason: str = ""  # why the rules were not used

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
        imagine_plan: ImaginePlanFn | None = None,
    ) -> None:
        self.domain = domain
        self.model = model
        self.config = config
        self.imagine = imagine
        self.imagine_plan = imagine_plan  # world-model rollouts of plan prefixes (imagination.py); values use them when set

    def proposals(self, instruction: str, scene: Scene, max_time_s: float | None = None, words: Mapping[str, Sequence[str]] | None = None,
                  running: RunningTask | None = None) -> ProposalSource:
        return LanguageModelProposals(self.model, self.domain, instruction, scene, self.config.proposals, max_time_s, words, running)

    def route(self, instruction: str, scene: Scene, running: RunningTask | None = None) -> tuple[Goal, str]:
        """The rules' goal, and why the language model decides instead (empty: the rules do)."""
        goal = self.domain.ground_goal(instruction, scene)
        if self.config.goal_source == "rules":
            return goal, ""
        if self.config.goal_source == "language_model":
            return goal, "goal_source is language_model"
        if running is not None:
            return goal, "a correction of the running task"
        return goal, self.domain.rules_cannot_resolve(instruction, scene, goal)

    def plan(
        self,
        instruction: str,
        scene: Scene,
        state: State | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        words: Mapping[str, Sequence[str]] | None = None,
        running: RunningTask | None = None,
    ) -> Plan:
        """Plan ``instruction`` from ``state`` (None: unknown, then imagination decides what is done).

        ``words``: the scene monitor's description of each object ("nearest to the bin"), for the
        language model; ``running``: the task this instruction corrects."""
        started = time.perf_counter()
        goal, reason = self.route(instruction, scene, running)
        if reason:
            return self._plan_with_language_model(instruction, scene, state, should_stop, words, running, reason, started)
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
        evaluator = PlanEvaluator(self.domain, goal, initial, imagined, self.config.weights, self.imagine_plan)
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

    def _plan_with_language_model(self, instruction: str, scene: Scene, state: State | None, should_stop: Callable[[], bool],
                                  words: Mapping[str, Sequence[str]] | None, running: RunningTask | None, reason: str,
                                  started: float) -> Plan:
        """The goal is what the language model reads in the instruction (see the module docstring)."""
        initial: State = state if state is not None else frozenset()
        imagined = self._imagine_first_steps(scene, initial)
        imagined_in = initial
        budget_s = self.config.search.time_budget_s
        mode = self.config.language_model_mode
        # search: the likelihoods decide and every allowed step is enumerated, so no samples are drawn;
        # vote: the samples are all the language model gives.
        proposal_config = self.config.proposals if mode == "vote" else replace(self.config.proposals, samples=0)
        source = LanguageModelProposals(self.model, self.domain, instruction, scene, proposal_config, 0.5 * budget_s, words, running)
        stats = source.stats
        remaining_s = max(0.0, budget_s - (time.perf_counter() - started))
        if mode == "vote":
            goal_plan = self._vote(source)
            if goal_plan is None:
                return self._finish(instruction, (), 0.0, Goal(), False, f"no valid proposal from the language model ({reason})", started, stats,
                                    goal_from="language model (vote)", route_reason=reason)
            goal = self._goal_of(goal_plan, initial)
            evaluator = PlanEvaluator(self.domain, goal, initial, imagined, self.config.weights, self.imagine_plan)
            if not evaluator.remaining_goal(initial):
                return self._finish(instruction, (), 1.0, goal, True, "goal already reached", started, stats, evaluator=evaluator,
                                    imagined_in=imagined_in, goal_from="language model (vote)", route_reason=reason)
            config = replace(self.config.search, time_budget_s=remaining_s, model_priors=False)
            search = TreeSearch(self.domain, scene, evaluator, source, config).run(should_stop)
            score = evaluator.score(search.steps)
            reached = not evaluator.remaining_goal(score.final_state)
            message = f"{len(search.steps)} step(s) toward the voted goal, {search.iterations} iterations, {STOP_REASONS[search.stopped]}"
            return self._finish(instruction, search.steps, search.value, goal, reached, message, started, stats, search, evaluator,
                                imagined_in, goal_from="language model (vote)", route_reason=reason)
        grounded = self.domain.grounded_steps(scene)

        def alternatives(prefix: tuple[Step, ...]) -> list[Step | None]:
            state_now = _apply_all(self.domain, initial, prefix)
            return [s for s in grounded if s not in prefix and (o := self.domain.apply(state_now, s)).applicable and o.useful] + [None]

        evaluator = LikelihoodEvaluator(self.domain, initial, lambda steps: source.plan_log_likelihood(steps, alternatives), imagined,
                                        self.config.weights, self.imagine_plan)
        config = replace(self.config.search, time_budget_s=remaining_s, stop_at_optimum=False)
        search = TreeSearch(self.domain, scene, evaluator, source, config).run(should_stop)
        goal = self._goal_of(search.steps, initial)
        probability = evaluator.score(search.steps).goal_fraction
        message = (f"{len(search.steps)} step(s), plan probability {probability:.2f} under the language model, "
                   f"{search.iterations} iterations, {STOP_REASONS[search.stopped]}")
        ok = search.stopped != "canceled"
        if not ok:
            message = "planning canceled"
        elif probability < self.config.min_plan_probability or (not search.steps and running is None):
            names = ", ".join(scene.names) or "none"
            why = ("its likeliest plan, " + f"{[str(s) for s in search.steps]}, has probability {probability:.3f} < {self.config.min_plan_probability:g}"
                   if search.steps else "it reads no step in it")
            ok, message = False, (f"the instruction names no goal among the scene's objects ({names}) that the rules or the language model "
                                  f"can read: the rules cannot ({reason}); the language model is not confident: {why}")
        return self._finish(instruction, search.steps if ok else (), search.value, goal, ok, message, started, stats, search,
                            evaluator, imagined_in, goal_from="language model (search)", route_reason=reason)

    @staticmethod
    def _vote(source: LanguageModelProposals) -> tuple[Step, ...] | None:
        """The valid sampled plan proposed most often (the first sampled among equals)."""
        from wam_ros.planning.proposals import parse_plan

        counts: Counter = Counter()
        for sample in source.samples:
            text = sample.text if sample.finished or "\n" not in sample.text else sample.text.rsplit("\n", 1)[0]
            parsed = parse_plan(text, source.domain, source.scene)
            if parsed.valid and parsed.steps:
                counts[parsed.steps] += 1
        if not counts:
            return None
        top = max(counts.values())
        return next(plan for plan in counts if counts[plan] == top)

    def _goal_of(self, steps: Sequence[Step], initial: State) -> Goal:
        """The positive effects of ``steps`` (in order) that do not hold in ``initial``: what the plan is for."""
        facts: list = []
        for step in steps:
            for template in self.domain.skills[step.skill].effects:
                fact = template.ground(step.arguments)
                if not template.negated and fact not in initial and fact not in facts:
                    facts.append(fact)
        return Goal(tuple(facts), ordered=len(facts) > 1)

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
        evaluator: PlanEvaluator | LikelihoodEvaluator | None = None,
        imagined_in: State = frozenset(),
        goal_from: str = "rules",
        route_reason: str = "",
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
            goal_from=goal_from,
            route_reason=route_reason,
        )


def _apply_all(domain: Domain, state: State, steps: Sequence[Step]) -> State:
    for step in steps:
        state = domain.apply(state, step).state
    return state
