"""Small shared ROS helpers: node scaffolding, QoS profiles, message <-> numpy conversions."""
