"""Monte Carlo tree search over subtask sequences with language-model priors (PUCT).

A node is a plan prefix; its actions are next steps plus ``done`` (represented by ``None``).
Selection maximises ``Q + c * P * sqrt(N_parent) / (1 + N_child)`` (AlphaZero's PUCT). ``P``
is the language model's likelihood of the action, softmax-normalised over the node's actions
and mixed with a uniform share; unvisited actions are valued at their parent's mean.

A new leaf is expanded: its actions and priors come from the proposal source, minus steps the
symbolic model says would fail, change nothing, or touch neither a missing goal fact nor any
skill's precondition (the relevance filter of classical planning). It is valued by a rollout
that completes the plan greedily in goal order (ties and enabling steps drawn with the
search's own seeded generator), scored by the plan evaluator. Unlike RAP, the language model
does not predict states: the symbolic model and the world model's imagination do (value.py).

Plan values are deterministic (the imagination is queried once per step before the search),
so the result is the best-valued plan evaluated; among equally good plans the most visited
path wins, which is the one the priors favoured. The search stops early once a plan reaches
the evaluator's upper bound (then the first such plan found wins: the greedy rollout's, which
follows the instruction's order) or when the finite pruned tree is fully explored.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

from wam_ros.planning.domain import Domain, Scene, State, Step
from wam_ros.planning.value import PlanEvaluator

Action = Optional[Step]  # None: "done"


class ProposalSource(Protocol):
    """Where a node's actions and their priors come from (a language model, or a test's toy)."""

    def candidates(self, prefix: tuple[Step, ...]) -> Sequence[Step]:
        """Proposed next steps after ``prefix`` (already validated against the vocabulary)."""

    def log_likelihoods(self, prefix: tuple[Step, ...], actions: Sequence[Action]) -> list[float]:
        """Log-likelihood of each action (``None`` = done) as the step after ``prefix``."""


@dataclass(frozen=True)
class SearchConfig:
    iterations: int = 200
    time_budget_s: float = 20.0
    exploration: float = 1.0  # c in PUCT
    prior_temperature: float = 1.0  # softmax temperature on log-likelihoods; larger = flatter priors
    prior_uniform_mix: float = 0.25  # share of a uniform prior mixed in, so a wrong language model cannot starve an action
    max_plan_steps: int = 6
    enumerate_vocabulary: bool = True  # add every allowed step to the proposals when few enough
    max_enumerated_steps: int = 32
    prune_irrelevant_steps: bool = True  # drop steps that fail, change nothing, or touch neither goal nor preconditions
    stop_at_optimum: bool = True  # stop once a plan reaches the evaluator's upper bound
    model_priors: bool = True  # false: uniform priors, the language model is not asked (an ablation)
    seed: int = 0


@dataclass
class _Node:
    steps: tuple[Step, ...]
    state: State
    terminal: bool
    actions: list[Action] = field(default_factory=list)
    priors: list[float] = field(default_factory=list)
    children: dict[Action, "_Node"] = field(default_factory=dict)
    visits: int = 0
    value_sum: float = 0.0
    expanded: bool = False

    @property
    def mean(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


@dataclass(frozen=True)
class SearchResult:
    steps: tuple[Step, ...]
    value: float
    iterations: int
    elapsed_s: float
    tree_nodes: int
    stopped: str  # "iterations", "time", "solved" (tree explored), "optimal" (upper bound reached) or "canceled"


def _softmax(log_likelihoods: Sequence[float], temperature: float) -> list[float]:
    scaled = [x / max(temperature, 1e-6) for x in log_likelihoods]
    top = max(scaled)
    weights = [math.exp(x - top) for x in scaled]
    total = sum(weights)
    return [w / total for w in weights]


class TreeSearch:
    """One search from a starting state; create a new one per planning call."""

    def __init__(
        self,
        domain: Domain,
        scene: Scene,
        evaluator: PlanEvaluator,
        proposals: ProposalSource,
        config: SearchConfig = SearchConfig(),
    ) -> None:
        self.domain = domain
        self.scene = scene
        self.evaluator = evaluator
        self.proposals = proposals
        self.config = config
        self.rng = random.Random(config.seed)
        grounded = domain.grounded_steps(scene)
        self.enumerated = grounded if config.enumerate_vocabulary and len(grounded) <= config.max_enumerated_steps else []
        self.best: dict[tuple[Step, ...], float] = {}  # every complete plan evaluated, with its value
        self.precondition_predicates = {t.predicate for skill in domain.skills.values() for t in skill.preconditions}
        self.root = _Node((), evaluator.initial_state, terminal=False)
        self.bound = evaluator.upper_bound()
        self.node_count = 1

    # -- tree operations ---------------------------------------------------------------------
    def _expand(self, node: _Node) -> None:
        actions: list[Action] = []
        if len(node.steps) < self.config.max_plan_steps:
            for step in [*self.proposals.candidates(node.steps), *self.enumerated]:
                if step in actions or self.domain.check_step(step, self.scene) is not None:
                    continue
                if self.config.prune_irrelevant_steps and not self._relevant(node.state, step):
                    continue
                actions.append(step)
        actions.append(None)
        node.actions = actions
        if sum(a is not None for a in actions) > 1 and self.config.model_priors:  # one step or done: priors cannot matter much, skip the model
            model = _softmax(self.proposals.log_likelihoods(node.steps, actions), self.config.prior_temperature)
            mix = self.config.prior_uniform_mix
            node.priors = [(1 - mix) * p + mix / len(actions) for p in model]
        else:
            node.priors = [1.0 / len(actions)] * len(actions)
        node.expanded = True

    def _relevant(self, state: State, step: Step) -> bool:
        """A step can help: it applies, and adds a missing goal fact or a fact some skill requires
        (without a symbolic goal, when the language model judges plans: it applies and changes something)."""
        outcome = self.domain.apply(state, step)
        if not (outcome.applicable and outcome.useful):
            return False
        if not getattr(self.evaluator, "goal_directed", True):
            return True
        added = outcome.state - state
        missing = set(self.evaluator.remaining_goal(state))
        return bool(added & missing) or any(fact[0] in self.precondition_predicates for fact in added)

    def _child(self, node: _Node, action: Action) -> _Node:
        child = node.children.get(action)
        if child is None:
            if action is None:
                child = _Node(node.steps, node.state, terminal=True)
            else:
                state = self.domain.apply(node.state, action).state
                steps = (*node.steps, action)
                child = _Node(steps, state, terminal=False)
            node.children[action] = child
            self.node_count += 1
        return child

    def _select(self, node: _Node) -> Action:
        scale = self.config.exploration * math.sqrt(max(node.visits, 1))
        best_action, best_score = None, -math.inf
        for action, prior in zip(node.actions, node.priors):
            child = node.children.get(action)
            q = child.mean if child is not None and child.visits else node.mean
            visits = child.visits if child is not None else 0
            score = q + scale * prior / (1 + visits)
            if score > best_score:
                best_action, best_score = action, score
        return best_action

    def _evaluate(self, steps: tuple[Step, ...]) -> float:
        value = self.best.get(steps)
        if value is None:
            value = self.evaluator(steps)
            self.best[steps] = value
        return value

    def _rollout(self, node: _Node) -> float:
        """Complete the plan greedily in goal order, then score it.

        Each step achieves the first still-missing goal fact (in the order the instruction names
        them) when some applicable step does; otherwise a random applicable step that changes
        the state and was not used yet (e.g. open a drawer first). Stops when the goal holds.
        """
        steps, state = list(node.steps), node.state
        pool = [a for a in node.actions if a is not None]
        pool += [s for s in self.enumerated if s not in pool]
        if not getattr(self.evaluator, "goal_directed", True):
            return self._likelihood_rollout(steps, state, pool)
        while len(steps) < self.config.max_plan_steps:
            missing = self.evaluator.remaining_goal(state)
            if not missing:
                break
            outcomes = [(s, o.state) for s in pool if (o := self.domain.apply(state, s)).applicable and o.useful]
            choices: list[tuple[Step, State]] = []
            for fact in missing:
                choices = [(s, after) for s, after in outcomes if fact in after]
                if choices:
                    break
            if not choices:
                choices = [(s, after) for s, after in outcomes if s not in steps]
                if not choices:
                    break
            step, state = choices[self.rng.randrange(len(choices))]
            steps.append(step)
        return self._evaluate(tuple(steps))

    def _likelihood_rollout(self, steps: list[Step], state: State, pool: list[Step]) -> float:
        """Without a symbolic goal: complete the plan greedily by the language model's likelihood
        among the steps that apply and change something, until ``done`` is likeliest (constrained
        greedy decoding)."""
        while True:
            choices: list[Action] = [s for s in pool if s not in steps and (o := self.domain.apply(state, s)).applicable and o.useful]
            if len(steps) >= self.config.max_plan_steps or not choices:
                break
            choices.append(None)
            scores = self.proposals.log_likelihoods(tuple(steps), choices)
            best = choices[max(range(len(choices)), key=scores.__getitem__)]
            if best is None:
                break
            steps.append(best)
            state = self.domain.apply(state, best).state
        return self._evaluate(tuple(steps))

    # -- search ------------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool] = lambda: False) -> SearchResult:
        started = time.perf_counter()
        stopped = "iterations"
        iteration = 0
        while iteration < self.config.iterations:
            if should_stop():
                stopped = "canceled"
                break
            if iteration > 0 and time.perf_counter() - started > self.config.time_budget_s:  # one iteration always runs
                stopped = "time"
                break
            if self.root.expanded and self._exhausted(self.root):
                stopped = "solved"
                break
            if self.config.stop_at_optimum and self.best and max(self.best.values()) >= self.bound - 1e-9:
                stopped = "optimal"
                break
            self._iterate()
            iteration += 1
        steps = self._extract()
        return SearchResult(steps, self._evaluate(steps), iteration, time.perf_counter() - started, self.node_count, stopped)

    def _exhausted(self, node: _Node) -> bool:
        """Every plan below ``node`` has been evaluated exactly (a finite tree fully explored)."""
        if not node.expanded:
            return False
        for action in node.actions:
            child = node.children.get(action)
            if action is None:
                if node.steps not in self.best:
                    return False
            elif child is None or not self._exhausted(child):
                return False
        return True

    def _iterate(self) -> None:
        node, path = self.root, [self.root]
        while node.expanded and not node.terminal:  # the first iteration treats the root as the leaf
            action = self._select(node)
            node = self._child(node, action)
            path.append(node)
        if node.terminal:
            value = self._evaluate(node.steps)
        else:
            self._expand(node)
            self._evaluate(node.steps)  # stopping here is a plan too: cheap, and it lets a finite tree finish
            value = self._rollout(node)
        for visited in path:
            visited.visits += 1
            visited.value_sum += value

    def _extract(self) -> tuple[Step, ...]:
        """The best-valued plan evaluated; among equally good ones the most visited path (the one
        the priors favoured), then the shorter."""
        if not self.best:
            return ()
        top = max(self.best.values())
        ties = [plan for plan, value in self.best.items() if value >= top - 1e-9]
        return max(ties, key=lambda plan: (self._path_visits(plan), -len(plan)))

    def _path_visits(self, plan: tuple[Step, ...]) -> tuple[int, ...]:
        """Visit counts of the tree nodes along ``plan`` (0 past the tree), then of its ``done``."""
        visits, node = [], self.root
        for step in (*plan, None):
            node = node.children.get(step) if node is not None else None
            visits.append(node.visits if node is not None else 0)
        return tuple(visits)
