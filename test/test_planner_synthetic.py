"""Instructions the rules cannot resolve: the synthetic sets, their meanings, and the router between rules and the LM."""
from __future__ import annotations

import random

import pytest

from wam_ros.planning import synthetic
from wam_ros.planning.domain import load_domain
from wam_ros.robot import load_robot_config
from wam_ros.sim.tasks import BIN_THREE_REWORDINGS

CUBES = ("red_cube", "green_cube", "blue_cube")
POSITIONS = {"red_cube": (0.6, 0.2), "green_cube": (0.45, 0.0), "blue_cube": (0.35, -0.25), "bin": (0.45, -0.35)}


@pytest.fixture(scope="module")
def domain():
    return load_domain(load_robot_config("panda_sim").extra["planner"])


def test_held_out_wordings_are_not_training_wordings():
    for kind in synthetic.KINDS:
        assert not set(synthetic.HELD_OUT[kind]) & set(synthetic.TRAIN[kind]), kind
    assert not set(synthetic.RELATIONS_HELD_OUT) & set(synthetic.RELATIONS_TRAIN)
    texts = {e.instruction for e in synthetic.training_examples(2000, seed=3)}
    held = {synthetic.held_out_example(seed, kind, CUBES, "bin", POSITIONS, running_order=CUBES).instruction
            for seed in range(200) for kind in synthetic.KINDS}
    assert not texts & held


def test_training_examples_cover_every_kind_and_other_names():
    examples = synthetic.training_examples(400, seed=0)
    assert {e.kind for e in examples} == set(synthetic.KINDS)
    names = {m for e in examples for m in e.movables}
    assert len(names) > 6 and {e.container for e in examples} == set(synthetic.CONTAINERS)
    for example in examples:
        assert synthetic.plan_satisfies(example, example.plan()), example


def test_meanings_of_the_held_out_kinds():
    rng = random.Random(0)
    exclusion = synthetic.make_example(rng, "exclusion", synthetic.HELD_OUT, synthetic.RELATIONS_HELD_OUT, CUBES, "bin", POSITIONS)
    excluded = next(c for c in CUBES if c not in exclusion.targets)
    assert excluded.split("_")[0] in exclusion.instruction and len(exclusion.targets) == 2
    assert synthetic.plan_satisfies(exclusion, exclusion.targets[::-1])  # any order
    assert not synthetic.plan_satisfies(exclusion, CUBES)
    for seed in range(30):
        relation = synthetic.held_out_example(seed, "relation", CUBES, "bin", POSITIONS)
        words = synthetic.relation_words(POSITIONS, CUBES, "bin")
        first = relation.first[0]
        phrase = next(p for p in synthetic.RELATIONS_HELD_OUT if p.format(c="bin") in relation.instruction)
        assert synthetic.RELATIONS_HELD_OUT[phrase].format(c="bin") in words[first]
        assert relation.plan()[0] == first
    correction = synthetic.make_example(random.Random(4), "correction", synthetic.HELD_OUT, synthetic.RELATIONS_HELD_OUT, CUBES, "bin",
                                        POSITIONS, running_order=CUBES, done_count=1)
    assert correction.running.done == ("red_cube",) and correction.running.planned == ("green_cube", "blue_cube")
    assert correction.ordered and "red_cube" not in correction.targets


@pytest.mark.parametrize("colours", [("red", "blue", "green"), ("green", "red", "blue")])
def test_the_rules_keep_every_reworded_bin_three_instruction(domain, colours):
    scene = domain.scene()
    for wording in BIN_THREE_REWORDINGS:
        instruction = wording.format(*colours)
        goal = domain.ground_goal(instruction, scene)
        assert goal and domain.rules_cannot_resolve(instruction, scene, goal) == "", instruction


@pytest.mark.parametrize("instruction, why", [
    ("everything except the green cube into the bin", "no goal"),
    ("put the red cube in the bin, then the rest", "'rest'"),
    ("put the cube nearest the bin in the bin first, then the red one", "'nearest'"),
    ("put all the cubes in the bin", "no goal"),
    ("put the red cube in the bin and leave the others", "'leave'"),
    ("put both the red and the blue cube in the bin", ""),
    ("put every cube in the bin: red, green and blue", ""),
    ("put the green cube in the near end of the bin", ""),
])
def test_the_router_sends_what_the_rules_cannot_read_to_the_language_model(domain, instruction, why):
    scene = domain.scene()
    reason = domain.rules_cannot_resolve(instruction, scene, domain.ground_goal(instruction, scene))
    assert (why in reason) if why else reason == "", reason


def test_every_template_means_what_it_says():
    """Each wording's meaning is read from its words: 'only'/'then the rest' for relations, dropping or
    moving a cube for corrections; spot-check one example of each against hand-written meanings."""
    rng = random.Random(1)
    for template in synthetic.TRAIN["relation"] + synthetic.HELD_OUT["relation"]:
        example = synthetic.make_example(rng, "relation", {"relation": (template,)}, synthetic.RELATIONS_TRAIN, CUBES, "bin", POSITIONS)
        rest = any(w in template for w in ("then", "others", "rest", "remaining", "every other", "other ones", "afterwards"))
        assert len(example.targets) == (3 if rest else 1), template
    for template in synthetic.TRAIN["correction"] + synthetic.HELD_OUT["correction"]:
        example = synthetic.make_example(rng, "correction", {"correction": (template,)}, synthetic.RELATIONS_TRAIN, CUBES, "bin", POSITIONS,
                                         running_order=CUBES, done_count=0)
        dropped = any(w in template for w in ("skip", "leave", "forget", "do not move", "scratch"))
        assert len(example.targets) == (2 if dropped else 3), template
