"""What the planner's learned parts share, the scene detector (:mod:`wam_ros.planning.success`) and the
language-model adapter (:mod:`wam_ros.planning.finetune`): their weights directory (safetensors beside
a JSON record of the format and config) and their optimiser step."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def read_record(directory: Path, record_name: str, weights_name: str, fmt: str, what: str) -> tuple[dict[str, Any], Path]:
    """The record of the weights directory ``directory`` (its format checked to be ``fmt``) and the
    path of its weights; ``what`` names the kind of directory in the error when a file is missing."""
    record_path, weights_path = directory / record_name, directory / weights_name
    if not record_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{directory}: not a {what} (needs {record_name} and {weights_name})")
    record = json.loads(record_path.read_text())
    if record.get("format") != fmt:
        raise ValueError(f"{record_path}: format {record.get('format')!r}, expected {fmt!r}")
    return record, weights_path


def write(directory: Path, record_name: str, record: dict[str, Any], weights_name: str, tensors: dict[str, Any]) -> None:
    """Write ``tensors`` and ``record`` as a weights directory, atomically, readable by others
    (a checkpoint directory is shipped in the repository)."""
    from safetensors.torch import save_file

    from wam_ros.files import atomic_directory

    with atomic_directory(directory) as staging:
        save_file(tensors, str(staging / weights_name))
        (staging / record_name).write_text(json.dumps(record, indent=2) + "\n")
        os.chmod(staging, 0o755)
        for path in staging.iterdir():
            os.chmod(path, 0o644)


def optimizer_step(loss: Any, optimizer: Any, schedule: Any, step: int, losses: list[float],
                   progress: Callable[[int, float], None] | None) -> None:
    """Backpropagate ``loss``, step the optimiser and its schedule, append the loss to ``losses`` and report it."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    losses.append(loss.item())
    if progress is not None:
        progress(step, losses[-1])
