"""Hindsight goals: where the gripper will next close (pick) and next open (place), from demos alone.

A policy that has to find a 4 cm cube in a 96x96 frame gets little help from a diffusion loss
over whole action chunks: measured here, the instructed cube's position could be read from the
latents of a checkpoint without this module only to 5.2 cm, and that policy succeeded in 3 of
50 episodes; given the true cube position instead, the same preset succeeded in 44 of 50, and
with this module's estimate in 39 of 50 (47 of 50 on DART demos; docs/model.md). This module
supplies that position, learned without any object labels:

* **Labels** (:class:`HindsightGoals`): for frame ``t``, the commanded TCP position (forward
  kinematics of the commanded joint targets, the robot's URDF) at the next frame where the
  commanded gripper width falls below the middle of its range (a grasp) and at the next frame
  where it rises above it (a release): pick = (x, y, z), place = (x, y, z), base frame, metres.
  Commanded, not measured: where the demonstrator meant to grasp, free of tracking lag and of
  the noise DART demonstrations inject (``wam-ros sim-demos --action-noise-rad``). A frame
  with no later grasp (the cube is already held) has no pick label; one with no later release
  has no place label. An opening that another grasp follows within the subtask is a retry, not
  a release (DART demos fumble and regrasp). A grasp after which the fingers closed on nothing
  (the measured width at the frame before the next opening, or at the end, below
  ``MISSED_GRASP_WIDTH_FRACTION`` of the range) is a miss, not where the object is: in recorded
  episodes with takeovers, the policy's misses are what the operator corrected (the
  intervention loop, docs/intervention.md). In an episode with subtasks (bin_three), events
  after the end of the frame's subtask do not count, so a label never names an object the
  subtask's instruction does not (after the first cube's grasp the next grasp is the second
  cube's, which "put the red cube in the bin" does not mention). Teleoperated or converted
  episodes are labelled the same way. The three coordinates of a part share one scale (that of
  x and y): the heights hardly vary on a tabletop, and scaled on their own their millimetres of
  tracking lag would weigh as much in the loss as the centimetres that matter (measured: with them, and with the grasp yaw, which a
  5-pixel cube does not show, the keypoints did not lock onto the cube in 800 steps).
* **Localiser** (:class:`wam_ros.model.network.GoalLocaliser`): instruction-FiLM spatial-softmax
  keypoints of one camera that does not move with the arm, then an MLP. A static camera's image
  coordinates map to table coordinates by a fixed transform, so a keypoint on the instructed
  cube is all the head needs, whatever the arm does (a wrist camera's keypoints would need the
  arm's pose as well: trained with it, the head read the grasp off the arm's position late in
  the approach and never learned to localise from the image, 11 cm error on the first frames).
* **Curriculum**: the first ``goal_warmup_steps`` train only on the first
  ``goal_warmup_frames`` frames of each episode (the arm at rest, the scene unoccluded), then on
  all frames. Trained on all frames from the start, the keypoints had not locked onto the cube
  after 1600 steps; with the warm-up, 0.6 cm on every pre-grasp frame of unseen episodes after
  600 steps (96x96, 2 CPU-minutes).

The prediction enters the transformer as one context token; the transformer is trained on the
localiser's predictions (not on the labels), so it learns with the errors it will meet.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wam_ros.data import DatasetError, DatasetInfo
from wam_ros.data.convert import GRIPPER_STATE_NAME
from wam_ros.model.actions import ArmModel
from wam_ros.model.config import WamConfig

PICK = slice(0, 3)  # x, y, z [m] of the TCP at the next grasp
PLACE = slice(3, 6)  # x, y, z [m] of the TCP at the next release
GOAL_DIM = 6
GOAL_FEATURES = 2 * GOAL_DIM  # the prediction and its offsets from the current TCP (goal_features)
GOAL_SCALE_MIN_M = 0.05  # smallest scale of a part; see goal_statistics
MISSED_GRASP_WIDTH_FRACTION = 0.125  # measured width below this fraction of the gripper's range: closed on nothing (1 cm for the Panda)


def gripper_events(commanded_width: np.ndarray, closed_below: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames where the command crosses ``closed_below`` downwards (grasps) and upwards (releases)."""
    closed = np.asarray(commanded_width) < closed_below
    change = np.flatnonzero(closed[1:] != closed[:-1]) + 1
    return change[closed[change]], change[~closed[change]]


def next_event(events: np.ndarray, length: int) -> np.ndarray:
    """Per frame, the first event frame at or after it; -1 where none follows."""
    index = np.searchsorted(events, np.arange(length), side="left")
    padded = np.append(events, -1)
    return padded[index]


@dataclass
class GoalEstimate:
    """A localiser's answer in the robot's base frame."""

    pick_position_m: np.ndarray  # (3,) TCP at the next grasp
    place_position_m: np.ndarray  # (3,) TCP at the next release


def decode_goal(raw: np.ndarray) -> GoalEstimate:
    """(GOAL_DIM,) goal in label units -> :class:`GoalEstimate`."""
    return GoalEstimate(raw[PICK].copy(), raw[PLACE].copy())


class HindsightGoals:
    """Labels every frame of one dataset's episodes with its next grasp and release position."""

    def __init__(self, info: DatasetInfo, config: WamConfig) -> None:
        try:
            self.arm = ArmModel(info.robot, info.state_names, info.action_names)
        except ValueError as error:
            raise DatasetError(f"goal labels: {error}") from None
        gripper = self.arm.robot.gripper
        if gripper.width_max_m <= gripper.width_min_m:
            raise DatasetError(f"goal labels need a gripper; robot {self.arm.robot.name} has none")
        self.gripper_dim = config.gripper_action_dims[0]
        self.closed_below = 0.5 * (gripper.width_min_m + gripper.width_max_m)
        self.missed_below = gripper.width_min_m + MISSED_GRASP_WIDTH_FRACTION * (gripper.width_max_m - gripper.width_min_m)
        self.gripper_state = info.state_names.index(GRIPPER_STATE_NAME) if GRIPPER_STATE_NAME in info.state_names else None

    def episode(self, states: np.ndarray, actions: np.ndarray | None, subtask_end: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(T, GOAL_DIM) labels and (T, 2) validity (pick, place) for one episode.

        ``subtask_end`` (T,): per frame, the (exclusive) end frame of its subtask; events from it
        on are not the frame's goal. None: the whole episode is one."""
        length = len(states)
        labels = np.zeros((length, GOAL_DIM), np.float32)
        valid = np.zeros((length, 2), bool)
        if actions is None:
            return labels, valid  # video-only: no commands, no events
        grasps, releases = gripper_events(actions[:, self.gripper_dim], self.closed_below)
        if self.gripper_state is not None and len(grasps):
            opened = next_event(releases, length)[grasps]
            settled = np.where(opened >= 0, opened - 1, length - 1)  # the last frame the command kept it closed
            grasps = grasps[states[settled, self.gripper_state] >= self.missed_below]
        # An opening followed by another grasp in the same subtask lets go of a failed grasp to
        # try again (17 % of bin_three's DART subtasks): not where the object is to go.
        ends = np.full(length, length) if subtask_end is None else subtask_end
        regrasp = next_event(grasps, length)[releases]
        releases = releases[(regrasp < 0) | (regrasp >= ends[releases])]
        positions, _ = self.arm.tcp(actions[:, self.arm.action_joints])
        for column, (events, part) in enumerate(((grasps, PICK), (releases, PLACE))):
            following = next_event(events, length)
            has = (following >= 0) & (following < ends)
            valid[:, column] = has
            labels[has, part] = positions[following[has]]
        return labels, valid


def goal_features(goal: torch.Tensor, tcp_position: torch.Tensor, goal_mean: torch.Tensor, goal_std: torch.Tensor) -> torch.Tensor:
    """The goal token's input (B, GOAL_FEATURES): the normalised prediction (B, GOAL_DIM) and its
    pick and place positions relative to the current TCP (B, 3), on the same scales. The offset
    is what the next motion has to cover; the network gets it without having to learn forward
    kinematics."""
    absolute = goal * goal_std + goal_mean
    offsets = [(absolute[:, part] - tcp_position) / goal_std[part] for part in (PICK, PLACE)]
    return torch.cat([goal, *offsets], dim=1)


def goal_statistics(labels: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (GOAL_DIM,) over the frames where each part is valid, and a scale per part: the RMS
    spread of its x and y for all three coordinates (see the module docstring), at least
    ``GOAL_SCALE_MIN_M``. The floor matters for a part that hardly moves between episodes (the
    bin of pick_place, 1.2 cm spread): on its own spread, its offsets from the TCP
    (goal_features) reached 30 units and a centimetre of localiser error moved them by one,
    and the policy, trained on the localiser's near-constant place estimates, went from 31 to 14
    successes in 50 when given the true goals instead (docs/model.md)."""
    mean, std = np.zeros(GOAL_DIM, np.float32), np.ones(GOAL_DIM, np.float32)
    for column, part in enumerate((PICK, PLACE)):
        rows = labels[valid[:, column], part]
        if len(rows) > 1:
            mean[part] = rows.mean(0)
            std[part] = max(float(np.sqrt(rows[:, :2].var(0).mean())), GOAL_SCALE_MIN_M)
    return mean, std


def goal_loss(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error (normalised units) over the valid parts of each row."""
    weight = torch.cat([valid[:, :1].expand(-1, PICK.stop - PICK.start), valid[:, 1:].expand(-1, PLACE.stop - PLACE.start)], dim=1).float()
    return ((prediction - target).pow(2) * weight).sum() / weight.sum().clamp_min(1.0)
