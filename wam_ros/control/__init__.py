"""Control logic without ROS: impedance laws, limits, interpolation, the mode machine."""
