"""The episode dataset format: round trip, statistics, append, refusal to overwrite, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wam_ros.data import DatasetError, DatasetInfo, DatasetWriter, Episode, EpisodeDataset, SubtaskSpan

INFO = DatasetInfo(
    fps=10.0,
    robot="panda_sim",
    joint_names=[f"j{i}" for i in range(7)],
    state_names=[f"j{i}" for i in range(7)] + ["gripper"],
    action_names=[f"j{i}" for i in range(7)] + ["gripper"],
    cameras={"front": (8, 12), "wrist": (8, 8)},
)


def make_episode(length: int, seed: int, actions: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        task="pick_place",
        instruction="put the red cube in the bin",
        states=rng.normal(size=(length, 8)).astype(np.float32),
        actions=rng.normal(size=(length, 8)).astype(np.float32) if actions else None,
        images={
            "front": rng.integers(0, 255, (length, 8, 12, 3), dtype=np.uint8),
            "wrist": rng.integers(0, 255, (length, 8, 8, 3), dtype=np.uint8),
        },
        subtasks=[SubtaskSpan("reach", 0, length // 2), SubtaskSpan("place", length // 2, length)],
        success=True,
        seed=seed,
    )


def test_round_trip_is_exact(tmp_path):
    episodes = [make_episode(5, 0), make_episode(7, 1), make_episode(3, 2, actions=False)]
    writer = DatasetWriter(tmp_path, INFO)
    for episode in episodes:
        writer.add(episode)
    dataset = EpisodeDataset(tmp_path)
    assert len(dataset) == 3 and dataset.info == INFO
    for original, loaded in zip(episodes, dataset):
        np.testing.assert_array_equal(original.states, loaded.states)
        for camera in INFO.cameras:
            np.testing.assert_array_equal(original.images[camera], loaded.images[camera])
        assert loaded.subtasks == original.subtasks and loaded.success and loaded.seed == original.seed
        np.testing.assert_allclose(loaded.timestamps, np.arange(original.length) / 10.0)
        if original.actions is None:
            assert loaded.actions is None
        else:
            np.testing.assert_array_equal(original.actions, loaded.actions)
    info = json.loads((tmp_path / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 3 and info["total_frames"] == 15


def test_statistics_match_numpy(tmp_path):
    episodes = [make_episode(20, s) for s in range(3)]
    writer = DatasetWriter(tmp_path, INFO)
    for episode in episodes:
        writer.add(episode)
    stats = EpisodeDataset(tmp_path).stats
    states = np.concatenate([e.states for e in episodes])
    np.testing.assert_allclose(stats["observation.state"]["mean"], states.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats["observation.state"]["std"], states.std(0), atol=1e-5)
    np.testing.assert_allclose(stats["observation.state"]["min"], states.min(0), atol=1e-6)


def test_reopening_appends_and_never_overwrites(tmp_path):
    DatasetWriter(tmp_path, INFO).add(make_episode(4, 0))
    writer = DatasetWriter(tmp_path, INFO)
    assert writer.add(make_episode(4, 1)) == 1
    assert len(EpisodeDataset(tmp_path)) == 2
    other = DatasetInfo(**{**INFO.__dict__, "fps": 30.0})
    with pytest.raises(DatasetError, match="different layout"):
        DatasetWriter(tmp_path, other)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: setattr(e, "states", e.states[:, :3]), "states have shape"),
        (lambda e: e.images.pop("wrist"), "no frames for camera 'wrist'"),
        (lambda e: e.states.__setitem__((0, 0), np.nan), "non-finite"),
        (lambda e: setattr(e, "subtasks", [SubtaskSpan("x", 3, 99)]), "outside"),
    ],
)
def test_bad_episodes_are_refused_and_lose_nothing(tmp_path, mutate, message):
    writer = DatasetWriter(tmp_path, INFO)
    writer.add(make_episode(5, 0))
    bad = make_episode(5, 1)
    mutate(bad)
    with pytest.raises(DatasetError, match=message):
        writer.add(bad)
    dataset = EpisodeDataset(tmp_path)
    assert len(dataset) == 1 and dataset.episode(0).length == 5


def test_not_a_dataset_and_truncated_table(tmp_path):
    with pytest.raises(DatasetError, match="no meta/info.json"):
        EpisodeDataset(tmp_path)
    DatasetWriter(tmp_path, INFO).add(make_episode(5, 0))
    table = tmp_path / "data" / "episode_000000.parquet"
    table.write_bytes(table.read_bytes()[:40])
    with pytest.raises(DatasetError, match="cannot read episode table"):
        EpisodeDataset(tmp_path).episode(0)
