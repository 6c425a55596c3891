"""Task planning without ROS: skill vocabulary and scene model, proposal parsing, the language
model, Monte Carlo tree search over subtasks, and execution monitoring (see docs/planner.md)."""
