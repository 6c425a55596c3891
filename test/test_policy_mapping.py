"""The openpi msgpack codec and the per-policy mappings, without sockets or ROS."""
from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.transform import Rotation

from wam_ros.control.kinematics import ChainKinematics
from wam_ros.policy import codec
from wam_ros.policy.mapping import MappingError, RobotPolicyAdapter, load_policy_mapping, resize_image
from wam_ros.robot import load_robot_config

REPO = Path(__file__).resolve().parents[1]
ROBOT = load_robot_config("panda_sim")
HOME = np.asarray(ROBOT.arm.home_rad)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(st.sampled_from([np.uint8, np.int32, np.float32, np.float64, np.bool_]), hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)))
def test_arrays_round_trip_with_dtype_and_shape(array):
    decoded = codec.unpack(codec.pack({"x": array, "nested": [array], "s": np.float32(1.5)}))
    assert decoded["x"].dtype == array.dtype and decoded["x"].shape == array.shape
    np.testing.assert_array_equal(decoded["x"], array)
    assert decoded["s"] == np.float32(1.5) and decoded["s"].dtype == np.float32


def test_the_wire_format_is_openpis():
    """Byte-string keys, numpy's dtype string, shape as a list: what openpi-client reads and writes."""
    raw = msgpack.unpackb(codec.pack({"a": np.arange(3, dtype="<f4")}), raw=False, strict_map_key=False)
    assert raw["a"] == {b"__ndarray__": True, b"data": np.arange(3, dtype="<f4").tobytes(), b"dtype": "<f4", b"shape": [3]}
    raw = msgpack.unpackb(codec.pack({"n": np.int64(7)}), raw=False, strict_map_key=False)
    assert raw["n"] == {b"__npgeneric__": True, b"data": 7, b"dtype": "<i8"}


@pytest.mark.parametrize("value", [np.zeros(2, dtype=object), np.zeros(2, dtype=np.complex64), np.zeros(2, dtype="V4"), np.complex128(1j)])
def test_object_void_and_complex_are_refused_both_ways(value):
    with pytest.raises(codec.CodecError, match="refused"):
        codec.pack({"x": value})
    forged = msgpack.packb({"x": {b"__ndarray__": True, b"data": b"\0" * 16, b"dtype": "|O", b"shape": [2]}}, use_bin_type=True)
    with pytest.raises(codec.CodecError, match="refused"):
        codec.unpack(forged)


@pytest.mark.parametrize("bad, match", [
    ({b"__ndarray__": True, b"data": b"\0" * 3, b"dtype": "<f4", b"shape": [2]}, "needs 8 bytes, got 3"),
    ({b"__ndarray__": True, b"data": b"", b"dtype": "not-a-dtype", b"shape": [0]}, "unknown dtype"),
    ({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [-1]}, "non-negative"),
    ({b"__ndarray__": True, b"dtype": "<f4", b"shape": [1]}, "without 'data'"),
])
def test_malformed_arrays_are_errors_that_say_why(bad, match):
    with pytest.raises(codec.CodecError, match=match):
        codec.unpack(msgpack.packb({"x": bad}, use_bin_type=True))
    with pytest.raises(codec.CodecError, match="not a msgpack message"):
        codec.unpack(b"\xc1garbage")


@pytest.mark.parametrize("name", ["wam_ros", "droid", "libero", "dreamzero_droid"])
def test_shipped_mappings_load_and_build_an_observation(name):
    mapping = load_policy_mapping(name)
    adapter = RobotPolicyAdapter(mapping, ROBOT)
    adapter.server_image_size = (96, 96)
    images = {c: np.zeros((1, 96, 96, 3), np.uint8) for c in ("front", "wrist")}
    state = np.r_[HOME, 0.08][None].astype(np.float32)
    observation = adapter.observation(images, state, "put the red cube in the bin")
    assert observation[mapping.prompt_key] == "put the red cube in the bin"
    for spec in mapping.images:
        assert observation[spec.key].dtype == np.uint8 and observation[spec.key].shape == (*(spec.size_hw or (96, 96)), 3)
    for spec in mapping.state:
        assert observation[spec.key].dtype == np.float32 and observation[spec.key].ndim == 1


def test_droid_state_and_velocity_actions():
    adapter = RobotPolicyAdapter(load_policy_mapping("droid"), ROBOT)
    state = np.r_[HOME, 0.02][None]
    observation = adapter.observation({c: np.zeros((1, 480, 640, 3), np.uint8) for c in ("front", "wrist")}, state, "go")
    np.testing.assert_allclose(observation["observation/joint_position"], HOME, atol=1e-6)
    np.testing.assert_allclose(observation["observation/gripper_position"], [0.75])  # 2 cm of 8 open: 3/4 closed
    velocities = np.zeros((10, 8))
    velocities[:, 0] = 0.5  # half DROID's largest step: 1.5 rad/s
    velocities[:5, 7], velocities[5:, 7] = 0.2, 0.9
    actions = adapter.actions({"actions": velocities}, state[0], 1 / 15)
    np.testing.assert_allclose(actions[:, 0], HOME[0] + 0.1 * np.arange(1, 11), atol=1e-9)  # integrated per period
    np.testing.assert_allclose(actions[:5, 7], 0.08) and np.testing.assert_allclose(actions[5:, 7], 0.0)  # binarised at 0.5


def test_cartesian_poses_and_libero_steps_go_through_ik():
    kinematics = ChainKinematics.from_urdf(ROBOT.urdf_path, ROBOT.base_frame, ROBOT.tcp_frame, ROBOT.arm.joint_names)
    start_p, start_r = kinematics.forward(HOME)
    adapter = RobotPolicyAdapter(load_policy_mapping("libero"), ROBOT)
    steps = np.zeros((5, 7))
    steps[:, 2] = -0.4  # 2 cm down per action (units of 5 cm)
    steps[:, 5] = 0.1  # 0.05 rad about z per action (units of 0.5 rad)
    steps[:, 6] = 1.0  # close
    actions = adapter.actions({"actions": steps}, np.r_[HOME, 0.08], 0.05)
    positions, rotations = kinematics.forward(actions[:, :7])
    np.testing.assert_allclose(positions[-1], start_p + [0, 0, -0.1], atol=2e-3)
    angle = Rotation.from_matrix(rotations[-1] @ start_r.T).as_rotvec()
    np.testing.assert_allclose(angle, [0, 0, 0.25], atol=0.01)
    np.testing.assert_allclose(actions[:, 7], 0.0)
    state = adapter.observation({c: np.zeros((1, 96, 96, 3), np.uint8) for c in ("front", "wrist")}, np.r_[HOME, 0.08][None], "go")
    np.testing.assert_allclose(state["observation/state"][:3], start_p, atol=1e-6)
    np.testing.assert_allclose(state["observation/state"][6:], [0.04, -0.04])
    far = steps.copy()
    far[:, 0] = 20.0  # 1 m per action: out of reach
    with pytest.raises(MappingError, match="no joint solution"):
        adapter.actions({"actions": far}, np.r_[HOME, 0.08], 0.05)


@pytest.mark.parametrize("reply, match", [
    ({}, "has no 'actions'"),
    ({"actions": np.zeros((16, 5))}, r"shape \(16, 5\)"),
    ({"actions": np.full((16, 8), np.nan)}, "non-finite"),
    ({"actions": "twelve"}, "not numeric"),
])
def test_unreadable_replies_are_refused_with_the_reason(reply, match):
    adapter = RobotPolicyAdapter(load_policy_mapping("wam_ros"), ROBOT)
    with pytest.raises(MappingError, match=match):
        adapter.actions(reply, np.r_[HOME, 0.08], 0.1)


def test_mapping_errors_name_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("policy:\n  protocol: openpi\n  images: [{key: a, camera: top}]\n  state: []\n  actions: {arm: {type: joint_position, columns: [0, 7]}}\n")
    with pytest.raises(MappingError, match="cameras \\['top'\\] are not cameras of robot panda_sim"):
        RobotPolicyAdapter(load_policy_mapping(str(path)), ROBOT)
    path.write_text(path.read_text().replace("openpi", "grpc"))
    with pytest.raises(MappingError, match=r"bad.yaml: policy.protocol: 'grpc' is not one of openpi, dreamzero"):
        load_policy_mapping(str(path))
    with pytest.raises(MappingError, match="no policy mapping named 'nope'; known: .*droid"):
        load_policy_mapping("nope")


@pytest.mark.parametrize("mode", ["stretch", "pad", "crop"])
def test_resize_modes(mode):
    image = np.full((60, 120, 3), 200, np.uint8)
    out = resize_image(image, (32, 32), mode)
    assert out.shape == (32, 32, 3)
    if mode == "pad":  # aspect kept: bars above and below
        assert out[0, 16, 0] == 0 and out[16, 16, 0] == 200
    else:
        assert np.all(out == 200)
