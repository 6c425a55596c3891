"""Training on freshly generated sim episodes: checkpoints, resume, finetuning, Ctrl-C, evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wam_ros.cli import main as wam_ros
from wam_ros.data import DatasetWriter
from wam_ros.model import load_policy
from wam_ros.model import train as train_module
from wam_ros.model.checkpoint import load_checkpoint
from wam_ros.model.evaluate import contact_sheet, evaluate_closed_loop, evaluate_offline, offline_samples
from wam_ros.model.train import TrainOptions, Trainer

TINY_PRESET = """
model:
  horizon: 8
  execute_steps: 4
  n_obs_frames: 2
  future_offset: 4
  autoencoder: {kind: conv, stem_stride: 4, channels: [8, 16], latent_channels: 4}
  transformer: {width: 32, depth: 2, heads: 2, patch_size: 3}
  diffusion: {policy_steps: 2, video_steps: 2}
train:
  batch_size: 8
  steps: 6
  ae_steps: 4
  ae_batch_size: 4
  warmup_steps: 2
  checkpoint_every: 3
  num_threads: 1
"""


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory) -> Path:
    """Two fresh pick-place expert episodes from the MuJoCo sim, plus one of them without actions."""
    from wam_ros.robot import load_robot_config
    from wam_ros.sim import TabletopEnv
    from wam_ros.sim.demos import dataset_info, record_demo

    root = tmp_path_factory.mktemp("sim") / "demos"
    robot = load_robot_config("panda_sim")
    with TabletopEnv(robot) as env:
        writer = DatasetWriter(root, dataset_info(robot, env))
        episodes = [record_demo(env, "pick_place", seed, max_steps=60).episode for seed in (0, 1)]  # long enough to grasp
    for episode in episodes:
        writer.add(episode)
    episodes[1].actions = None  # video-only cotraining data
    writer.add(episodes[1])
    return root


GOAL_PRESET = TINY_PRESET.replace("  transformer:", "  action_space: tcp\n  goal: {camera: front, image_size: 24, count: 4, channels: 8, hidden: 32}\n  transformer:").replace(
    "  warmup_steps: 2\n", "  warmup_steps: 2\n  goal_steps: 6\n  goal_warmup_steps: 3\n  goal_attempts: 2\n  goal_accept_ratio: 0.0\n"
)  # six steps cannot localise anything: with ratio 0 every attempt is rejected, so the retry runs too


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "tiny.yaml"
    path.write_text(TINY_PRESET)
    return path


@pytest.fixture(scope="module")
def trained(sim_dataset, preset, tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("run") / "checkpoint"
    Trainer(TrainOptions(data=[sim_dataset], out=out, preset=str(preset), quiet=True)).run()
    torch.set_num_threads(threads)
    return out


def _training(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())["training"]


def test_training_on_fresh_sim_episodes_writes_a_usable_checkpoint(trained, sim_dataset):
    record = _training(trained)
    assert record["transformer_step"] == 6 and record["autoencoder_step"] == 4 and record["finished"]
    assert record["dataset"]["episodes"] == 3 and record["dataset"]["labelled_frames"] < record["dataset"]["frames"]
    assert set(record["cpu_seconds"]) >= {"setup", "autoencoder", "encode", "transformer"}
    assert all(np.isfinite(v) for v in record["losses"].values())
    runtime = load_policy(trained)
    assert runtime.config.cameras == ["front", "wrist"] and runtime.config.image_height == 96
    from wam_ros.data import EpisodeDataset

    episode = EpisodeDataset(sim_dataset).episode(0)
    images = {c: np.asarray(episode.images[c][:2]) for c in runtime.config.cameras}
    chunk = runtime.policy(images, episode.states[:2], episode.instruction)
    assert chunk.shape == (8, 8) and np.all(np.isfinite(chunk))


def test_resume_continues_from_the_saved_step(trained, sim_dataset, preset):
    Trainer(TrainOptions(data=[sim_dataset], out=trained, preset=str(preset), resume=True, steps=9, quiet=True)).run()
    record = _training(trained)
    assert record["transformer_step"] == 9 and record["train_config"]["steps"] == 9


def test_init_finetunes_and_keeps_the_autoencoder(trained, sim_dataset, preset, tmp_path):
    out = tmp_path / "finetuned"
    Trainer(TrainOptions(data=[sim_dataset], out=out, preset=str(preset), init=trained, steps=2, quiet=True)).run()
    before, after = load_checkpoint(trained).model, load_checkpoint(out).model
    assert all(torch.equal(a, b) for a, b in zip(before.autoencoder.state_dict().values(), after.autoencoder.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(before.transformer.state_dict().values(), after.transformer.state_dict().values()))
    assert _training(out)["init"] == str(trained)


@pytest.fixture(scope="module")
def takeover_dataset(sim_dataset, tmp_path_factory) -> Path:
    """One expert episode dressed as a recorded takeover: the policy drove the first third, an
    operator took over (TELEOP after AUTONOMY) for the second, the bridge held the arm in the last."""
    from wam_ros.data import EpisodeDataset
    from wam_ros.data.episodes import SOURCE_HOLD, SOURCE_OPERATOR, SOURCE_POLICY

    dataset = EpisodeDataset(sim_dataset)
    episode = dataset.episode(0)
    third = episode.length // 3
    episode.frame_sources = np.repeat(np.array([SOURCE_POLICY, SOURCE_OPERATOR, SOURCE_HOLD], np.int8), [third, third, episode.length - 2 * third])
    episode.intervention = episode.frame_sources == SOURCE_OPERATOR
    episode.source = "rosbag:takeover"
    root = tmp_path_factory.mktemp("takeovers") / "data"
    DatasetWriter(root, dataset.info).add(episode)
    return root


def test_operator_frames_are_drawn_by_their_weight(sim_dataset, takeover_dataset, preset):
    from wam_ros.data import EpisodeDataset
    from wam_ros.data.episodes import SOURCE_HOLD, SOURCE_POLICY
    from wam_ros.model.config import load_preset
    from wam_ros.model.data import TrainingFrames

    config, _ = load_preset(str(preset))
    info = EpisodeDataset(sim_dataset).info
    config.bind_dataset(list(info.cameras), (96, 96), info.state_names, info.action_names, info.fps, info.robot)
    frames = TrainingFrames([EpisodeDataset(sim_dataset), EpisodeDataset(takeover_dataset)], config)
    assert frames.policy_weights(1.0, 1.0) is not None  # HOLD frames never anchor a policy sample
    weights = frames.policy_weights(4.0, 0.0)
    assert np.all(weights[frames.intervention] == 4.0) and frames.intervention.sum() > 0
    assert np.all(weights[(frames.sources == SOURCE_POLICY) | (frames.sources == SOURCE_HOLD)] == 0.0)
    assert np.all(weights[~frames.has_actions] == 0.0) and np.all(weights[frames.has_actions & (frames.sources == 0)] == 1.0)
    draws = np.random.default_rng(0).choice(frames.num_frames, 20000, p=weights / weights.sum())
    share = np.mean(frames.intervention[draws])
    expected = weights[frames.intervention].sum() / weights.sum()
    assert abs(share - expected) < 0.02 and expected > 2 * frames.intervention.sum() / weights.astype(bool).sum()
    with pytest.raises(Exception, match="weight 0"):
        TrainingFrames([EpisodeDataset(takeover_dataset)], config).policy_weights(0.0, 0.0)


def test_finetune_on_weighted_takeovers_changes_the_weights(trained, sim_dataset, takeover_dataset, tmp_path, capsys):
    out = tmp_path / "dagger"
    assert wam_ros(["train", "--init", str(trained), "--data", str(sim_dataset), "--data", str(takeover_dataset), "--out", str(out),
                    "--steps", "3", "--operator-weight", "4", "--policy-weight", "0"]) == 0
    assert "interventions x4" in capsys.readouterr().out
    record = _training(out)
    assert record["frame_weights"]["operator"] == 4.0 and record["frame_weights"]["policy"] == 0.0
    assert 0 < record["frame_weights"]["intervention_sample_share"] < 1 and len(record["dataset"]["datasets"]) == 2
    before, after = load_checkpoint(trained).model, load_checkpoint(out).model
    assert not all(torch.equal(a, b) for a, b in zip(before.transformer.state_dict().values(), after.transformer.state_dict().values()))
    # A resumed run draws as it began, whatever the command line says now.
    assert wam_ros(["train", "--data", str(sim_dataset), "--data", str(takeover_dataset), "--out", str(out), "--resume", "--steps", "4"]) == 0
    assert _training(out)["frame_weights"]["operator"] == 4.0 and _training(out)["transformer_step"] == 4


def test_ctrl_c_saves_a_checkpoint_that_resumes(sim_dataset, preset, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = train_module.training_loss

    def interrupted_on_third_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "training_loss", interrupted_on_third_step)
    out = tmp_path / "interrupted"
    trainer = Trainer(TrainOptions(data=[sim_dataset], out=out, preset=str(preset), quiet=True))
    trainer.run()
    assert trainer.interrupted
    record = _training(out)
    assert record["transformer_step"] == 2 and not record["finished"] and record["stop_reason"] == "interrupted"
    load_policy(out)  # what was done is usable
    monkeypatch.setattr(train_module, "training_loss", real_loss)
    Trainer(TrainOptions(data=[sim_dataset], out=out, preset=str(preset), resume=True, quiet=True)).run()
    assert _training(out)["transformer_step"] == 6 and _training(out)["finished"]


def test_cli_reports_bad_input_and_exits_2(tmp_path, capsys, preset):
    assert wam_ros(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"), "--preset", str(preset)]) == 2
    assert "not a dataset" in capsys.readouterr().err
    assert wam_ros(["train", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--resume", "--init", str(tmp_path)]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--sim-episodes", "2", "--task", "bin_three", "--phrasing", "reworded"], "with --whole-instruction"),
        (["--sim-episodes", "2", "--task", "pick_place", "--whole-instruction", "--phrasing", "reworded"], "bin_three only"),
        (["--sim-episodes", "2", "--sim", "camera_jitter=0.03"], "scene override (--sim, --sim-config): camera_jitter: unknown key"),
        (["--sim-episodes", "2", "--sim", "camera_rotation_jitter_deg={front: [3, 3]}"], "camera_rotation_jitter_deg: expected a mapping"),
    ],
)
def test_eval_refuses_a_phrasing_it_cannot_apply(trained, tmp_path, capsys, options, message):
    assert wam_ros(["eval", "--checkpoint", str(trained), "--out", str(tmp_path / "eval"), *options]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "eval").exists()


def test_evaluation_offline_closed_loop_and_contact_sheet(trained, sim_dataset, tmp_path):
    from wam_ros.data import EpisodeDataset

    runtime = load_policy(trained)
    samples = offline_samples(runtime, EpisodeDataset(sim_dataset), 2)
    report = evaluate_offline(runtime, samples, [1, 2], quiet=True)
    assert set(report.policy_action_rmse_by_steps) == {1, 2}
    assert report.copy_last_frame_pixel_mse >= 0 and report.forward_pixel_mse > 0 and 0 <= report.progress_mae <= 1
    contact_sheet(runtime, samples, tmp_path / "sheet.png")
    import cv2

    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet.shape[1] == 2 * 4 * 96 and sheet.shape[0] == 24 + 2 * 2 * 2 * 96
    closed = evaluate_closed_loop(runtime, "pick_place", [7], max_steps=8, quiet=True)
    assert closed.steps == [8] and closed.successes == [False] and closed.policy_calls == 2
    elsewhere = evaluate_closed_loop(runtime, "pick_place", [7], max_steps=1, quiet=True,
                                     sim_overrides={"cube_region_min_xy_m": [0.4, 0.3], "cube_region_max_xy_m": [0.62, 0.44]})
    assert elsewhere.steps == [1]
    assert closed.subtasks_done == [0] and closed.subtask_count == 1
    whole = evaluate_closed_loop(runtime, "bin_three", [7], max_steps=4, use_subtasks=False, quiet=True)
    assert whole.subtasks_done == [0] and whole.subtask_count == 3 and whole.steps == [4]
    assert closed.placement_errors_m == [] and whole.placement_errors_m == []  # a bin is no exact place
    from wam_ros.sim.config import SimConfig
    from wam_ros.sim.tasks import make_task, slot_offset

    inserted = evaluate_closed_loop(runtime, "insert", [7], max_steps=2, quiet=True)
    spec = make_task("insert", SimConfig()).sample(7)  # the cube has not moved in two steps: its distance from the slot
    start = spec.cube_positions[spec.cubes[0]]
    assert inserted.placement_errors_m == [pytest.approx(float(np.linalg.norm(slot_offset(spec, start))), abs=0.003)]


def test_closed_loop_gives_the_model_the_reworded_instruction(trained, monkeypatch):
    from wam_ros.sim.config import SimConfig
    from wam_ros.sim.tasks import episode_instruction, make_task

    runtime = load_policy(trained)
    given: list[str] = []
    policy = runtime.policy

    def recording_policy(images, state, instruction, **kwargs):
        given.append(instruction)
        return policy(images, state, instruction, **kwargs)

    monkeypatch.setattr(runtime, "policy", recording_policy)
    spec = make_task("bin_three", SimConfig()).sample(7)
    evaluate_closed_loop(runtime, "bin_three", [7], max_steps=4, use_subtasks=False, quiet=True, phrasing="reworded")
    assert given and set(given) == {episode_instruction(spec, "reworded")} and spec.instruction not in given


def test_sigterm_saves_like_ctrl_c(sim_dataset, preset, tmp_path):
    """A supervisor's SIGTERM ends `wam-ros train` with a checkpoint and a resumable state."""
    import signal
    import subprocess
    import sys
    import time

    long_preset = tmp_path / "long.yaml"
    long_preset.write_text(preset.read_text().replace("steps: 6", "steps: 100000").replace("checkpoint_every: 3", "checkpoint_every: 2"))
    out = tmp_path / "terminated"
    command = [sys.executable, "-m", "wam_ros.cli", "train", "--data", str(sim_dataset), "--out", str(out), "--preset", str(long_preset)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / "resume" / "state.json").is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    record = _training(out)
    assert record["stop_reason"] == "interrupted" and record["transformer_step"] >= 2


def test_goal_and_tcp_model_survives_ctrl_c_in_the_goal_stage_resumes_retries_and_is_kept_by_init(sim_dataset, tmp_path, monkeypatch, capsys):
    goal_preset = tmp_path / "goal.yaml"
    goal_preset.write_text(GOAL_PRESET)
    calls = {"n": 0}
    real_loss = train_module.goal_loss

    def interrupted_on_third_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "goal_loss", interrupted_on_third_step)
    out = tmp_path / "goal"
    trainer = Trainer(TrainOptions(data=[sim_dataset], out=out, preset=str(goal_preset), quiet=True))
    trainer.run()
    assert trainer.interrupted
    record = _training(out)
    assert record["goal_step"] == 2 and not record.get("goal_done") and "transformer_step" not in record
    monkeypatch.setattr(train_module, "goal_loss", real_loss)
    Trainer(TrainOptions(data=[sim_dataset], out=out, preset=str(goal_preset), resume=True, quiet=True)).run()
    record = _training(out)
    assert record["goal_step"] == 6 and record["goal_done"] and record["transformer_step"] == 6 and record["finished"]
    assert "goal" in record["cpu_seconds"] and np.isfinite(record["goal_loss"])
    checks = record["goal_checks"]  # the interrupted first attempt finished after the resume, then one retry
    assert [c["attempt"] for c in checks] == [1, 2] and not any(c["accepted"] for c in checks)
    assert all(c["first_grasp_error_m"] > 0 and c["mean_position_error_m"] > 0 for c in checks)
    assert "did not lock onto the object in 2 attempts" in capsys.readouterr().err

    runtime = load_policy(out)
    from wam_ros.data import EpisodeDataset

    episode = EpisodeDataset(sim_dataset).episode(0)
    images = {c: np.asarray(episode.images[c][:2]) for c in runtime.config.cameras}
    estimate = runtime.locate(images, episode.states[:2], episode.instruction)
    assert np.all(np.isfinite(estimate.pick_position_m)) and np.all(np.isfinite(estimate.place_position_m))
    report = evaluate_offline(runtime, offline_samples(runtime, EpisodeDataset(sim_dataset), 2), [1], quiet=True)
    assert report.goal_pick_error_m is not None and report.goal_pick_error_m >= 0

    finetuned = tmp_path / "finetuned"
    Trainer(TrainOptions(data=[sim_dataset], out=finetuned, preset=str(goal_preset), init=out, steps=2, quiet=True)).run()
    before, after = load_checkpoint(out).model.goal.state_dict(), load_checkpoint(finetuned).model.goal.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_goal_steps_with_init_trains_the_localiser_on_and_keeps_the_old_one_if_that_is_better(sim_dataset, tmp_path, monkeypatch):
    goal_preset = tmp_path / "goal.yaml"
    goal_preset.write_text(GOAL_PRESET)
    base = tmp_path / "base"
    Trainer(TrainOptions(data=[sim_dataset], out=base, preset=str(goal_preset), steps=2, quiet=True)).run()
    before = load_checkpoint(base).model.goal.state_dict()
    for name, after_error_m, kept_new in (("rejected", 0.06, False), ("accepted", 0.04, True)):  # kept unless worse than before
        errors = iter([0.05, after_error_m])  # before, after
        monkeypatch.setattr(train_module, "subtask_start_goal_error", lambda *args, **kwargs: next(errors))
        out = tmp_path / name
        Trainer(TrainOptions(data=[sim_dataset], out=out, preset=str(goal_preset), init=base, steps=2, goal_steps=3, quiet=True)).run()
        record = _training(out)
        assert record["goal_step"] == 3 and record["goal_done"] and record["transformer_step"] == 2
        check = record["goal_checks"][-1]
        assert check["finetune"] and check["accepted"] is kept_new
        assert check["subtask_start_error_before_m"] == 0.05 and check["subtask_start_error_m"] == after_error_m
        after = load_checkpoint(out).model.goal.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before) is not kept_new


def test_holdout_episodes_are_a_seeded_fraction_and_none_for_small_datasets():
    from wam_ros.model.data import holdout_episodes

    held = holdout_episodes(150, 0.1, 20, seed=3)
    assert len(held) == 15 and len(set(held)) == 15 and held.min() >= 0 and held.max() < 150
    np.testing.assert_array_equal(held, holdout_episodes(150, 0.1, 20, seed=3))  # a resume holds out the same ones
    assert not np.array_equal(held, holdout_episodes(150, 0.1, 20, seed=4))
    assert len(holdout_episodes(19, 0.1, 20, seed=3)) == 0 and len(holdout_episodes(150, 0.0, 20, seed=3)) == 0
    assert len(holdout_episodes(3, 0.01, 2, seed=3)) == 1 and len(holdout_episodes(2, 0.9, 2, seed=3)) == 1  # one kept to train on


def test_the_localiser_never_trains_on_its_held_out_episodes_and_is_checked_on_them(sim_dataset, tmp_path, monkeypatch):
    goal_preset = tmp_path / "goal.yaml"
    goal_preset.write_text(GOAL_PRESET.replace("  goal_attempts: 2\n", "  goal_attempts: 1\n  goal_holdout_fraction: 0.3\n  goal_holdout_min_episodes: 2\n"))
    monkeypatch.setattr(train_module, "holdout_episodes", lambda *args: np.array([0]))  # the first demo (the third has no actions)
    trained_on, checked_on = [], []
    real_pixels, real_error = train_module.goal_pixels, train_module.first_grasp_error

    def recording_pixels(frames, anchors, *args, **kwargs):
        trained_on.append((frames, np.array(anchors)))
        return real_pixels(frames, anchors, *args, **kwargs)

    def recording_error(localiser, frames, *args, where=None, **kwargs):
        checked_on.append((frames, where))
        return real_error(localiser, frames, *args, where=where, **kwargs)

    monkeypatch.setattr(train_module, "goal_pixels", recording_pixels)
    monkeypatch.setattr(train_module, "first_grasp_error", recording_error)
    out = tmp_path / "held"
    Trainer(TrainOptions(data=[sim_dataset], out=out, preset=str(goal_preset), steps=1, quiet=True)).run()
    frames = trained_on[0][0]
    first_episode = np.arange(frames.num_frames) < frames.episode_first_frame[1]
    assert len(trained_on) == 6 and not any(first_episode[anchors].any() for _, anchors in trained_on)
    [(_, where)] = checked_on
    np.testing.assert_array_equal(where, first_episode)
    record = _training(out)
    assert record["goal_holdout_episodes"] == 1 and record["goal_checks"][-1]["checked_on"] == "1 held-out episodes"

    monkeypatch.setattr(train_module, "holdout_episodes", lambda *args: np.array([2]))  # action-free: nothing to check on there
    Trainer(TrainOptions(data=[sim_dataset], out=tmp_path / "fallback", preset=str(goal_preset), steps=1, quiet=True)).run()
    assert checked_on[-1][1] is None
    record = _training(tmp_path / "fallback")
    assert record["goal_holdout_episodes"] == 0 and record["goal_checks"][-1]["checked_on"].startswith("training episodes")


def _new_localiser(sim_dataset: Path, tmp_path: Path, goal_preset_text: str) -> tuple[Path, Path, Path]:
    """A checkpoint with the tiny goal preset, then ``--new-goal-localiser`` on it with ``goal_preset_text``:
    (the base checkpoint, the new one, the new preset)."""
    base = tmp_path / "base"
    (tmp_path / "goal.yaml").write_text(GOAL_PRESET)
    Trainer(TrainOptions(data=[sim_dataset], out=base, preset=str(tmp_path / "goal.yaml"), steps=1, quiet=True)).run()
    preset, out = tmp_path / "new.yaml", tmp_path / "new_goal"
    preset.write_text(goal_preset_text)
    assert wam_ros(["train", "--data", str(sim_dataset), "--out", str(out), "--preset", str(preset), "--init", str(base),
                    "--new-goal-localiser", "--goal-steps", "4", "--steps", "0", "--threads", "1"]) == 0  # the localiser alone
    return base, out, preset


def test_new_goal_localiser_replaces_the_checkpoints_localiser_by_the_presets_shape_and_keeps_the_rest(sim_dataset, tmp_path, capsys):
    base, out, bigger = _new_localiser(sim_dataset, tmp_path, GOAL_PRESET.replace("count: 4, channels: 8, hidden: 32", "count: 6, channels: 12, hidden: 16"))
    before, after = load_checkpoint(base), load_checkpoint(out)
    goal = after.model.config.goal
    assert (goal.camera, goal.count, goal.channels, goal.hidden) == ("front", 6, 12, 16)
    assert after.model.goal.keypoints.maps.out_channels == 6
    for part in ("autoencoder",):  # kept as it was
        old, new = getattr(before.model, part).state_dict(), getattr(after.model, part).state_dict()
        assert all(torch.equal(old[k], new[k]) for k in old)
    record = _training(out)
    assert record["new_goal_localiser"] and record["goal_step"] == 4 and record["goal_done"]
    assert "attempt" in record["goal_checks"][-1]  # the from-scratch check, not the finetune's comparison
    capsys.readouterr()

    assert wam_ros(["train", "--data", str(sim_dataset), "--out", str(tmp_path / "no_steps"), "--preset", str(bigger),
                    "--init", str(base), "--new-goal-localiser"]) == 2
    assert "give --goal-steps" in capsys.readouterr().err
    assert wam_ros(["train", "--data", str(sim_dataset), "--out", str(tmp_path / "no_init"), "--new-goal-localiser", "--goal-steps", "4"]) == 2
    assert "give --init" in capsys.readouterr().err


def test_a_calibrated_localiser_trains_saves_and_takes_the_camera_it_is_told(sim_dataset, tmp_path, capsys):
    from wam_ros.model.camera import TablePlaneCamera
    from wam_ros.robot import load_robot_config

    base, out, calibrated = _new_localiser(sim_dataset, tmp_path, GOAL_PRESET.replace("hidden: 32}", "hidden: 32, calibrated: true}"))
    after = load_checkpoint(out)
    assert after.model.config.goal.calibrated
    # the label scale the localiser casts its heights with is the checkpoint's normalisation
    assert np.allclose(after.model.goal.label_mean.numpy(), after.normalization.goal_mean)
    assert np.allclose(after.model.goal.label_std.numpy(), after.normalization.goal_std)

    runtime = load_policy(out)
    first = next(iter(json.loads(line) for line in (sim_dataset / "meta" / "episodes.jsonl").read_text().splitlines()))
    from wam_ros.data import EpisodeDataset

    episode = EpisodeDataset(sim_dataset).episode(first["episode_index"])
    n = runtime.config.n_obs_frames
    images, states = {c: episode.images[c][:n] for c in runtime.config.cameras}, episode.states[:n]
    nominal = runtime.locate(images, states, episode.instruction)
    robot = load_robot_config("panda_sim")
    camera = TablePlaneCamera.from_robot(robot, "front")
    raised = TablePlaneCamera(camera.fx, camera.fy, camera.cx, camera.cy, camera.position_m + np.array([0.0, 0.0, 0.05]),
                              camera.rotation, camera.width, camera.height)
    runtime.set_goal_camera(raised)
    moved = runtime.locate(images, states, episode.instruction)
    # the same image point cast from a camera 5 cm higher lands elsewhere on the same plane height
    assert moved.pick_position_m[2] == pytest.approx(nominal.pick_position_m[2], abs=1e-5)
    assert np.linalg.norm(moved.pick_position_m[:2] - nominal.pick_position_m[:2]) > 1e-3

    # the closed loop tells it each shifted episode's camera, or the nominal one
    told = []
    real_set = runtime.set_goal_camera
    runtime.set_goal_camera = lambda camera: (told.append(camera), real_set(camera))
    shift = {"camera_position_jitter_m": {"front": [0.03, 0.03, 0.03]}}
    evaluate_closed_loop(runtime, "pick_place", [7, 8], max_steps=1, quiet=True, sim_overrides=shift)
    assert len(told) == 2 and all(np.linalg.norm(c.position_m - camera.position_m) > 1e-4 for c in told)
    evaluate_closed_loop(runtime, "pick_place", [7], max_steps=1, quiet=True, sim_overrides=shift, camera_calibration="robot")
    assert len(told) == 3 and np.allclose(told[-1].vector(), camera.vector())
    with pytest.raises(ValueError, match="camera_calibration 'bogus'"):
        evaluate_closed_loop(runtime, "pick_place", [7], max_steps=1, quiet=True, camera_calibration="bogus")

    shifted_preset = tmp_path / "shifted.yaml"
    shifted_preset.write_text(calibrated.read_text().replace("  goal_steps: 6\n", "  goal_steps: 6\n  goal_augment_shift_px: 2\n"))
    capsys.readouterr()
    assert wam_ros(["train", "--data", str(sim_dataset), "--out", str(tmp_path / "refused"), "--preset", str(shifted_preset), "--init", str(base),
                    "--new-goal-localiser", "--goal-steps", "4", "--steps", "1"]) == 2
    assert "goal_augment_shift_px must be 0" in capsys.readouterr().err
