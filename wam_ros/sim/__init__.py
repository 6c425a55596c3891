"""MuJoCo Panda tabletop: scene, tasks, scripted experts and demonstrations (no rclpy import).

``TabletopEnv`` steps the scene in-process; the sim node (``wam_ros.nodes.sim_node``) wraps the
same env behind the interfaces a real arm exposes. Importing this package sets MUJOCO_GL=egl
(headless rendering) unless it is already set.
"""
from wam_ros.sim.config import SimConfig
from wam_ros.sim.env import Observation, TabletopEnv, TaskStatus
from wam_ros.sim.expert import ScriptedExpert, make_expert
from wam_ros.sim.tasks import TASKS, SceneState

__all__ = ["TASKS", "Observation", "SceneState", "ScriptedExpert", "SimConfig", "TabletopEnv", "TaskStatus", "make_expert"]
