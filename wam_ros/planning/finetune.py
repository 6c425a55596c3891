"""A low-rank adapter (LoRA) that teaches the planner's language model the instructions rules cannot resolve.

SmolLM2-135M prompted with worked examples does not read exclusions, relations or corrections:
scored over every plan of a three-cube scene it preferred putting the excluded cube in the bin
(docs/experiments/2026-12-07-planner-language-model.md). Finetuned on plans our own code writes
from templates (:mod:`wam_ros.planning.synthetic`, TRAIN wordings and other colours and
containers; the benchmark's HELD_OUT wordings are never seen), it does.

Cheap on a CPU by construction:

* the adapter (rank ``rank`` on every linear layer of the top ``layers`` transformer blocks)
  leaves the blocks below untouched, so their outputs for a training prompt never change:
  they are computed once per example, without gradients, and training runs only the top blocks
  (``cached_hidden_states``);
* the loss is taken only on the plan's tokens, so the vocabulary projection runs on those.

The adapter is saved small (float16 safetensors, a few MB) with a record of what it was trained
for; :func:`apply_adapter` merges it into the base model's weights when the planner loads, so
planning costs exactly what it cost before. ``wam-ros train-planner-lm`` runs it all.
"""
from __future__ import annotations

import hashlib
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from wam_ros.planning import learning
from wam_ros.planning.synthetic import Example, KINDS, relation_words

ADAPTER_FORMAT = "wam_ros.lora_adapter"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class AdapterConfig:
    rank: int = 16
    alpha: float = 32.0
    layers: int = 6  # the top this many transformer blocks get adapters
    targets: tuple[str, ...] = TARGETS


# -- prompts ------------------------------------------------------------------------------------------
def describe_object(name: str, category: str, words: Sequence[str] = ()) -> str:
    return f"{name} ({category}; {', '.join(words)})" if words else f"{name} ({category})"


def example_messages(system: str, example: Example, skill: str = "pick_place") -> list[dict[str, str]]:
    """Chat messages of a synthetic example, as the planner builds them for a live scene
    (:func:`wam_ros.planning.proposer.plan_messages` with ``compact=True``)."""
    from wam_ros.planning.proposer import running_lines

    words = relation_words(example.positions, example.movables, example.container)
    objects = [describe_object(m, "movable", words[m]) for m in example.movables] + [describe_object(example.container, "container")]
    lines = [f"Objects: {', '.join(objects)}"]
    if example.running is not None:
        done = [f"{skill}({m}, {example.container})" for m in example.running.done]
        planned = [f"{skill}({m}, {example.container})" for m in example.running.planned]
        lines += running_lines(example.running.instruction, done, planned)
    lines.append(f"Task: {example.instruction}")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


def example_target_lines(example: Example, skill: str = "pick_place") -> list[str]:
    """The plan as the pieces the planner scores: one ``step\\n`` per line, then ``done``."""
    return [f"{skill}({m}, {example.container})\n" for m in example.plan()] + ["done"]


# -- LoRA -------------------------------------------------------------------------------------------
def _lora_class():
    import torch
    from torch import nn

    class LoRALinear(nn.Module):
        """``base(x) + scale * B(A(x))``; B starts at zero, so training starts from the base model."""

        def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
            super().__init__()
            self.base = base
            self.scale = alpha / rank
            self.A = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
            self.B = nn.Parameter(torch.zeros(base.out_features, rank))

        def forward(self, x):
            return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale

    return LoRALinear


def _adapted_modules(model: Any, config: AdapterConfig) -> list[tuple[str, Any, str]]:
    """(qualified name, parent module, attribute) of every adapted linear layer."""
    layers = model.model.layers
    first = len(layers) - config.layers
    found = []
    for index in range(first, len(layers)):
        for parent_name in ("self_attn", "mlp"):
            parent = getattr(layers[index], parent_name)
            for target in config.targets:
                if hasattr(parent, target):
                    found.append((f"model.layers.{index}.{parent_name}.{target}", parent, target))
    return found


def base_signature(model: Any) -> dict[str, Any]:
    """What an adapter must match: architecture sizes and a hash of one weight row."""
    import torch

    config = model.config
    row = model.model.layers[-1].mlp.down_proj.weight[0, :64].detach().to(torch.float32).numpy().tobytes()
    return {"model_type": config.model_type, "layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "vocab": config.vocab_size, "weight_hash": hashlib.sha256(row).hexdigest()[:16]}


def apply_adapter(model: Any, directory: Path | str) -> dict[str, Any]:
    """Merge a saved adapter into ``model``'s weights (in place); returns its record.

    Raises ValueError when the adapter was trained for another base model."""
    import torch
    from safetensors.torch import load_file

    directory = Path(directory)
    record, weights_path = learning.read_record(directory, "adapter.json", "adapter.safetensors", ADAPTER_FORMAT,
                                                "planner language-model adapter")
    expected, actual = record["base"], base_signature(model)
    if expected != actual:
        raise ValueError(f"{directory}: trained for base model {expected}, this model is {actual}")
    config = AdapterConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["adapter"].items()})
    tensors = load_file(str(weights_path))
    with torch.no_grad():
        for name, parent, attribute in _adapted_modules(model, config):
            linear = getattr(parent, attribute)
            a, b = tensors[f"{name}.A"].to(torch.float32), tensors[f"{name}.B"].to(torch.float32)
            linear.weight += (config.alpha / config.rank) * (b @ a).to(linear.weight.dtype)
    return record


# -- training ---------------------------------------------------------------------------------------
@dataclass
class Encoded:
    hidden: Any  # (L, hidden) float32: the output of the blocks below the adapted ones
    targets: list[int]  # token ids of the plan
    start: int  # index of the plan's first token in the sequence


def encode_examples(model: Any, tokenizer_model: Any, system: str, examples: Sequence[Example], config: AdapterConfig,
                    progress: Callable[[int], None] | None = None) -> list[Encoded]:
    """Run the frozen lower blocks once per example (see the module docstring)."""
    import torch

    inner = model.model
    first = len(inner.layers) - config.layers
    encoded = []
    with torch.inference_mode():
        for example in examples:
            prompt = tokenizer_model.encode(tokenizer_model.chat_prompt(example_messages(system, example)), first=True)
            plan: list[int] = []
            for line in example_target_lines(example):
                plan += list(tokenizer_model.encode(line))
            ids = torch.tensor([list(prompt) + plan])
            hidden = inner.embed_tokens(ids)
            positions = torch.arange(ids.shape[1]).unsqueeze(0)
            rotary = inner.rotary_emb(hidden, position_ids=positions)
            mask = _causal_mask(inner, hidden, positions)
            for layer in inner.layers[:first]:
                hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions)
            encoded.append(Encoded(hidden[0].clone(), plan, len(prompt)))
            if progress is not None:
                progress(1)
    return encoded


def _causal_mask(inner: Any, hidden: Any, positions: Any) -> Any:
    from transformers.masking_utils import create_causal_mask

    return create_causal_mask(config=inner.config, inputs_embeds=hidden, attention_mask=None, cache=None, position_ids=positions)


def _batch_loss(model: Any, batch: Sequence[Encoded], config: AdapterConfig):
    import torch

    inner = model.model
    first = len(inner.layers) - config.layers
    width = max(e.hidden.shape[0] for e in batch)
    hidden = torch.zeros(len(batch), width, batch[0].hidden.shape[1])
    for i, e in enumerate(batch):
        hidden[i, : e.hidden.shape[0]] = e.hidden  # right padding: causal attention never looks at it
    positions = torch.arange(width).unsqueeze(0)
    rotary = inner.rotary_emb(hidden, position_ids=positions)
    mask = _causal_mask(inner, hidden, positions)
    for layer in inner.layers[first:]:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions)
    hidden = inner.norm(hidden)
    rows, cols, targets = [], [], []
    for i, e in enumerate(batch):
        for k, token in enumerate(e.targets):
            rows.append(i)
            cols.append(e.start + k - 1)  # the position that predicts plan token k
            targets.append(token)
    logits = model.lm_head(hidden[rows, cols])
    return torch.nn.functional.cross_entropy(logits.float(), torch.tensor(targets))


@dataclass
class FinetuneResult:
    steps: int
    cpu_s: float
    wall_s: float
    encode_cpu_s: float
    losses: list[float]


def finetune(model: Any, encoded: Sequence[Encoded], config: AdapterConfig, steps: int, batch_size: int = 8,
             learning_rate: float = 1e-3, seed: int = 0, progress: Callable[[int, float], None] | None = None) -> tuple[dict[str, Any], FinetuneResult]:
    """Train adapters on ``encoded`` examples; returns their tensors (unmerged) and the record."""
    import torch

    LoRALinear = _lora_class()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    wrapped = []
    for name, parent, attribute in _adapted_modules(model, config):
        lora = LoRALinear(getattr(parent, attribute), config.rank, config.alpha)
        setattr(parent, attribute, lora)
        wrapped.append((name, parent, attribute, lora))
    parameters = [p for *_, lora in wrapped for p in (lora.A, lora.B)]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    losses = []
    started, cpu_started = time.perf_counter(), time.process_time()
    order: list[int] = []
    try:
        for step in range(1, steps + 1):
            if len(order) < batch_size:
                order += rng.sample(range(len(encoded)), len(encoded))
            batch = [encoded[order.pop()] for _ in range(batch_size)]
            loss = _batch_loss(model, batch, config)
            learning.optimizer_step(loss, optimizer, schedule, step, losses, progress)
    finally:
        tensors = {}
        for name, parent, attribute, lora in wrapped:
            tensors[f"{name}.A"] = lora.A.detach().clone()
            tensors[f"{name}.B"] = lora.B.detach().clone()
            setattr(parent, attribute, lora.base)  # the model is left as it was
    result = FinetuneResult(len(losses), time.process_time() - cpu_started, time.perf_counter() - started, 0.0, losses)
    return tensors, result


def save_adapter(directory: Path, tensors: dict[str, Any], config: AdapterConfig, base: dict[str, Any], record: dict[str, Any]) -> None:
    import torch

    data = {"format": ADAPTER_FORMAT, "version": 1, "adapter": asdict(config), "base": base, **record}
    learning.write(Path(directory), "adapter.json", data, "adapter.safetensors",
                   {k: v.to(torch.float16).contiguous() for k, v in tensors.items()})


def training_kinds_summary(examples: Sequence[Example]) -> dict[str, int]:
    return {kind: sum(e.kind == kind for e in examples) for kind in KINDS}
