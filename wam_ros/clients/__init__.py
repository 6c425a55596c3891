"""Clients that drive a running wam_ros graph from outside: closed-loop demo episodes
(:mod:`wam_ros.clients.demo`) and long-horizon tasks through the planner's action
(:mod:`wam_ros.clients.task_commander`)."""
