"""What teleop says while its device's topic is silent (wam_ros.teleop.input_watch), without ROS."""
from __future__ import annotations

import pytest

from wam_ros.teleop.input_watch import InputWatch, how_to_provide


def test_missing_input_is_said_at_start_then_every_period_and_after_a_gap():
    watch = InputWatch("sensor_msgs/Joy on /joy", "start a joystick driver", period_s=5.0, now_s=100.0)
    assert watch.waiting() == "waiting for sensor_msgs/Joy on /joy: start a joystick driver"
    assert [watch.poll(t) for t in (101.0, 104.9)] == [None, None]
    assert watch.poll(105.0) == "no sensor_msgs/Joy on /joy for 5.0 s: start a joystick driver"
    assert watch.poll(109.0) is None
    assert watch.poll(110.1) == "no sensor_msgs/Joy on /joy for 10.1 s: start a joystick driver"
    assert watch.arrived(111.0) == "receiving sensor_msgs/Joy on /joy"
    assert [watch.arrived(t) for t in (111.1, 113.0)] == [None, None]  # said once per gap
    assert [watch.poll(t) for t in (114.0, 117.9)] == [None, None]  # arriving messages keep it quiet
    assert watch.poll(118.0) == "no sensor_msgs/Joy on /joy for 5.0 s: start a joystick driver"
    assert watch.arrived(118.5) == "receiving sensor_msgs/Joy on /joy"


def test_hints_name_the_driver_and_the_keyboard_alternative():
    joy = how_to_provide("joy", "/cfg/panda_sim.yaml")
    assert "ros2 run joy joy_node" in joy and "-p device:=keyboard -p robot_config:=/cfg/panda_sim.yaml" in joy
    assert "leader arm's driver" in how_to_provide("leader", "")
    with pytest.raises(ValueError):
        how_to_provide("spacemouse", "")
    with pytest.raises(ValueError):
        InputWatch("x", "y", period_s=0.0, now_s=0.0)
