"""The model in a child process answers like the runtime in this process, reports errors, and ends cleanly."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from wam_ros.inference.model_process import ModelProcess, ModelProcessError
from wam_ros.inference.timing import StageTimes

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "cpu-small-pick-place"
INSTRUCTION = "put the red cube in the bin"


@pytest.fixture(scope="module")
def model():
    process = ModelProcess(CHECKPOINT, device="cpu", cpu_threads=1)
    yield process
    process.close()


def observation(config, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 255, (config.n_obs_frames, config.image_height, config.image_width, 3), dtype=np.uint8) for c in config.cameras}
    state = rng.normal(0.0, 0.1, (config.n_obs_frames, len(config.state_names))).astype(np.float32)
    return images, state


def test_policy_matches_the_runtime_in_this_process(model):
    import torch

    from wam_ros.model import load_policy

    torch.set_num_threads(1)
    local = load_policy(CHECKPOINT)
    local.warmup()
    assert model.model_id == local.model_id and model.device == "cpu"
    images, state = observation(model.config)
    prefix = np.zeros((3, model.config.action_dim))
    # Both runtimes are seeded alike and warmed up alike: the same draws give the same chunk.
    actions, timing = model.policy(images, state, INSTRUCTION, frozen_prefix=prefix)
    expected = local.policy(images, state, INSTRUCTION, frozen_prefix=prefix)
    np.testing.assert_allclose(actions, expected, atol=1e-5)
    assert actions.shape == (model.config.horizon, model.config.action_dim)
    assert timing.compute_s > 0 and timing.transfer_s >= 0 and timing.lock_wait_s >= 0
    (frames, progress), _ = model.imagine(images, state, INSTRUCTION, actions)
    assert set(frames) == set(model.config.cameras) and np.isfinite(progress)


def test_a_failing_call_raises_with_the_reason_and_the_process_serves_on(model):
    images, state = observation(model.config)
    with pytest.raises(ModelProcessError, match="frozen_prefix"):
        model.policy(images, state, INSTRUCTION, frozen_prefix=np.zeros((100, 2)))
    actions, _ = model.policy(images, state, INSTRUCTION)
    assert np.all(np.isfinite(actions))


def test_a_bad_checkpoint_fails_with_its_path_and_close_ends_the_child(tmp_path):
    with pytest.raises(ModelProcessError, match=str(tmp_path / "missing")):
        ModelProcess(tmp_path / "missing")
    process = ModelProcess(CHECKPOINT, device="cpu", cpu_threads=1)
    assert process.alive
    process.close()
    assert not process.alive
    with pytest.raises(ModelProcessError, match="closed"):
        process.policy(*observation(process.config), INSTRUCTION)


def test_stage_times_percentiles():
    stages = StageTimes(window=3)
    for value in (0.010, 0.020, 0.030, 0.040):  # the first falls out of the window
        stages.add(model_compute=value, publish=value / 10)
    summary = stages.summary_ms()
    assert summary["model_compute_ms_p50"] == pytest.approx(30.0)
    assert summary["publish_ms_p99"] == pytest.approx(3.98)
    assert np.isnan(stages.percentile_ms("unknown", 50))


def test_stage_times_read_while_another_thread_adds_new_stages():
    """The node's sensor and chunk callbacks add while its diagnostics timer reads."""
    stages = StageTimes(window=5)
    errors: list[BaseException] = []

    def add_many() -> None:
        try:
            for i in range(3000):
                stages.add(**{f"stage_{i}": 0.001, "image_conversion": 0.002})
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    adder = threading.Thread(target=add_many)
    adder.start()
    while adder.is_alive():
        try:
            stages.summary_ms()
            stages.percentile_ms("image_conversion", 99)
        except RuntimeError as error:
            errors.append(error)
            break
    adder.join()
    assert not errors
    assert len(stages.names()) == 3001 and stages.percentile_ms("image_conversion", 50) == pytest.approx(2.0)
