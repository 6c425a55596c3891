"""wam-ros view: a bag with takeovers (and a dataset episode) as a rerun recording, read back from the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from test_convert_unit import ARM, MS, T0, Messages, write_bag
from wam_ros.cli import main as wam_ros
from wam_ros.data.bags import MODE_AUTONOMY, MODE_HOLD, MODE_TELEOP
from wam_ros.data.view import recording_entities

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "cpu-small-pick-place"
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def takeover_bag(path: Path) -> Path:
    m = Messages()
    changes = [(T0 - 5 * MS, MODE_AUTONOMY, "dagger", "go"), (T0 + 900 * MS, MODE_TELEOP, "op", "take over: no progress"),
               (T0 + 1700 * MS, MODE_AUTONOMY, "op", "hand back: recovered"), (T0 + 2600 * MS, MODE_HOLD, "safety_bridge", "watchdog")]
    statuses = [(max(stamp, T0) + 10 * MS, m.safety(mode, stamp, requester, reason)) for stamp, mode, requester, reason in changes[:-1]]
    stamp = changes[-1][0]
    statuses += [(stamp + 10 * MS, m.safety(MODE_HOLD, stamp, "safety_bridge", "watchdog", ("ee_speed: clipped",), "watchdog joint_states"))]
    chunks = [(T0 + k * 400 * MS, m.chunk(T0 + k * 400 * MS, HOME + 0.01 * np.arange(16)[:, None])) for k in range(7)]
    return write_bag(path, m, statuses=statuses, chunks=chunks)


def test_view_writes_every_stream_of_a_bag(tmp_path, capsys):
    bag = takeover_bag(tmp_path / "bag")
    out = tmp_path / "episode.rrd"
    assert wam_ros(["view", str(bag), "--checkpoint", str(CHECKPOINT), "--out", str(out)]) == 0
    assert f"open it with: rerun {out}" in capsys.readouterr().out
    entities = recording_entities(out)
    frames = entities["/cameras/front"][0]
    assert frames >= 25 and "Image:buffer" in entities["/cameras/front"][1] and entities["/cameras/wrist"][0] == frames
    for camera in ("front", "wrist"):  # the model's predicted frame next to the real one
        rows, columns = entities[f"/predicted/{camera}"]
        assert rows == -(-frames // 8) and "Image:buffer" in columns  # one per execute_steps (8) frames
    assert entities["/chunks/recorded"][0] == 7 and "LineStrips3D:strips" in entities["/chunks/recorded"][1]
    assert entities["/chunks/policy"][0] == entities["/predicted/front"][0]
    for name in [*ARM, "gripper_width"]:
        assert entities[f"/joints/state/{name}"][0] == frames and entities[f"/joints/command/{name}"][0] == frames
    assert entities["/tcp"][0] == frames and entities["/source"][0] == frames
    assert entities["/events/modes"][0] == 4 and "TextLog:text" in entities["/events/modes"][1]
    assert entities["/events/takeovers"][0] == 2  # the take-over and the hand-back
    assert entities["/events/safety"][0] == 2  # the violation and the watchdog's stop


def test_view_of_a_dataset_episode_and_without_rerun(tmp_path, capsys, monkeypatch):
    bag = takeover_bag(tmp_path / "bag")
    dataset = tmp_path / "dataset"
    assert wam_ros(["convert", str(bag), "--out", str(dataset)]) == 0
    assert wam_ros(["view", str(dataset), "--episode", "0"]) == 0
    entities = recording_entities(dataset / "view_000000.rrd")
    assert entities["/events/takeovers"][0] == 2 and entities["/events/source"][0] == 4  # policy, operator, policy, hold
    assert "/predicted/front" not in entities and entities["/cameras/front"][0] == entities["/joints/state/panda_joint1"][0]
    assert wam_ros(["view", str(dataset), "--episode", "3"]) == 2 and "no episode 3" in capsys.readouterr().err

    import wam_ros.data.view as view

    def missing():
        raise ImportError(view.INSTALL_HINT)

    monkeypatch.setattr(view, "import_rerun", missing)
    assert wam_ros(["view", str(dataset)]) == 2
    assert "pip install -r requirements-view.txt" in capsys.readouterr().err
