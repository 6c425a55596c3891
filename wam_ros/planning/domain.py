"""The planner's symbolic world: skills, scene objects, facts, and goals grounded in an instruction.

A robot's skill vocabulary lives in its YAML under ``robot.planner`` (see docs/planner.md)::

    planner:
      categories: {cube: movable, bin: container}    # object kind (last word of its name) -> category
      objects: [red_cube, green_cube, blue_cube, bin] # scene used when no task status names one
      skills:
        pick_place:
          arguments: [movable, container]             # category of each argument
          instruction: "put the {0} in the {1}"       # text the world action model is conditioned on
          preconditions: []                           # facts that must hold, e.g. "open({1})"
          effects: ["not in({0}, *)", "in({0}, {1})"] # deletions first, then additions
          instructions_by_count:                      # optional: the text depends on the state
            count: "in(*, {1})"                       # facts counted before the step: n
            instructions: ["put the {0} in the {1}", "put the {0} in the near end of the {1}"]  # the n-th (last one past the end)

Facts are tuples such as ``("in", "red_cube", "bin")``. Everything here is plain data: the
planner never executes text, it only matches it against this vocabulary.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

Fact = tuple[str, ...]
State = frozenset[Fact]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_ARGUMENTS = 8
_CALL = re.compile(r"^([a-z_][a-z0-9_]*)\s*\(([^()]*)\)$")
_FACT_PATTERN = re.compile(r"^(not\s+)?([a-z][a-z0-9_]*)\(([^()]*)\)$")
_PLACEHOLDER = re.compile(r"\{(\d+)\}")
_WORD = re.compile(r"[a-z0-9]+|,")
_DETERMINERS = frozenset({"the", "a", "an", "all", "both", "each", "every", "some", "this", "that", "these", "those"})
_LIST_WORDS = frozenset({",", "and", "or", "then"})
_NEGATIONS = frozenset({"not", "except", "without", "never"})
_ORDER_WORDS = re.compile(r"\b(in (that|this|the given|the same) order|in order|then|first|followed by|after that)\b")
# Words whose meaning the noun-phrase rules do not model (Domain.rules_cannot_resolve).
_EXCLUSION_WORDS = frozenset({"except", "but", "apart", "other", "others", "rest", "remaining", "leave", "keep", "stays", "skip", "excluding", "forget"})
_QUANTIFIER_WORDS = frozenset({"all", "every", "everything", "each"})
_COUNT_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5}
_RELATION_WORDS = frozenset({"nearest", "closest", "closer", "farthest", "furthest", "further", "leftmost", "rightmost", "left", "right", "near", "far"})


class DomainError(ValueError):
    """The planner vocabulary in a robot config is malformed; the message names the key."""


@dataclass(frozen=True)
class FactTemplate:
    """``[not] predicate(arg, ...)`` where an argument is ``{i}`` (skill argument i), ``*`` or a constant."""

    predicate: str
    arguments: tuple[str, ...]
    negated: bool = False

    @classmethod
    def parse(cls, text: str, arity: int, where: str, pattern: bool = False) -> "FactTemplate":
        """``pattern``: a fact pattern to match (wildcards allowed, no ``not``), not an effect."""
        match = _FACT_PATTERN.match(text.strip())
        if not match:
            raise DomainError(f"{where}: expected '[not] predicate(arg, ...)', got {text!r}")
        arguments = tuple(a.strip() for a in match.group(3).split(",")) if match.group(3).strip() else ()
        for argument in arguments:
            placeholder = _PLACEHOLDER.fullmatch(argument)
            if placeholder and int(placeholder.group(1)) >= arity:
                raise DomainError(f"{where}: {argument} refers past the skill's {arity} argument(s)")
            if not placeholder and argument != "*" and not NAME_PATTERN.match(argument):
                raise DomainError(f"{where}: argument {argument!r} is neither {{i}}, * nor a name")
        if pattern and match.group(1):
            raise DomainError(f"{where}: counts facts that hold, no 'not'")
        if "*" in arguments and not match.group(1) and not pattern:
            raise DomainError(f"{where}: the wildcard * is only allowed in deletions ('not ...')")
        return cls(match.group(2), arguments, bool(match.group(1)))

    def ground(self, arguments: Sequence[str]) -> Fact:
        """The fact for concrete skill arguments; ``*`` stays a wildcard."""
        out = [self.predicate]
        for argument in self.arguments:
            placeholder = _PLACEHOLDER.fullmatch(argument)
            out.append(arguments[int(placeholder.group(1))] if placeholder else argument)
        return tuple(out)


def fact_matches(pattern: Fact, fact: Fact) -> bool:
    """True when ``fact`` matches ``pattern`` (``*`` matches any single argument)."""
    return len(pattern) == len(fact) and all(p in ("*", f) for p, f in zip(pattern, fact))


def format_fact(fact: Fact) -> str:
    return f"{fact[0]}({', '.join(fact[1:])})"


@dataclass(frozen=True)
class Skill:
    """One thing the robot's world action model can do, with its symbolic model."""

    name: str
    argument_categories: tuple[str, ...]
    instruction_template: str
    preconditions: tuple[FactTemplate, ...] = ()
    effects: tuple[FactTemplate, ...] = ()
    description: str = ""
    count: FactTemplate | None = None  # facts matching it before the step choose the template
    templates_by_count: tuple[str, ...] = ()

    @property
    def arity(self) -> int:
        return len(self.argument_categories)

    def instruction(self, arguments: Sequence[str], state: State = frozenset()) -> str:
        """The language instruction for concrete arguments in ``state``: ``red_cube`` reads as "red cube".

        With ``instructions_by_count``, the template is the n-th of them, n the facts of ``state``
        matching ``count`` (the last template past the end): the second cube into the bin is
        told where in the bin it goes, as the demonstrations did.
        """
        template = self.instruction_template
        if self.count is not None:  # set together with templates_by_count (load_domain)
            pattern = self.count.ground(arguments)
            n = sum(fact_matches(pattern, fact) for fact in state)
            template = self.templates_by_count[min(n, len(self.templates_by_count) - 1)]
        return template.format(*(object_phrase(a) for a in arguments))

    def all_instructions(self, arguments: Sequence[str]) -> tuple[str, ...]:
        """Every instruction this skill may give for ``arguments``, whatever the state."""
        return tuple(dict.fromkeys(t.format(*(object_phrase(a) for a in arguments))
                                   for t in (self.instruction_template, *self.templates_by_count)))

    @property
    def keywords(self) -> frozenset[str]:
        """Words of the instruction template outside its placeholders (e.g. put, the, in)."""
        return frozenset(w for w in _WORD.findall(_PLACEHOLDER.sub(" ", self.instruction_template.lower())) if w != ",")


@dataclass(frozen=True, order=True)
class Step:
    """A skill applied to scene objects, e.g. ``pick_place(red_cube, bin)``."""

    skill: str
    arguments: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.skill}({', '.join(self.arguments)})"

    @property
    def id_suffix(self) -> str:
        return "-".join((self.skill, *self.arguments))


@dataclass(frozen=True)
class SceneObject:
    """An object the planner may name: its name, kind (last word of the name) and category."""

    name: str
    category: str

    @property
    def kind(self) -> str:
        return self.name.rsplit("_", 1)[-1]

    @property
    def adjectives(self) -> tuple[str, ...]:
        return tuple(self.name.split("_")[:-1])

    @property
    def noun_forms(self) -> tuple[str, str, str]:
        """How an instruction names its kind: the kind, plural with -s or -es (``cubes``, ``boxes``)."""
        return self.kind, self.kind + "s", self.kind + "es"


@dataclass(frozen=True)
class Scene:
    """The objects present now, from the task status or the robot config."""

    objects: tuple[SceneObject, ...]

    def get(self, name: str) -> SceneObject | None:
        for scene_object in self.objects:
            if scene_object.name == name:
                return scene_object
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objects)


def object_phrase(name: str) -> str:
    """``red_cube`` -> ``red cube``: how an object is named in an instruction."""
    return name.replace("_", " ")


@dataclass(frozen=True)
class Goal:
    """Facts an instruction asks for; ``ordered`` when it asks for them in the order named."""

    facts: tuple[Fact, ...] = ()
    ordered: bool = False

    def __bool__(self) -> bool:
        return bool(self.facts)


@dataclass(frozen=True)
class Outcome:
    """What a step does to a symbolic state."""

    state: State
    applicable: bool  # preconditions held
    useful: bool  # it changed the state


@dataclass(frozen=True)
class Domain:
    """Skill vocabulary plus the rule that maps object kinds to categories."""

    skills: Mapping[str, Skill]
    categories: Mapping[str, str]  # object kind -> category
    default_objects: tuple[str, ...] = ()
    example_instruction: str = ""
    example_steps: tuple[Step, ...] = ()

    # -- scene ---------------------------------------------------------------------------
    def scene(self, object_names: Iterable[str] | None = None) -> Scene:
        """Scene from object names (task status); unknown kinds and malformed names are left out."""
        names = self.default_objects if object_names is None else tuple(object_names)
        objects, seen = [], set()
        for name in names:
            if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in seen:
                continue
            category = self.categories.get(name.rsplit("_", 1)[-1])
            if category is not None:
                objects.append(SceneObject(name, category))
                seen.add(name)
        return Scene(tuple(objects))

    # -- steps ---------------------------------------------------------------------------
    def check_step(self, step: Step, scene: Scene) -> str | None:
        """Why ``step`` is not allowed in ``scene`` (unknown skill, arity, object, category), or None."""
        skill = self.skills.get(step.skill)
        if skill is None:
            return f"unknown skill {step.skill!r}"
        if len(step.arguments) != skill.arity:
            return f"{step.skill} takes {skill.arity} argument(s), got {len(step.arguments)}"
        for index, (argument, category) in enumerate(zip(step.arguments, skill.argument_categories)):
            scene_object = scene.get(argument)
            if scene_object is None:
                return f"no object {argument!r} in the scene"
            if scene_object.category != category:
                return f"argument {index} of {step.skill} must be a {category}, {argument} is a {scene_object.category}"
        if len(set(step.arguments)) != len(step.arguments):
            return f"{step} names one object twice"
        return None

    def parse_step(self, text: str, scene: Scene) -> Step:
        """The allowed step ``text`` names, written as ``str(step)`` writes it (quotes around arguments
        tolerated); ValueError says what is wrong."""
        match = _CALL.match(text)
        if not match:
            raise ValueError(f"not a step: {text[:60]!r}")
        arguments = [a.strip().strip("'\"").strip() for a in match.group(2).split(",")] if match.group(2).strip() else []
        if len(arguments) > MAX_ARGUMENTS:
            raise ValueError(f"too many arguments: {len(arguments)}")
        for argument in arguments:
            if not NAME_PATTERN.match(argument):
                raise ValueError(f"bad argument: {argument[:40]!r}")
        step = Step(match.group(1), tuple(arguments))
        problem = self.check_step(step, scene)
        if problem:
            raise ValueError(f"invalid step: {problem}")
        return step

    def grounded_steps(self, scene: Scene) -> list[Step]:
        """Every allowed step in ``scene``, in a fixed order (skills, then object order)."""
        steps = []
        for skill in self.skills.values():
            for arguments in _combinations(skill.argument_categories, scene):
                step = Step(skill.name, arguments)
                if self.check_step(step, scene) is None:
                    steps.append(step)
        return steps

    def instruction(self, step: Step, state: State = frozenset()) -> str:
        """What the world action model is told to do for ``step`` in ``state``."""
        return self.skills[step.skill].instruction(step.arguments, state)

    def instructions(self, steps: Sequence[Step], state: State = frozenset()) -> tuple[str, ...]:
        """The instructions of a plan executed from ``state``, each in the state its step starts in."""
        texts = []
        for step in steps:
            texts.append(self.instruction(step, state))
            state = self.apply(state, step).state
        return tuple(texts)

    def step_from_instruction(self, text: str, scene: Scene) -> Step | None:
        """Inverse of :meth:`instruction`: the allowed step with an instruction exactly ``text`` (in any state)."""
        wanted = " ".join(text.lower().split())
        for step in self.grounded_steps(scene):
            if wanted in self.skills[step.skill].all_instructions(step.arguments):
                return step
        return None

    # -- symbolic model -------------------------------------------------------------------
    def apply(self, state: State, step: Step) -> Outcome:
        """Apply a step's effects when its preconditions hold (deletions first, then additions)."""
        skill = self.skills[step.skill]
        for template in skill.preconditions:
            fact = template.ground(step.arguments)
            holds = fact in state
            if holds == template.negated:
                return Outcome(state, applicable=False, useful=False)
        facts = set(state)
        for template in skill.effects:
            if template.negated:
                pattern = template.ground(step.arguments)
                facts = {f for f in facts if not fact_matches(pattern, f)}
        for template in skill.effects:
            if not template.negated:
                facts.add(template.ground(step.arguments))
        new_state = frozenset(facts)
        return Outcome(new_state, applicable=True, useful=new_state != state)

    def ground_goal(self, instruction: str, scene: Scene) -> Goal:
        """Facts the instruction asks for, in the order the instruction names them.

        A skill applies when every argument of one of its steps is a mentioned object (see
        :func:`mentioned_objects`) and either every word of its instruction template appears in
        the instruction or it is the only skill that fits the mentioned objects ("first the red
        cube, then the blue one: all into the bin" names no verb; with one skill relating a
        movable and a container there is one reading). Its positive effects become the goal. The
        goal is ordered when the instruction says so ("in that order", "then", "first"). Empty
        when nothing grounds, or when several skills fit and none is named: the planner then has
        no goal.
        """
        mentions = mentioned_objects(instruction, scene)
        words = set(_WORD.findall(instruction.lower()))
        fitting: dict[str, list[Step]] = {}
        for step in self.grounded_steps(scene):
            if all(a in mentions for a in step.arguments):
                fitting.setdefault(step.skill, []).append(step)
        named = [name for name in fitting if self.skills[name].keywords <= words]
        chosen = named or (list(fitting) if len(fitting) == 1 else [])
        ranked: list[tuple[tuple[int, ...], Fact]] = []
        for name in chosen:
            for step in fitting[name]:
                order = tuple(mentions[a] for a in step.arguments)
                for template in self.skills[name].effects:
                    if not template.negated:
                        ranked.append((order, template.ground(step.arguments)))
        goal: list[Fact] = []
        for _, fact in sorted(ranked, key=lambda item: item[0]):
            if fact not in goal:
                goal.append(fact)
        return Goal(tuple(goal), ordered=bool(_ORDER_WORDS.search(instruction.lower())) and len(goal) > 1)

    def rules_cannot_resolve(self, instruction: str, scene: Scene, goal: Goal) -> str:
        """Why the rule grounder's ``goal`` should not be trusted for ``instruction`` (empty: it can be).

        A deliberate, documented heuristic (the router between rules and the language model):
        no goal at all; an exclusion word ("except", "the rest"); a relation word ("nearest",
        "left"; not the bin's "near end" / "far end"); or a quantifier ("all", "every", "two")
        while some object of the goal's kind goes unmentioned ("first the red cube, then the
        blue one, then the green one: all of them into the bin" names every cube: the rules
        read it right)."""
        if not goal:
            return "the rules ground no goal"
        words = _WORD.findall(instruction.lower())
        for index, word in enumerate(words):
            following = words[index + 1] if index + 1 < len(words) else ""
            if word in _EXCLUSION_WORDS:
                return f"{word!r} (an exclusion)"
            if word in _RELATION_WORDS and following != "end":
                return f"{word!r} (a reference by position)"
        mentioned = mentioned_objects(instruction, scene)
        moved = {fact[1] for fact in goal.facts if len(fact) > 1}
        quantifier = next((w for w in words if w in _QUANTIFIER_WORDS), None)
        if quantifier is not None:
            categories = {scene.get(name).category for name in moved if scene.get(name) is not None}
            unmentioned = [o.name for o in scene.objects if o.category in categories and o.name not in mentioned]
            if unmentioned:
                return f"{quantifier!r} (a quantifier) while {', '.join(unmentioned)} go unmentioned"
        count = next((w for w in words if w in _COUNT_WORDS), None)
        if count is not None and _COUNT_WORDS[count] != len(moved):
            return f"{count!r} (a count) while the rules read {len(moved)} object(s)"
        return ""

    def state_from_steps_done(self, steps: Iterable[Step]) -> State:
        """The symbolic state after ``steps`` succeeded from an empty state."""
        state: State = frozenset()
        for step in steps:
            state = self.apply(state, step).state
        return state


def _combinations(categories: Sequence[str], scene: Scene) -> Iterator[tuple[str, ...]]:
    if not categories:
        yield ()
        return
    for scene_object in scene.objects:
        if scene_object.category == categories[0]:
            for rest in _combinations(categories[1:], scene):
                yield (scene_object.name, *rest)


def mentioned_objects(instruction: str, scene: Scene) -> dict[str, int]:
    """Objects an instruction names, with the word position of each mention (for ordering).

    An object is mentioned when its kind appears as a noun (``cube`` or ``cubes``) and, if the
    name has adjectives (``red_cube``), one of them appears in that noun's phrase: the words
    between the noun and the determiner that begins the phrase, lists included ("the red, green
    and blue cubes", "the red and the blue cubes"), never across another noun. An adjective
    outside every noun phrase names the one object that has it ("then the blue one", "starting
    with red"); shared by several objects it names none. A mention right after a negation
    ("not the blue one", "except the red cube") does not count.
    """
    words = _WORD.findall(instruction.lower())
    nouns = {form for o in scene.objects for form in o.noun_forms}
    found: dict[str, int] = {}
    in_phrase: set[int] = set()

    def negated(position: int) -> bool:
        return any(w in _NEGATIONS for w in words[max(0, position - 2) : position])

    for position, word in enumerate(words):
        if word not in nouns:
            continue
        phrase: dict[str, int] = {}
        start = position - 1
        while start >= 0 and words[start] not in nouns:
            if words[start] in _DETERMINERS:
                if start == 0 or words[start - 1] not in _LIST_WORDS:
                    break  # the phrase begins here; "the red and the blue cubes" continues
            elif words[start] not in _LIST_WORDS:
                phrase.setdefault(words[start], start)
            start -= 1
        in_phrase.update(phrase.values())
        phrase_start = start if start >= 0 and words[start] in _DETERMINERS else start + 1
        if negated(phrase_start):
            continue
        for scene_object in scene.objects:
            if word not in scene_object.noun_forms:
                continue
            if not scene_object.adjectives:
                found.setdefault(scene_object.name, position)
                continue
            hits = [phrase[a] for a in scene_object.adjectives if a in phrase]
            if hits and scene_object.name not in found:
                found[scene_object.name] = min(hits)
    for position, word in enumerate(words):
        if position in in_phrase or negated(position - 1 if position and words[position - 1] in _DETERMINERS else position):
            continue
        owners = [o.name for o in scene.objects if word in o.adjectives]
        if len(owners) == 1:
            found.setdefault(owners[0], position)
    return found


def load_domain(planner_section: Mapping[str, Any] | None, where: str = "robot.planner") -> Domain:
    """Validate a robot config's ``planner`` section; errors name the offending key."""
    if not isinstance(planner_section, Mapping) or not planner_section:
        raise DomainError(f"{where}: missing; the task planner needs the robot's skill vocabulary")
    categories = planner_section.get("categories")
    if not isinstance(categories, Mapping) or not categories:
        raise DomainError(f"{where}.categories: expected a mapping object kind -> category")
    for kind, category in categories.items():
        if not isinstance(kind, str) or not NAME_PATTERN.match(kind) or "_" in kind:
            raise DomainError(f"{where}.categories: kind {kind!r} must be one lower-case word")
        if not isinstance(category, str) or not NAME_PATTERN.match(category):
            raise DomainError(f"{where}.categories.{kind}: category {category!r} must be a lower-case name")
    skills_section = planner_section.get("skills")
    if not isinstance(skills_section, Mapping) or not skills_section:
        raise DomainError(f"{where}.skills: expected a mapping skill name -> definition")
    known_categories = set(categories.values())
    skills: dict[str, Skill] = {}
    for name, entry in skills_section.items():
        key = f"{where}.skills.{name}"
        if not isinstance(name, str) or not NAME_PATTERN.match(name) or name == "done":
            raise DomainError(f"{key}: skill names are lower-case identifiers other than 'done'")
        if not isinstance(entry, Mapping):
            raise DomainError(f"{key}: expected a mapping")
        unknown = set(entry) - {"arguments", "instruction", "preconditions", "effects", "description", "instructions_by_count"}
        if unknown:
            raise DomainError(f"{key}.{sorted(unknown)[0]}: unknown key")
        arguments = entry.get("arguments", [])
        if not isinstance(arguments, list) or any(a not in known_categories for a in arguments):
            raise DomainError(f"{key}.arguments: expected a list of categories from {sorted(known_categories)}")
        template = _instruction_template(entry.get("instruction"), len(arguments), f"{key}.instruction")
        count, by_count = _instructions_by_count(entry.get("instructions_by_count"), len(arguments), f"{key}.instructions_by_count")
        preconditions = tuple(
            FactTemplate.parse(t, len(arguments), f"{key}.preconditions") for t in _string_list(entry.get("preconditions", []), f"{key}.preconditions")
        )
        if any("*" in p.arguments for p in preconditions):
            raise DomainError(f"{key}.preconditions: no wildcards in preconditions")
        effects = tuple(FactTemplate.parse(t, len(arguments), f"{key}.effects") for t in _string_list(entry.get("effects", []), f"{key}.effects"))
        if not effects:
            raise DomainError(f"{key}.effects: a skill needs at least one effect (what it changes)")
        description = entry.get("description", "")
        skills[name] = Skill(name, tuple(arguments), template, preconditions, effects, str(description), count, by_count)
    domain = Domain(skills=skills, categories=dict(categories))
    objects = tuple(_string_list(planner_section.get("objects", []), f"{where}.objects"))
    for name in objects:
        if domain.scene([name]).objects == ():
            raise DomainError(f"{where}.objects: {name!r} is no lower-case name whose last word is a kind in categories")
    example = planner_section.get("example") or {}
    if not isinstance(example, Mapping):
        raise DomainError(f"{where}.example: expected a mapping with instruction and steps")
    example_instruction = str(example.get("instruction", ""))
    example_steps: list[Step] = []
    if example:
        example_objects = tuple(_string_list(example.get("objects", []), f"{where}.example.objects")) or objects
        scene = domain.scene(example_objects)
        errors = []
        for text in _string_list(example.get("steps", []), f"{where}.example.steps"):
            try:
                example_steps.append(domain.parse_step(text.strip().lower(), scene))
            except ValueError as error:
                errors.append(str(error))
        if errors or not example_steps or not example_instruction:
            raise DomainError(f"{where}.example: needs an instruction and valid steps ({'; '.join(errors) or 'no steps'})")
    return Domain(skills, dict(categories), objects, example_instruction, tuple(example_steps))


def _instruction_template(value: Any, arity: int, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DomainError(f"{where}: expected a non-empty template like 'put the {{0}} in the {{1}}'")
    used = {int(i) for i in _PLACEHOLDER.findall(value)}
    if used != set(range(arity)):
        raise DomainError(f"{where}: must use each of {{0}}..{{{arity - 1}}} (uses {sorted(used)})")
    return " ".join(value.lower().split())


def _instructions_by_count(value: Any, arity: int, where: str) -> tuple[FactTemplate | None, tuple[str, ...]]:
    if value is None:
        return None, ()
    if not isinstance(value, Mapping) or set(value) != {"count", "instructions"}:
        raise DomainError(f"{where}: expected a mapping with 'count' (a fact pattern) and 'instructions' (a list)")
    count_text = value["count"]
    if not isinstance(count_text, str):
        raise DomainError(f"{where}.count: expected a fact pattern like 'in(*, {{1}})'")
    count = FactTemplate.parse(count_text, arity, f"{where}.count", pattern=True)
    if not value["instructions"]:
        raise DomainError(f"{where}.instructions: expected a list of non-empty strings, one per count")
    templates = tuple(_instruction_template(t, arity, f"{where}.instructions[{i}]")
                      for i, t in enumerate(_string_list(value["instructions"], f"{where}.instructions")))
    return count, templates


def _string_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DomainError(f"{where}: expected a list of non-empty strings")
    return list(value)
