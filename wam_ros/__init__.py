"""wam_ros: World Action Models driving robot arms through ROS 2.

The messages, services and actions are in the separate ``wam_ros_interfaces`` package.
"""
__version__ = "0.2.0"
