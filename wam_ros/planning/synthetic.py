"""Instructions the rule grounder cannot resolve, with the plans they mean: synthetic, from templates.

Four kinds, each in two disjoint sets of wordings:

* ``exclusion``: "everything except the green cube into the bin";
* ``quantifier``: "put all of the cubes into the bin";
* ``relation``: references by where an object is ("the cube nearest the bin first, then the
  others"), resolved against the words the scene description gives each object (from the scene
  detector's position estimates: :func:`wam_ros.planning.success.relation_words`);
* ``correction``: a new instruction while a task runs ("no, the blue one first"), read against
  the running task, the steps done and the steps planned.

``TRAIN`` wordings make the language model's finetuning data (:mod:`wam_ros.planning.finetune`)
and may appear in prompts; ``HELD_OUT`` wordings are only for the benchmark
(``bench/planner.py``): none of them is a training template (``test_planner_synthetic.py``
checks it). Training scenes use other colours and containers too, so the model has to copy
names from the object list rather than remember three colours.

Everything here is text and lists of names; plans are judged by :func:`plan_satisfies`.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "brown")
CONTAINERS = ("bin", "box", "tray", "basket")
KINDS = ("exclusion", "quantifier", "relation", "correction")

# {x}: a colour; {c}: the container noun; {rel}: a relation phrase from RELATIONS.
TRAIN: dict[str, tuple[str, ...]] = {
    "exclusion": (
        "put all the cubes in the {c} except the {x} one",
        "put every cube except the {x} cube in the {c}",
        "move all cubes but the {x} one into the {c}",
        "put all cubes other than the {x} one in the {c}",
        "leave the {x} cube out and put the rest in the {c}",
        "all cubes go in the {c}, not the {x} one",
        "except for the {x} cube, put the cubes in the {c}",
        "put the cubes in the {c}, all but the {x} one",
        "don't touch the {x} cube; move the others to the {c}",
        "load the {c} with every cube except the {x} cube",
        "move everything but the {x} cube into the {c}",
        "the {c} gets all the cubes apart from {x}",
        "take all of the cubes to the {c}, skipping the {x} one",
        "without the {x} cube, put the cubes in the {c}",
        "put the remaining cubes in the {c} and leave {x} alone",
        "every cube goes into the {c} with the exception of the {x} one",
        "ignore the {x} cube and put all the other cubes in the {c}",
        "drop all the cubes in the {c}, excluding the {x} cube",
    ),
    "quantifier": (
        "put all the cubes in the {c}",
        "every cube goes in the {c}",
        "fill the {c} with all the cubes",
        "put each cube in the {c}",
        "move all cubes to the {c}",
        "put every single cube into the {c}",
        "all of the cubes belong in the {c}",
        "collect all the cubes in the {c}",
        "put each and every cube in the {c}",
        "move every cube on the table into the {c}",
    ),
    "relation": (
        "put the cube {rel} in the {c}",
        "only move the cube {rel} into the {c}",
        "start with the cube {rel}, then put the others in the {c}",
        "first the cube {rel}, then the rest, all in the {c}",
        "pick the cube {rel} and drop it in the {c}",
        "move just the cube {rel} to the {c}",
        "the cube {rel} goes in the {c} first, then the other ones",
        "put the cube {rel} in the {c}, then the remaining cubes",
        "take the cube {rel} and place it in the {c}",
        "put only the cube {rel} into the {c}",
        "first move the cube {rel} into the {c}, after it every other cube",
    ),
    "correction": (
        "no, do the {x} cube first",
        "stop, the {x} one comes first",
        "change of plan: skip the {x} cube",
        "actually, leave the {x} cube out",
        "wait, put the {x} cube in before the {y} cube",
        "no, the {x} cube before the {y} one",
        "sorry, start with the {x} cube",
        "do not move the {x} cube after all",
        "actually the {x} one should go before the {y} one",
        "put the {x} cube in next",
        "scratch the {x} cube, leave it on the table",
        "first {x}, then the rest",
    ),
}
HELD_OUT: dict[str, tuple[str, ...]] = {
    "exclusion": (
        "everything except the {x} cube into the {c}",
        "bin every cube apart from the {x} one",
        "put all the cubes in the {c} but keep the {x} one on the table",
        "the {x} cube stays where it is; the other cubes go in the {c}",
    ),
    "quantifier": (
        "put all of the cubes into the {c}",
        "clear every cube off the table into the {c}",
    ),
    "relation": (
        "the cube {rel} first, then the remaining ones, all into the {c}",
        "only the cube {rel} goes into the {c}",
        "put the cube {rel} in the {c} and nothing else",
        "begin with the cube {rel}; afterwards the other cubes into the {c} as well",
    ),
    "correction": (
        "no, the {x} one first",
        "forget the {x} cube",
        "hold on, {x} before {y}",
    ),
}
# Relation phrases in instructions -> the description word they refer to. TRAIN and HELD_OUT
# phrasings differ where a synonym exists.
RELATIONS_TRAIN: dict[str, str] = {
    "nearest to the {c}": "nearest to the {c}",
    "closest to the {c}": "nearest to the {c}",
    "next to the {c}": "nearest to the {c}",
    "farthest from the {c}": "farthest from the {c}",
    "farthest away from the {c}": "farthest from the {c}",
    "most distant from the {c}": "farthest from the {c}",
    "nearest to the robot": "nearest to the robot",
    "closest to you": "nearest to the robot",
    "farthest from the robot": "farthest from the robot",
    "furthest from the robot": "farthest from the robot",
    "on the far left": "leftmost",
    "furthest to the left": "leftmost",
    "on the far right": "rightmost",
    "furthest to the right": "rightmost",
}
RELATIONS_HELD_OUT: dict[str, str] = {
    "nearest the {c}": "nearest to the {c}",
    "furthest from the {c}": "farthest from the {c}",
    "closest to the robot": "nearest to the robot",
    "that is leftmost": "leftmost",
    "most to the right": "rightmost",
}


@dataclass(frozen=True)
class Running:
    """A task that runs when a correction arrives: its instruction, steps done, steps planned next."""

    instruction: str
    done: tuple[str, ...]  # movable objects already in the container
    planned: tuple[str, ...]  # the rest of the running plan, in order


@dataclass(frozen=True)
class Example:
    """One instruction in one scene, and what it means."""

    kind: str
    instruction: str
    movables: tuple[str, ...]  # object names, in the order the scene lists them
    container: str
    positions: Mapping[str, tuple[float, float]]  # for the relation words (base frame, m)
    targets: tuple[str, ...]  # the movables that must end in the container (besides those done)
    first: tuple[str, ...] = ()  # these must go in before the other targets, in this order
    ordered: bool = False  # targets in exactly this order
    running: Running | None = None
    template: str = ""

    @property
    def objects(self) -> tuple[str, ...]:
        return (*self.movables, self.container)

    def plan(self) -> tuple[str, ...]:
        """The canonical plan: ``first``, then the other targets in scene (or given) order."""
        if self.ordered:
            return self.targets
        rest = [t for t in self.targets if t not in self.first]
        return (*self.first, *rest)


def plan_satisfies(example: Example, plan: Sequence[str]) -> bool:
    """A plan (movables in the order they go into the container) does what ``example`` asks."""
    plan = list(plan)
    if sorted(plan) != sorted(example.targets) or len(set(plan)) != len(plan):
        return False
    if example.ordered:
        return tuple(plan) == tuple(example.targets)
    return tuple(plan[: len(example.first)]) == tuple(example.first)


def relation_words(positions: Mapping[str, tuple[float, float]], movables: Sequence[str], container: str) -> dict[str, list[str]]:
    """The same words as :func:`wam_ros.planning.success.relation_words`, for names and positions alone."""
    words: dict[str, list[str]] = {m: [] for m in movables}
    if len(movables) < 2:
        return words
    noun = container.replace("_", " ")

    def mark(key, low: str, high: str) -> None:
        ordered = sorted(movables, key=key)
        words[ordered[0]].append(low)
        words[ordered[-1]].append(high)

    cx, cy = positions[container]
    mark(lambda n: math.hypot(positions[n][0] - cx, positions[n][1] - cy), f"nearest to the {noun}", f"farthest from the {noun}")
    mark(lambda n: math.hypot(*positions[n]), "nearest to the robot", "farthest from the robot")
    mark(lambda n: -positions[n][1], "leftmost", "rightmost")
    return words


def _colour(name: str) -> str:
    return name.rsplit("_", 1)[0].replace("_", " ")


def _holder(words: dict[str, list[str]], word: str) -> str | None:
    owners = [name for name, ws in words.items() if word in ws]
    return owners[0] if len(owners) == 1 else None


def make_example(rng: random.Random, kind: str, wordings: Mapping[str, Sequence[str]] = TRAIN,
                 relations: Mapping[str, str] = RELATIONS_TRAIN, movables: Sequence[str] | None = None, container: str | None = None,
                 positions: Mapping[str, tuple[float, float]] | None = None, running_instruction: str | None = None,
                 running_order: Sequence[str] | None = None, done_count: int | None = None) -> Example:
    """A random example of ``kind`` (scene, wording, meaning). Passing ``movables``, ``container``,
    ``positions`` (and for corrections the running task) fixes the scene: the benchmark's bin_three layouts."""
    if movables is None:
        count = rng.choice((2, 3, 3, 3, 4))
        movables = tuple(f"{c}_cube" for c in rng.sample(COLOURS, count))
    movables = tuple(movables)
    container = container or rng.choice(CONTAINERS)
    if positions is None:
        positions = {m: (rng.uniform(0.3, 0.65), rng.uniform(-0.25, 0.3)) for m in movables}
        positions[container] = (rng.uniform(0.35, 0.55), rng.uniform(-0.4, -0.3))
    noun = container.replace("_", " ")
    template = rng.choice(wordings[kind])
    words = relation_words(positions, movables, container)
    if kind == "exclusion":
        excluded = rng.choice(movables)
        return Example(kind, template.format(x=_colour(excluded), c=noun), movables, container, positions,
                       tuple(m for m in movables if m != excluded), template=template)
    if kind == "quantifier":
        return Example(kind, template.format(c=noun), movables, container, positions, movables, template=template)
    if kind == "relation":
        phrase, word = rng.choice(list(relations.items()))
        word = word.format(c=noun)
        referred = _holder(words, word)
        if referred is None:
            return make_example(rng, kind, wordings, relations, movables, container, positions)
        text = template.format(rel=phrase.format(c=noun), c=noun)
        only = any(w in template for w in ("only", "nothing else", "just")) or not any(
            w in template for w in ("then", "others", "rest", "remaining", "other cube", "other ones", "afterwards"))
        targets = (referred,) if only else (referred, *[m for m in movables if m != referred])
        return Example(kind, text, movables, container, positions, targets, first=(referred,), template=template)
    if kind == "correction":
        order = list(running_order) if running_order is not None else rng.sample(list(movables), len(movables))
        done = done_count if done_count is not None else rng.randrange(0, len(order) - 1)
        planned = order[done:]
        instruction = running_instruction or _running_instruction(order, noun)
        x = rng.choice(planned[1:]) if len(planned) > 1 else planned[0]
        if "{y}" in template:
            before = [p for p in planned if planned.index(p) < planned.index(x)]
            if not before:
                return make_example(rng, kind, wordings, relations, movables, container, positions, running_instruction, running_order, done_count)
            y = rng.choice(before)
            new = [p for p in planned if p != x]
            new.insert(new.index(y), x)
            text = template.format(x=_colour(x), y=_colour(y))
            targets = tuple(new)
        elif any(w in template for w in _DROP_WORDS):
            x = rng.choice(planned)
            text = template.format(x=_colour(x))
            targets = tuple(p for p in planned if p != x)
        else:
            text = template.format(x=_colour(x))
            targets = (x, *[p for p in planned if p != x])
        running = Running(instruction, tuple(order[:done]), tuple(planned))
        return Example(kind, text, movables, container, positions, targets, ordered=True, running=running, template=template)
    raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")


_DROP_WORDS = ("skip", "leave", "forget", "do not move", "scratch")  # a correction that takes a cube out of the plan


def _running_instruction(order: Sequence[str], noun: str) -> str:
    colours = [_colour(o) for o in order]
    listed = ", ".join(colours[:-1]) + f" and {colours[-1]}" if len(colours) > 1 else colours[0]
    return f"put the {listed} cubes in the {noun}, in that order"


def training_examples(count: int, seed: int = 0) -> list[Example]:
    """``count`` examples of every kind in turn, TRAIN wordings, random scenes."""
    rng = random.Random(seed)
    return [make_example(rng, KINDS[i % len(KINDS)]) for i in range(count)]


@dataclass
class HeldOutCase:
    """One benchmark case on a bin_three layout (seed), an instruction the rules cannot resolve."""

    seed: int
    example: Example
    extra: dict = field(default_factory=dict)


def held_out_example(seed: int, kind: str, movables: Sequence[str], container: str, positions: Mapping[str, tuple[float, float]],
                     running_order: Sequence[str] | None = None, running_instruction: str | None = None, done_count: int = 1) -> Example:
    """The benchmark's example for a layout: HELD_OUT wordings only, chosen by seed."""
    rng = random.Random(seed * 7919 + KINDS.index(kind))
    return make_example(rng, kind, HELD_OUT, RELATIONS_HELD_OUT, movables, container, positions, running_instruction,
                        running_order, done_count if kind == "correction" else None)
