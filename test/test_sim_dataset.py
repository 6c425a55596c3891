"""Two fixes to the episode dataset writer that sim-demos relies on (see docs/dataset.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import wam_ros.data.episodes as episodes
from wam_ros.data.episodes import DatasetInfo, DatasetWriter, Episode, EpisodeDataset, _RunningStats

INFO = DatasetInfo(fps=10.0, robot="test", joint_names=["a"], state_names=["a"], action_names=["a"], cameras={"cam": (4, 4)})


def _episode(seed: int, length: int = 5) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(task="t", instruction="i", states=rng.normal(size=(length, 1)).astype(np.float32),
                   actions=rng.normal(size=(length, 1)).astype(np.float32),
                   images={"cam": rng.integers(0, 255, (length, 4, 4, 3), dtype=np.uint8)}, seed=seed)


def test_quantile_reservoir_weighs_every_frame_equally():
    stats = _RunningStats(1, reservoir=2000, seed=1)
    for batch in range(50):  # 50 episodes of 1000 frames whose value is the episode number
        stats.add(np.full((1000, 1), float(batch)))
    early = np.mean(stats.sample[:, 0] < 25)
    assert len(stats.sample) == 2000
    assert early == pytest.approx(0.5, abs=0.06)  # the first half of the data is half of the sample
    assert stats.to_json()["q01"][0] == pytest.approx(0.0, abs=1.0)


def test_interrupted_add_leaves_no_orphan_and_the_next_writer_goes_on(tmp_path, monkeypatch):
    writer = DatasetWriter(tmp_path, INFO)
    writer.add(_episode(0))
    original = json.dumps

    def interrupt(value, *args, **kwargs):
        if isinstance(value, dict) and "episode_index" in value:
            raise KeyboardInterrupt  # Ctrl-C after the table was written, before its index line
        return original(value, *args, **kwargs)

    monkeypatch.setattr(episodes.json, "dumps", interrupt)
    with pytest.raises(KeyboardInterrupt):
        writer.add(_episode(1))
    monkeypatch.setattr(episodes.json, "dumps", original)
    assert not (tmp_path / "data" / "episode_000001.parquet").exists()
    assert len(EpisodeDataset(tmp_path)) == 1
    assert DatasetWriter(tmp_path, INFO).add(_episode(2)) == 1
    assert [e.seed for e in EpisodeDataset(tmp_path)] == [0, 2]
