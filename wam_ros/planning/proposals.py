"""Parse and validate language-model proposals against the skill vocabulary: text is never executed.

The expected format is one step per line, ``skill(argument, argument)``, and a final line
``done``. List markers ("1.", "-", "Step 2:"), backticks, quotes around arguments and a
trailing period are tolerated; anything else makes the proposal invalid with a reason. Only
steps that :meth:`Domain.parse_step` accepts (syntax, skill, arity, objects, argument categories) come out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from wam_ros.planning.domain import Domain, Scene, Step

DONE = "done"
MAX_LINE_CHARS = 200

_LIST_MARKER = re.compile(r"^(?:[-*\u2022>]+\s*|\d{1,3}\s*[.):]\s*|step\s*\d{1,3}\s*[:.)-]?\s*)", re.IGNORECASE)
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


@dataclass(frozen=True)
class ParsedPlan:
    """Steps read from a proposal, whether it ended with ``done``, and every problem found."""

    steps: tuple[Step, ...] = ()
    done: bool = False
    errors: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.errors and (bool(self.steps) or self.done)


@dataclass
class _Line:
    step: Step | None = None
    done: bool = False
    error: str = ""
    skip: bool = False


def _normalise(line: str) -> str:
    text = line.strip()
    for _ in range(3):  # "1. - `pick_place(...)`." style nesting
        text = _LIST_MARKER.sub("", text).strip()
        text = text.strip("`").strip()
        text = text.rstrip(".;,").strip()
    return text.lower()


def _parse_line(line: str, domain: Domain, scene: Scene) -> _Line:
    if not line.strip() or line.strip().startswith("```"):
        return _Line(skip=True)
    if len(line) > MAX_LINE_CHARS:
        return _Line(error=f"line too long: {len(line)} characters (limit {MAX_LINE_CHARS})")
    if not _PRINTABLE.match(line.strip()):
        return _Line(error="non-printable or non-ASCII characters")
    text = _normalise(line)
    if not text:
        return _Line(skip=True)
    if text == DONE:
        return _Line(done=True)
    try:
        return _Line(step=domain.parse_step(text, scene))
    except ValueError as error:
        return _Line(error=str(error))


def parse_plan(text: object, domain: Domain, scene: Scene, max_steps: int = 16, max_chars: int = 4000) -> ParsedPlan:
    """A whole plan: steps up to ``done`` (text after it is ignored). Never raises on bad input."""
    if not isinstance(text, str):
        return ParsedPlan(errors=(f"not text: {type(text).__name__}",))
    steps: list[Step] = []
    errors: list[str] = []
    consumed = 0
    for line in text.splitlines():
        consumed += len(line) + 1
        if consumed > max_chars:
            errors.append(f"too long: more than {max_chars} characters before 'done'")
            break
        parsed = _parse_line(line, domain, scene)
        if parsed.skip:
            continue
        if parsed.done:
            return ParsedPlan(tuple(steps), True, tuple(errors))
        if parsed.error:
            errors.append(parsed.error)
            continue
        if len(steps) >= max_steps:
            errors.append(f"too many steps: more than {max_steps}")
            break
        steps.append(parsed.step)  # type: ignore[arg-type]
    if not steps and not errors:
        errors.append("empty: no step and no 'done'")
    return ParsedPlan(tuple(steps), False, tuple(errors))


def format_steps(steps: tuple[Step, ...] | list[Step], done: bool = True) -> str:
    """Steps in the format the parser reads (and the prompt's example shows)."""
    lines = [str(step) for step in steps]
    if done:
        lines.append(DONE)
    return "\n".join(lines)


@dataclass
class ProposalStats:
    """Counts of language-model proposals: how many, how many were dropped, and why."""

    proposals: int = 0
    invalid: int = 0
    truncated: int = 0  # cut by the token or time limit (judged on their complete lines)
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, valid: bool, reason: str = "") -> None:
        self.proposals += 1
        if not valid:
            self.invalid += 1
            key = reason.split(":", 1)[0]
            self.reasons[key] = self.reasons.get(key, 0) + 1

    def merge(self, other: "ProposalStats") -> None:
        self.proposals += other.proposals
        self.invalid += other.invalid
        self.truncated += other.truncated
        for key, count in other.reasons.items():
            self.reasons[key] = self.reasons.get(key, 0) + count

    @property
    def invalid_share(self) -> float:
        return self.invalid / self.proposals if self.proposals else 0.0
