"""The world action model (ROS-free): one diffusion transformer for policy, forward and inverse
dynamics, video prediction and progress; training, evaluation and the runtime facade.

``load_policy(checkpoint_dir)`` is what the inference node and the planner use.
"""
import os

# On a shared CPU, OpenMP threads that spin while waiting burn the cores other processes need
# (measured here: 20x the CPU time per training step on a loaded 2-core machine). Set before
# torch loads its OpenMP runtime; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from wam_ros.model.checkpoint import CheckpointError  # noqa: E402
from wam_ros.model.runtime import WamRuntime, load_policy  # noqa: E402

__all__ = ["CheckpointError", "WamRuntime", "load_policy"]
