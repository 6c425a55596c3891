"""MCTS on a toy symbolic domain: best plan within budget, vocabulary respected, deterministic per seed."""
from __future__ import annotations

import itertools
import time
from typing import Sequence

import pytest

from wam_ros.planning.domain import Domain, Step, load_domain
from wam_ros.planning.mcts import Action, SearchConfig, TreeSearch
from wam_ros.planning.value import PlanEvaluator

KITCHEN = {
    "categories": {"apple": "item", "spoon": "item", "cup": "item", "drawer": "container"},
    "objects": ["apple", "spoon", "cup", "drawer"],
    "skills": {
        "open": {"arguments": ["container"], "instruction": "open the {0}", "effects": ["open({0})"]},
        "close": {"arguments": ["container"], "instruction": "close the {0}", "effects": ["not open({0})"]},
        "put_in": {
            "arguments": ["item", "container"],
            "instruction": "put the {0} in the {1}",
            "preconditions": ["open({1})"],
            "effects": ["not in({0}, *)", "in({0}, {1})"],
        },
    },
}
INSTRUCTION = "put the apple and the spoon in the drawer"
OPEN, CLOSE = Step("open", ("drawer",)), Step("close", ("drawer",))
APPLE, SPOON, CUP = (Step("put_in", (item, "drawer")) for item in ("apple", "spoon", "cup"))


class MisleadingProposals:
    """A toy proposal source: proposes out-of-vocabulary steps and prefers the wrong ones."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0

    def candidates(self, prefix: tuple[Step, ...]) -> list[Step]:
        return [Step("teleport", ("apple",)), Step("put_in", ("drawer", "apple")), Step("put_in", ("fork", "drawer")), CUP]

    def log_likelihoods(self, prefix: tuple[Step, ...], actions: Sequence[Action]) -> list[float]:
        self.calls += 1
        time.sleep(self.delay_s)
        preferred = {CUP: 0.0, CLOSE: -0.5, None: -1.0}
        return [preferred.get(action, -6.0) for action in actions]


@pytest.fixture(scope="module")
def kitchen() -> Domain:
    return load_domain(KITCHEN)


def search(domain: Domain, **config) -> tuple[TreeSearch, PlanEvaluator]:
    scene = domain.scene()
    evaluator = PlanEvaluator(domain, domain.ground_goal(INSTRUCTION, scene), frozenset())
    tree = TreeSearch(domain, scene, evaluator, MisleadingProposals(), SearchConfig(**config))
    return tree, evaluator


def brute_force_best(domain: Domain, evaluator: PlanEvaluator, max_steps: int) -> float:
    steps = domain.grounded_steps(domain.scene())
    return max(evaluator(plan) for n in range(max_steps + 1) for plan in itertools.product(steps, repeat=n))


@pytest.mark.parametrize("prune", [True, False])
def test_finds_the_best_plan_within_budget(kitchen, prune):
    tree, evaluator = search(kitchen, iterations=400, max_plan_steps=4, prune_irrelevant_steps=prune, seed=3)
    result = tree.run()
    assert result.iterations <= 400
    assert result.value == pytest.approx(brute_force_best(kitchen, evaluator, 4))
    assert result.steps[0] == OPEN and set(result.steps[1:]) == {APPLE, SPOON} and len(result.steps) == 3
    if prune:  # the relevance filter keeps the tree small: few language-model calls
        assert result.tree_nodes <= 12 and tree.proposals.calls <= 6


def test_respects_the_vocabulary(kitchen):
    tree, _ = search(kitchen, iterations=200, max_plan_steps=4, prune_irrelevant_steps=False)
    tree.run()
    scene = kitchen.scene()
    stack = [tree.root]
    while stack:
        node = stack.pop()
        for action in node.actions:
            assert action is None or kitchen.check_step(action, scene) is None
        stack.extend(node.children.values())
    assert all(kitchen.check_step(step, scene) is None for plan in tree.best for step in plan)


def test_deterministic_given_a_seed(kitchen):
    runs = [search(kitchen, iterations=150, max_plan_steps=4, prune_irrelevant_steps=False, seed=seed)[0].run() for seed in (7, 7, 8)]
    first, again, other = ((r.steps, r.value, r.iterations, r.tree_nodes) for r in runs)
    assert first == again
    assert other[1] == pytest.approx(first[1])  # another seed, same best value


def test_priors_break_ties_between_equally_good_plans(kitchen):
    class PreferSpoon(MisleadingProposals):
        def log_likelihoods(self, prefix, actions):
            return [0.0 if action == SPOON else -3.0 for action in actions]

    scene = kitchen.scene()
    evaluator = PlanEvaluator(kitchen, kitchen.ground_goal(INSTRUCTION, scene), frozenset({("open", "drawer")}))
    result = TreeSearch(kitchen, scene, evaluator, PreferSpoon(), SearchConfig(iterations=100, stop_at_optimum=False)).run()
    assert result.steps == (SPOON, APPLE)
    # Stopping at the optimum keeps the first optimal plan: the greedy rollout, in the instruction's order.
    early = TreeSearch(kitchen, scene, evaluator, PreferSpoon(), SearchConfig(iterations=100)).run()
    assert early.steps == (APPLE, SPOON) and early.stopped == "optimal" and early.iterations == 1


def test_ordered_goal_follows_the_instruction(kitchen):
    scene = kitchen.scene()
    goal = kitchen.ground_goal("open the drawer, then put the spoon and then the apple in the drawer", scene)
    assert goal.ordered
    evaluator = PlanEvaluator(kitchen, goal, frozenset())
    result = TreeSearch(kitchen, scene, evaluator, MisleadingProposals(), SearchConfig(iterations=200)).run()
    assert result.steps == (OPEN, SPOON, APPLE)


def test_time_budget_and_cancel(kitchen):
    scene = kitchen.scene()
    evaluator = PlanEvaluator(kitchen, kitchen.ground_goal(INSTRUCTION, scene), frozenset())
    slow = MisleadingProposals(delay_s=0.05)
    started = time.perf_counter()
    config = SearchConfig(iterations=10_000, time_budget_s=0.3, prune_irrelevant_steps=False)
    result = TreeSearch(kitchen, scene, evaluator, slow, config).run()
    assert result.stopped == "time" and time.perf_counter() - started < 0.3 + 0.5
    no_time = TreeSearch(kitchen, scene, evaluator, MisleadingProposals(), SearchConfig(time_budget_s=0.0)).run()
    assert no_time.iterations == 1 and set(no_time.steps) == {OPEN, APPLE, SPOON}  # one iteration's rollout is a full plan
    calls = iter(range(1000))
    canceled = TreeSearch(kitchen, scene, evaluator, MisleadingProposals(), config).run(should_stop=lambda: next(calls) >= 5)
    assert canceled.stopped == "canceled" and canceled.iterations == 5


def test_imagination_prefers_the_subtask_the_world_model_can_start(kitchen):
    scene = kitchen.scene()
    goal = kitchen.ground_goal(INSTRUCTION, scene)
    opened = frozenset({("open", "drawer")})
    evaluator = PlanEvaluator(kitchen, goal, opened, imagined_progress={APPLE: 0.1, SPOON: 0.8})
    result = TreeSearch(kitchen, scene, evaluator, MisleadingProposals(), SearchConfig(iterations=100)).run()
    assert result.steps == (SPOON, APPLE)
