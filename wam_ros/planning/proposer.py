"""The language model as a proposal source: sampled decompositions and step likelihoods.

The prompt (chat format) lists the robot's skills, an optional worked example from the robot
config, the scene's objects and the instruction; the model answers one step per line. At the
start of a planning call it samples whole decompositions; each is parsed and validated
(:mod:`wam_ros.planning.proposals`), invalid ones are dropped and counted. A sample cut by the
token or time limit is judged on its complete lines only, not at all without one (and is
counted as truncated either way). During the search
the valid ones supply candidate next steps, and the model's log-likelihood of each candidate
line after the plan prefix becomes the search prior.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from wam_ros.planning.domain import Domain, Scene, Step
from wam_ros.planning.language_model import LanguageModel
from wam_ros.planning.mcts import Action
from wam_ros.planning.proposals import DONE, ProposalStats, format_steps, parse_plan


@dataclass(frozen=True)
class ProposalConfig:
    samples: int = 4  # decompositions sampled per planning call
    temperature: float = 0.7
    max_new_tokens: int = 64
    seed: int = 0


def system_message(domain: Domain, compact: bool = False) -> str:
    if compact:  # what a finetuned adapter was trained with (wam_ros.planning.finetune)
        signatures = ", ".join(f"{s.name}({', '.join(s.argument_categories)})" for s in domain.skills.values())
        return f"Robot skills: {signatures}. Plan one step per line, then done."
    lines = ["You plan tasks for a robot arm. Its skills:"]
    for skill in domain.skills.values():
        signature = f"{skill.name}({', '.join(skill.argument_categories)})"
        lines.append(f"- {signature}: {skill.description or skill.instruction_template.format(*skill.argument_categories)}")
    lines.append("Answer with one step per line, written as skill(object, object), using only these skills and the listed objects. End with the line: done")
    return "\n".join(lines)


@dataclass(frozen=True)
class RunningTask:
    """The task running when a new instruction arrives (a correction is read against it)."""

    instruction: str
    done: tuple[Step, ...]
    planned: tuple[Step, ...]


def running_lines(instruction: str, done: Sequence[str], planned: Sequence[str]) -> list[str]:
    return [f"Running task: {instruction}", f"Done: {', '.join(done) or 'nothing'}", f"Planned: {', '.join(planned) or 'nothing'}"]


def task_message(instruction: str, scene: Scene, words: Mapping[str, Sequence[str]] | None = None, running: RunningTask | None = None) -> str:
    """The user turn: the objects (with the scene monitor's relation words), the running task, the instruction."""
    words = words or {}
    objects = ", ".join(f"{o.name} ({o.category}; {', '.join(words[o.name])})" if words.get(o.name) else f"{o.name} ({o.category})"
                        for o in scene.objects)
    lines = [f"Objects: {objects}"]
    if running is not None:
        lines += running_lines(running.instruction, [str(s) for s in running.done], [str(s) for s in running.planned])
    lines.append(f"Task: {instruction}")
    return "\n".join(lines)


def plan_messages(domain: Domain, instruction: str, scene: Scene, words: Mapping[str, Sequence[str]] | None = None,
                  running: RunningTask | None = None, compact: bool = False) -> list[dict[str, str]]:
    """Chat messages for planning ``instruction`` in ``scene`` (the model answers as assistant).

    ``compact``: the short form a finetuned adapter was trained on (no worked example)."""
    messages = [{"role": "system", "content": system_message(domain, compact)}]
    if domain.example_steps and not compact:
        example_objects = sorted({a for step in domain.example_steps for a in step.arguments})
        example_scene = domain.scene(example_objects)
        messages.append({"role": "user", "content": task_message(domain.example_instruction, example_scene)})
        messages.append({"role": "assistant", "content": format_steps(domain.example_steps)})
    messages.append({"role": "user", "content": task_message(instruction, scene, words, running)})
    return messages


class LanguageModelProposals:
    """Proposals for one planning call (one instruction in one scene); implements ProposalSource."""

    def __init__(
        self, model: LanguageModel, domain: Domain, instruction: str, scene: Scene, config: ProposalConfig, max_time_s: float | None = None,
        words: Mapping[str, Sequence[str]] | None = None, running: RunningTask | None = None,
    ) -> None:
        self.model = model
        self.domain = domain
        self.scene = scene
        self.stats = ProposalStats()
        self._scores: dict[tuple[Step, ...], dict[str, float]] = {}
        compact = bool(getattr(model, "adapter", None))
        self.prompt_ids = model.encode(model.chat_prompt(plan_messages(domain, instruction, scene, words, running, compact)), first=True)
        self.plans: list[tuple[Step, ...]] = []
        seed = config.seed ^ zlib.crc32(instruction.encode())
        self.samples = model.sample(
            self.prompt_ids, config.samples, config.max_new_tokens, config.temperature, seed, stop=[DONE], max_time_s=max_time_s
        )
        for sample in self.samples:
            text = sample.text
            if not sample.finished:  # cut by a limit: its last line is unfinished, judge the complete ones
                self.stats.truncated += 1
                if "\n" not in text:
                    continue  # nothing complete to judge
                text = text.rsplit("\n", 1)[0]
            parsed = parse_plan(text, domain, scene)
            self.stats.add(parsed.valid, parsed.errors[0] if parsed.errors else "")
            if parsed.valid and parsed.steps not in self.plans:
                self.plans.append(parsed.steps)

    def _context(self, prefix: tuple[Step, ...]) -> tuple[int, ...]:
        ids = self.prompt_ids
        for step in prefix:  # one piece per line, so a child's context extends its parent's tokens
            ids = ids + self.model.encode(f"{step}\n")
        return ids

    def candidates(self, prefix: tuple[Step, ...]) -> list[Step]:
        out: list[Step] = []
        for plan in self.plans:
            if len(plan) > len(prefix) and plan[: len(prefix)] == prefix and plan[len(prefix)] not in out:
                out.append(plan[len(prefix)])
        return out

    def log_likelihoods(self, prefix: tuple[Step, ...], actions: Sequence[Action]) -> list[float]:
        """Log-likelihood of each action line after ``prefix`` (remembered: a plan's score reuses its prefixes')."""
        lines = [DONE if action is None else f"{action}\n" for action in actions]
        known = self._scores.setdefault(prefix, {})
        missing = [line for line in dict.fromkeys(lines) if line not in known]
        if missing:
            known.update(zip(missing, self.model.log_likelihoods(self._context(prefix), missing)))
        return [known[line] for line in lines]

    def plan_log_likelihood(self, steps: Sequence[Step], alternatives: Callable[[tuple[Step, ...]], Sequence[Action]] | None = None) -> float:
        """Log-likelihood of the whole plan, ``done`` included. ``alternatives(prefix)`` names the
        other lines worth scoring in the same batched call (the search's other actions)."""
        total, prefix = 0.0, ()
        for action in (*steps, None):
            others = list(alternatives(prefix)) if alternatives is not None else []
            total += self.log_likelihoods(prefix, [action, *[a for a in others if a != action]])[0]
            if action is not None:
                prefix = (*prefix, action)
        return total
