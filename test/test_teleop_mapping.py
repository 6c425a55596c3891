"""Teleop device mapping without ROS: axes, keys, button edges, leader arm, intervention targets, SpaceMouse reader."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from wam_ros.teleop.devices import DeviceError, KeyboardReader, SpaceMouseReader
from wam_ros.teleop.mapping import (MODE_AUTONOMY, MODE_ESTOP, MODE_HOLD, MODE_IDLE, MODE_TELEOP, AxesMapper, AxisMapping,
                                    ButtonMapping, KeyboardMapper, LeaderArmMapper, deadband, intervention_target)


def test_intervention_toggles_teleop_and_autonomy():
    assert intervention_target(MODE_AUTONOMY) == MODE_TELEOP
    assert intervention_target(MODE_TELEOP) == MODE_AUTONOMY
    assert intervention_target(MODE_HOLD) == MODE_TELEOP and intervention_target(MODE_IDLE) == MODE_TELEOP
    assert intervention_target(MODE_ESTOP) is None


def test_deadband_rescales_to_full_deflection():
    assert deadband(0.05, 0.1) == 0.0
    assert deadband(1.0, 0.1) == pytest.approx(1.0) and deadband(-1.0, 0.1) == pytest.approx(-1.0)
    assert deadband(0.55, 0.1) == pytest.approx(0.5)
    assert deadband(float("nan"), 0.1) == 0.0 and deadband(7.0, 0.1) == pytest.approx(1.0)


def test_axes_and_button_edges():
    mapper = AxesMapper(AxisMapping((1, 0, 4, -1, -1, 3), (1.0, -1.0, 1.0, 1.0, 1.0, 1.0)), ButtonMapping(7, 1, 6, 5, 4),
                        linear_speed_m_s=0.1, angular_speed_rad_s=0.4, deadband_width=0.1, gripper_speed_m_s=0.05, period_s=0.02)
    axes = [0.5, 1.0, 0.0, 0.0, -1.0, 0.02]
    buttons = [0] * 8
    buttons[7] = buttons[5] = 1
    first = mapper.command(axes, buttons)
    assert np.allclose(first.linear_m_s, [0.1, -0.1 * (0.4 / 0.9), -0.1]) and np.allclose(first.angular_rad_s, 0.0)
    assert first.intervention and first.gripper_delta_m == pytest.approx(0.001)
    held = mapper.command(axes, buttons)
    assert not held.intervention  # one request per press
    released = mapper.command(axes, [0] * 8)
    again = mapper.command(axes, buttons)
    assert not released.intervention and again.intervention
    short = mapper.command([0.9], [1])  # fewer axes and buttons than mapped: missing ones read as zero
    assert np.allclose(short.linear_m_s, [0.0, -0.1 * 0.8 / 0.9, 0.0]) and not short.intervention
    with pytest.raises(ValueError, match="6 axes"):
        AxisMapping((0, 1, 2))
    with pytest.raises(ValueError, match="deadband"):
        AxesMapper(AxisMapping((0, 1, 2, 3, 4, 5)), ButtonMapping(), 0.1, 0.4, 1.0, 0.05, 0.02)


def test_keyboard_keys_move_while_repeating_and_stop_after_the_timeout():
    keys = KeyboardMapper(linear_speed_m_s=0.1, angular_speed_rad_s=0.4, gripper_step_m=0.01, key_timeout_s=0.6)
    command = keys.command(["w", "J"], 0.0)
    assert np.allclose(command.linear_m_s, [0.1, 0, 0]) and np.allclose(command.angular_rad_s, [0, 0, 0.4])
    assert keys.command([], 0.5).moving  # still within the repeat gap
    assert not keys.command([], 0.7).moving
    keys.command(["w"], 1.0)
    assert np.allclose(keys.command(["s"], 1.1).linear_m_s, [-0.1, 0, 0])  # the opposite key replaces it
    special = keys.command(["g", "g", "h", "t", " "], 1.2)
    assert special.gripper_delta_m == pytest.approx(0.01) and special.intervention and special.hold and not special.moving
    assert keys.command(["e"], 1.3).estop


def test_leader_arm_maps_names_and_offsets():
    leader = LeaderArmMapper(["l1", "l2"], ["f1", "f2"], [0.1, -0.1])
    assert np.allclose(leader.targets(["l2", "l1", "extra"], [2.0, 1.0, 9.0]), [1.1, 1.9])
    assert leader.targets(["l1"], [1.0]) is None
    assert leader.targets(["l1", "l2"], [1.0, float("inf")]) is None
    with pytest.raises(ValueError):
        LeaderArmMapper(["l1"], ["f1", "f2"])


def test_spacemouse_reader_uses_the_library_and_reports_a_missing_device():
    state = SimpleNamespace(x=0.1, y=-0.2, z=0.3, roll=0.0, pitch=0.5, yaw=-1.0, buttons=[0, 1])
    library = SimpleNamespace(open=lambda: True, read=lambda: state, close=lambda: None)
    axes, buttons = SpaceMouseReader(library).read()
    assert axes == [0.1, -0.2, 0.3, 0.0, 0.5, -1.0] and buttons == [0, 1]
    with pytest.raises(DeviceError, match="no SpaceMouse"):
        SpaceMouseReader(SimpleNamespace(open=lambda: False))


def test_keyboard_needs_a_terminal(tmp_path):
    with open(tmp_path / "not_a_tty", "w+") as stream:
        with pytest.raises(DeviceError, match="terminal"):
            KeyboardReader(stream)


def test_keyboard_reads_keys_from_a_pseudo_terminal():
    import os
    import pty

    leader, follower = pty.openpty()
    with os.fdopen(follower, "r") as stream:
        reader = KeyboardReader(stream)
        os.write(leader, b"wa ")
        try:
            assert reader.read() == ["w", "a", " "]
            assert reader.read() == []
        finally:
            reader.close()
    os.close(leader)
