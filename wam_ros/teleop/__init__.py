"""Teleoperation without ROS: device readers (keyboard, joystick axes, SpaceMouse, leader arm) and
their mapping to teleop commands (Cartesian twist, joint targets, gripper, mode requests)."""
