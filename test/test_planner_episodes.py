"""The planner's loop on the real sim with the shipped WAM and scene detector, no ground truth to the planner.

One bin_three episode: the harness knocks the first cube out of the bin once it is in; the
planner has to see that from the cameras (the scene detector's belief), replan and finish. The
language model is the tiny random one (the rules ground this instruction), so the test costs the
episode's simulation and model calls only (about half a minute on our machine).
"""
from __future__ import annotations

import pytest

from test_planner_lm import build_tiny_model
from wam_ros.planning.domain import load_domain
from wam_ros.planning.episodes import Perturbation, PlannerEpisodes
from wam_ros.planning.execution import ExecutionConfig
from wam_ros.planning.language_model import LanguageModel
from wam_ros.planning.mcts import SearchConfig
from wam_ros.planning.planner import PlannerConfig, TaskPlanner
from wam_ros.planning.proposer import ProposalConfig
from wam_ros.planning.success import SceneDetector
from wam_ros.robot import load_robot_config, package_root


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    import torch

    from wam_ros.model import load_policy
    from wam_ros.sim import TabletopEnv

    torch.set_num_threads(1)
    robot = load_robot_config("panda_sim")
    domain = load_domain(robot.extra["planner"])
    model = LanguageModel.load(str(build_tiny_model(tmp_path_factory.mktemp("tiny_lm"))), threads=1)
    planner = TaskPlanner(domain, model, PlannerConfig(search=SearchConfig(iterations=60), proposals=ProposalConfig(samples=1, max_new_tokens=8)))
    runtime = load_policy(package_root() / "checkpoints/cpu-small-pick-place")
    detector = SceneDetector.load(package_root() / "checkpoints/scene-detector")
    env = TabletopEnv(robot)
    lines: list[str] = []
    episodes = PlannerEpisodes(env, runtime, planner, detector, ExecutionConfig(subtask_timeout_s=40.0, task_timeout_s=120.0, max_replans=3),
                               imagine=False, log=lines.append)
    yield episodes, lines
    env.close()


def test_a_cube_knocked_out_of_the_bin_is_seen_and_put_back(harness):
    episodes, lines = harness
    outcome = episodes.run("bin_three", 9100, "put the red, green and blue cubes in the bin, in that order", perturbation=Perturbation(after_cubes=1))
    text = "\n".join(lines)
    assert outcome.perturbed, text  # the harness did knock a cube out
    assert f"in({outcome.perturbed}, bin) no longer holds" in text, text  # seen from the cameras, not told
    assert outcome.replans >= 1 and not outcome.ground_truth_used
    assert outcome.success and outcome.in_bin == {"red_cube", "green_cube", "blue_cube"}, text
