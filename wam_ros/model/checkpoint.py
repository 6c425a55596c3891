"""Checkpoints: safetensors weights + JSON config + JSON normalisation statistics (never pickle).

A checkpoint directory holds::

    model.safetensors     every weight (autoencoder.*, transformer.*), float32
    config.json           format, version, the model config, sha256 of model.safetensors, training summary
    normalization.json    statistics that map raw states/actions/latents to the network's scale
    resume/               optimizer + progress for ``wam-ros train --resume`` (not needed to run the model)

Files are written to temporary names and renamed, config.json last: it names the weights it
belongs to by their hash, so a torn write or files mixed from two checkpoints are detected.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wam_ros.files import write_atomic
from wam_ros.model.config import WamConfig, config_to_dict, model_config_from_dict
from wam_ros.model.data import Normalization
from wam_ros.model.network import WorldActionModel

FORMAT = "wam_ros.model"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
NORMALIZATION = "normalization.json"
RESUME = "resume"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, corrupt or inconsistent; the message says which file."""


@dataclass
class LoadedCheckpoint:
    model: WorldActionModel
    config: WamConfig
    normalization: Normalization
    weights_sha256: str
    meta: dict[str, Any]

    @property
    def model_id(self) -> str:
        return f"{self.config.name}-{self.weights_sha256[:12]}"


def save_checkpoint(directory: Path | str, model: WorldActionModel, normalization: Normalization, training: dict[str, Any] | None = None) -> str:
    """Write the three files of a checkpoint; returns the sha256 of the weights."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in model.state_dict().items()}
    blob = save(state)  # no metadata: safetensors orders it arbitrarily, and the bytes must be reproducible
    digest = hashlib.sha256(blob).hexdigest()
    write_atomic(directory / WEIGHTS, blob)
    write_atomic(directory / NORMALIZATION, json.dumps(normalization.to_json(), indent=1).encode())
    meta = {"format": FORMAT, "version": VERSION, "weights_sha256": digest, "model": config_to_dict(model.config), "training": training or {}}
    write_atomic(directory / CONFIG, json.dumps(meta, indent=2).encode())
    return digest


def read_config(directory: Path | str) -> tuple[WamConfig, dict[str, Any]]:
    """The model config and the whole config.json of a checkpoint, validated."""
    path = Path(directory) / CONFIG
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a wam_ros checkpoint, or an incomplete one)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: invalid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (format={meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')} is not supported (expected {VERSION})")
    try:
        config = model_config_from_dict(meta["model"])
        config.validate()
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid model config ({error})") from None
    return config, meta


def load_checkpoint(directory: Path | str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LoadedCheckpoint:
    """Load and check a checkpoint; every failure raises CheckpointError naming the file and the problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    directory = Path(directory)
    config, meta = read_config(directory)
    weights_path = directory / WEIGHTS
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: missing")
    blob = weights_path.read_bytes()
    try:
        state = load(blob)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{weights_path}: truncated or corrupt safetensors file ({len(blob)} bytes; {error})") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != meta.get("weights_sha256"):
        raise CheckpointError(
            f"{weights_path}: sha256 {digest[:12]} does not match the {meta.get('weights_sha256', '?')[:12]} recorded in {CONFIG}: "
            "the files come from different checkpoints or a write was interrupted"
        )
    try:
        model = WorldActionModel(config)
    except (RuntimeError, ValueError) as error:
        raise CheckpointError(f"{directory / CONFIG}: cannot build the model ({error})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} tensors the config needs ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
        if unexpected:
            parts.append(f"has {len(unexpected)} tensors the config does not know ({', '.join(unexpected[:4])}{', ...' if len(unexpected) > 4 else ''})")
        raise CheckpointError(f"{weights_path}: {'; '.join(parts)}: weights and {CONFIG} describe different models")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise CheckpointError(f"{weights_path}: tensor {name} has shape {tuple(state[name].shape)}, {CONFIG} needs {tuple(tensor.shape)}")
        if not torch.isfinite(state[name]).all():
            raise CheckpointError(f"{weights_path}: tensor {name} holds non-finite values")
    model.load_state_dict(state, strict=True)
    normalization = read_normalization(directory, config)
    model.to(device=device, dtype=dtype).eval()
    return LoadedCheckpoint(model, config, normalization, digest, meta)


def read_normalization(directory: Path, config: WamConfig) -> Normalization:
    path = directory / NORMALIZATION
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        normalization = Normalization.from_json(json.loads(path.read_text()))
        normalization.check(config)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}") from None
    return normalization


# -- resume state --------------------------------------------------------------------------------


def save_resume_state(directory: Path | str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], progress: dict[str, Any]) -> None:
    """Optimizer moments, extra tensors (EMA weights, RNG state) and JSON-able progress."""
    from safetensors.torch import save

    resume = Path(directory) / RESUME
    resume.mkdir(parents=True, exist_ok=True)
    optimizer_state = optimizer.state_dict()
    flat = {f"extra.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
    for index, slots in optimizer_state["state"].items():
        for slot, value in slots.items():
            flat[f"optimizer.{index}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
    write_atomic(resume / "state.safetensors", save(flat))
    write_atomic(resume / "state.json", json.dumps({"param_groups": optimizer_state["param_groups"], "progress": progress}, default=_json_default).encode())


def read_resume_progress(directory: Path | str) -> dict[str, Any]:
    """The progress record of a resumable training directory (config, steps, CPU time, RNG)."""
    path = Path(directory) / RESUME / "state.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: no resume state (train without --resume, or point --out at a training directory)")
    try:
        return json.loads(path.read_text())["progress"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: corrupt resume state ({error})") from None


def load_resume_state(directory: Path | str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore the optimizer in place; returns (extra tensors, progress)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    resume = Path(directory) / RESUME
    if not (resume / "state.json").is_file() or not (resume / "state.safetensors").is_file():
        raise CheckpointError(f"{resume}: no resume state (train without --resume, or point --out at a training directory)")
    try:
        flat = load((resume / "state.safetensors").read_bytes())
        meta = json.loads((resume / "state.json").read_text())
    except (SafetensorError, json.JSONDecodeError, ValueError) as error:
        raise CheckpointError(f"{resume}: corrupt resume state ({error})") from None
    slots: dict[int, dict[str, torch.Tensor]] = {}
    extra = {}
    for name, tensor in flat.items():
        kind, rest = name.split(".", 1)
        if kind == "extra":
            extra[rest] = tensor
        else:
            index, slot = rest.split(".", 1)
            slots.setdefault(int(index), {})[slot] = tensor
    try:
        optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{resume}: optimizer state does not fit this model ({error})") from None
    return extra, meta["progress"]


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")
