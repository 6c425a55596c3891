"""How good a plan is: symbolic goal progress plus the world model's imagination, minus cost.

``value(plan) = (w_goal * goal_fraction + w_imagine * imagined - w_step * steps - w_wasted * wasted) / norm``

- ``goal_fraction``: share of the instruction's goal facts true after the plan, by the skill
  vocabulary's symbolic model, from the current symbolic state; for an ordered goal ("in that
  order") only the leading goal facts that became true in the order named count;
- ``imagined``: progress the world model predicts (``Imagine``, video prediction from the
  live observation) for the plan's first useful step: the only step whose start is observed now;
  or, with ``imagine_plan`` (:mod:`wam_ros.planning.imagination`), the mean imagined success of
  the plan's useful steps, each rolled forward by the world model from where the previous one
  left the imagined scene;
- ``wasted``: steps whose preconditions fail or that change nothing;
- ``norm`` = ``w_goal + w_imagine`` (``w_goal`` alone without imagination), so values lie in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from wam_ros.planning.domain import Domain, Fact, Goal, State, Step

#: instruction -> progress in [0, 1], or None when the world model could not answer.
ImagineFn = Callable[[str], "float | None"]
#: the instructions of a plan, in order -> imagined success of each (None: not imagined).
ImaginePlanFn = Callable[[tuple[str, ...]], "list[float | None]"]


def _imagined_plan_term(domain: Domain, initial: State, steps: Sequence[Step], imagine_plan: ImaginePlanFn) -> float | None:
    """Mean imagined success of the useful steps of ``steps`` (each worded for the state it starts in)."""
    state, texts = initial, []
    for step in steps:
        outcome = domain.apply(state, step)
        if outcome.applicable and outcome.useful:
            texts.append(domain.instruction(step, state))
        state = outcome.state
    if not texts:
        return None
    values = [0.5 if v is None else float(v) for v in imagine_plan(tuple(texts))]
    return sum(values) / len(values)


@dataclass(frozen=True)
class ValueWeights:
    goal: float = 1.0
    imagination: float = 0.25
    step_cost: float = 0.02
    wasted_step_cost: float = 0.1


@dataclass(frozen=True)
class PlanScore:
    value: float
    goal_fraction: float
    wasted_steps: int
    imagined_progress: float | None
    final_state: State


class _PlanValue:
    """What both evaluators share: walking a plan through the symbolic model and its imagination term."""

    def __init__(self, domain: Domain, initial_state: State, imagined_progress: Mapping[Step, float | None] | None,
                 weights: ValueWeights, imagine_plan: ImaginePlanFn | None) -> None:
        self.domain = domain
        self.initial_state = initial_state
        self.imagined_progress = dict(imagined_progress) if imagined_progress is not None else None
        self.weights = weights
        self.imagine_plan = imagine_plan

    def _walk(self, steps: Sequence[Step]) -> tuple[list[State], int, Step | None]:
        """The state after each of ``steps`` from the initial state, how many steps were wasted
        (not applicable or changing nothing) and the first useful step (None: none)."""
        state, states, wasted, first_useful = self.initial_state, [], 0, None
        for step in steps:
            outcome = self.domain.apply(state, step)
            if not (outcome.applicable and outcome.useful):
                wasted += 1
            elif first_useful is None:
                first_useful = step
            state = outcome.state
            states.append(state)
        return states, wasted, first_useful

    def _imagination(self, steps: Sequence[Step], first_useful: Step | None,
                     no_useful_step: float | None) -> tuple[float, float | None]:
        """The imagination term's weight in the value (0: no imagination) and the imagined success of
        ``steps`` (None: not imagined): the whole plan's with ``imagine_plan``, else the first useful
        step's imagined progress (unknown: neutral 0.5; ``no_useful_step`` when there is none)."""
        if self.imagine_plan is not None:
            return self.weights.imagination, _imagined_plan_term(self.domain, self.initial_state, steps, self.imagine_plan)
        if self.imagined_progress is None:
            return 0.0, None
        if first_useful is None:
            return self.weights.imagination, no_useful_step
        known = self.imagined_progress.get(first_useful)
        return self.weights.imagination, 0.5 if known is None else float(known)

    def score(self, steps: Sequence[Step]) -> PlanScore:
        raise NotImplementedError

    def __call__(self, steps: Sequence[Step]) -> float:
        return self.score(steps).value


def _clipped(raw: float, norm: float) -> float:
    return min(1.0, max(0.0, raw / norm)) if norm > 0 else 0.0


class PlanEvaluator(_PlanValue):
    """Scores complete plans from one starting state; deterministic, so search results repeat."""

    goal_directed = True

    def __init__(
        self,
        domain: Domain,
        goal: Goal,
        initial_state: State,
        imagined_progress: Mapping[Step, float | None] | None = None,
        weights: ValueWeights = ValueWeights(),
        imagine_plan: ImaginePlanFn | None = None,
    ) -> None:
        super().__init__(domain, initial_state, imagined_progress, weights, imagine_plan)
        self.goal = goal

    def remaining_goal(self, state: State) -> tuple[Fact, ...]:
        return tuple(fact for fact in self.goal.facts if fact not in state)

    def score(self, steps: Sequence[Step]) -> PlanScore:
        w = self.weights
        states, wasted, first_useful = self._walk(steps)
        achieved_at = {fact: 0 for fact in self.goal.facts if fact in self.initial_state}  # fact -> step count when it became true
        for index, state in enumerate(states, start=1):
            for fact in self.goal.facts:
                if fact in state:
                    achieved_at.setdefault(fact, index)
                else:
                    achieved_at.pop(fact, None)
        goal_fraction = self._goal_fraction(achieved_at)
        weight, imagined = self._imagination(steps, first_useful, no_useful_step=None)
        raw = w.goal * goal_fraction - w.step_cost * len(steps) - w.wasted_step_cost * wasted
        raw += weight * (0.0 if imagined is None else imagined)
        final = states[-1] if states else self.initial_state
        return PlanScore(_clipped(raw, w.goal + weight), goal_fraction, wasted, imagined, final)

    def upper_bound(self) -> float:
        """No plan from the initial state can score more: the whole goal with the fewest steps
        possible (each step achieves at most as many facts as the largest skill's effects) and
        the best imagined first step."""
        w = self.weights
        missing = len(self.remaining_goal(self.initial_state))
        per_step = max(sum(not t.negated for t in skill.effects) for skill in self.domain.skills.values())
        raw = (w.goal if self.goal else 0.0) - w.step_cost * math.ceil(missing / max(per_step, 1))
        norm = w.goal
        if self.imagine_plan is not None:
            norm += w.imagination
            raw += w.imagination  # imagined success is not known before it is imagined
        elif self.imagined_progress is not None:
            norm += w.imagination
            known = [0.5 if p is None else float(p) for p in self.imagined_progress.values()]
            raw += w.imagination * max(known, default=0.0)
        return _clipped(raw, norm)

    def _goal_fraction(self, achieved_at: Mapping[Fact, int]) -> float:
        facts = self.goal.facts
        if not facts:
            return 0.0
        if not self.goal.ordered:
            return len(achieved_at) / len(facts)
        leading, last = 0, -1
        for fact in facts:
            if fact not in achieved_at or achieved_at[fact] < last:
                break
            leading, last = leading + 1, achieved_at[fact]
        return leading / len(facts)


class LikelihoodEvaluator(_PlanValue):
    """Plan values when the instruction's goal comes from the language model, not the rules.

    ``value(plan) = (w_goal * P(plan) + w_imagine * imagined - w_wasted * wasted) / norm`` where
    ``P(plan)`` is the language model's probability of the plan's lines and its ``done`` line
    after the prompt (``plan_log_likelihood``): the search then looks for the most likely plan
    among those the skill vocabulary allows (constrained decoding by search), still weighed by
    the world model's imagination. Without a symbolic goal nothing is missing
    (``remaining_goal`` is empty) and no bound is known, so the search runs until the tree is
    explored or its budget is spent.
    """

    goal_directed = False

    def __init__(
        self,
        domain: Domain,
        initial_state: State,
        plan_log_likelihood: Callable[[Sequence[Step]], float],
        imagined_progress: Mapping[Step, float | None] | None = None,
        weights: ValueWeights = ValueWeights(),
        imagine_plan: ImaginePlanFn | None = None,
    ) -> None:
        super().__init__(domain, initial_state, imagined_progress, weights, imagine_plan)
        self.goal = Goal()
        self.plan_log_likelihood = plan_log_likelihood

    def remaining_goal(self, state: State) -> tuple[Fact, ...]:
        return ()

    def score(self, steps: Sequence[Step]) -> PlanScore:
        w = self.weights
        states, wasted, first_useful = self._walk(steps)
        probability = math.exp(min(0.0, self.plan_log_likelihood(tuple(steps))))
        weight, imagined = self._imagination(steps, first_useful, no_useful_step=0.5)
        raw = w.goal * probability - w.wasted_step_cost * wasted + weight * (0.5 if imagined is None else imagined)
        final = states[-1] if states else self.initial_state
        return PlanScore(_clipped(raw, w.goal + weight), probability, wasted, imagined, final)

    def upper_bound(self) -> float:
        return 1.0
