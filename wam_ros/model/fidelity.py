"""Object fidelity of predicted frames: where each coloured cube is, in the prediction and in reality.

Pixel error says little about whether a world model keeps the objects: a 5-pixel cube can vanish
from a prediction that still beats copying the last frame. This measures each cube instead. A
cube is found in a frame of a static camera by its colour (a mask per cube colour of the sim's
scene), its mask's centroid is cast from the camera onto the table plane at the cube's centre
height, and the predicted frame's position is compared with the real future frame's: the error
in centimetres, or "missing" when the prediction shows no such cube while the real frame does.
An evaluation tool for the simulated scene (it knows the cube colours); the planner never uses it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from wam_ros.model.camera import TablePlaneCamera

MIN_PIXELS = 3  # fewer pixels of a colour: that cube is not in the frame


def colour_masks(frame: np.ndarray) -> dict[str, np.ndarray]:
    """Per cube colour, the pixels of that colour (lit and shaded faces alike) in an RGB frame."""
    rgb = frame.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return {
        "red": (r > 90) & (r > 2 * g) & (r > 2 * b),
        "green": (g > 70) & (g > 1.5 * r) & (g > 1.3 * b),
        "blue": (b > 80) & (b > 1.8 * r) & (b > 1.25 * g),
    }


def locate_cubes(frame: np.ndarray, camera: TablePlaneCamera, height_m: float = 0.02) -> dict[str, np.ndarray | None]:
    """Each cube colour's table position in ``frame`` (resized to the camera's size first), or None."""
    if frame.shape[:2] != (camera.height, camera.width):
        import cv2

        frame = cv2.resize(frame, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
    found: dict[str, np.ndarray | None] = {}
    for colour, mask in colour_masks(frame).items():
        ys, xs = np.nonzero(mask)
        found[colour] = camera.to_table(xs.mean() + 0.5, ys.mean() + 0.5, height_m) if len(xs) >= MIN_PIXELS else None
    return found


@dataclass
class FidelityReport:
    """Per-cube errors of predicted frames against the real future frame (cubes visible in reality)."""

    errors_cm: dict[str, list[float]] = field(default_factory=dict)  # source -> errors of the cubes it shows
    missing: dict[str, int] = field(default_factory=dict)  # source -> cubes the real frame shows and it does not
    cubes: int = 0  # cube observations (visible in the real future frame)

    def add(self, source: str, error_cm: float | None) -> None:
        self.errors_cm.setdefault(source, [])
        self.missing.setdefault(source, 0)
        if error_cm is None:
            self.missing[source] += 1
        else:
            self.errors_cm[source].append(error_cm)

    def summary(self, source: str) -> dict[str, float]:
        errors = self.errors_cm.get(source, [])
        observations = len(errors) + self.missing.get(source, 0)
        within = sum(e <= 1.0 for e in errors)
        return {
            "cube_observations": observations,
            "missing_share": self.missing.get(source, 0) / max(observations, 1),
            "error_cm_median": float(np.median(errors)) if errors else float("nan"),
            "error_cm_mean": float(np.mean(errors)) if errors else float("nan"),
            "within_1cm_share": within / max(observations, 1),  # a missing cube counts as not located
        }


def compare(report: FidelityReport, source: str, predicted: np.ndarray, real: np.ndarray, camera: TablePlaneCamera) -> None:
    """Add each cube of the real frame to ``report`` under ``source``."""
    truth = locate_cubes(real, camera)
    guess = locate_cubes(predicted, camera)
    for colour, position in truth.items():
        if position is None:
            continue
        if source == "real":
            report.cubes += 1
        found = guess.get(colour)
        report.add(source, None if found is None else 100.0 * float(np.linalg.norm(found - position)))


def evaluate_fidelity(runtime, samples: Sequence, camera_name: str = "front", robot=None) -> dict[str, dict[str, float]]:
    """Video prediction, forward dynamics and the autoencoder's reconstruction of the real future,
    each against the real future frame, on ``samples`` (wam_ros.model.evaluate.OfflineSample)."""
    import torch

    from wam_ros.model.autoencoder import images_to_tensor, tensor_to_images
    from wam_ros.robot import load_robot_config

    robot = robot or load_robot_config(runtime.config.robot or "panda_sim")
    camera = TablePlaneCamera.from_robot(robot, camera_name)
    index = runtime.config.cameras.index(camera_name)
    report = FidelityReport()
    for sample in samples:
        real = np.asarray(sample.future[camera_name])
        video, _ = runtime.imagine(sample.images, sample.state, sample.instruction)
        forward, _ = runtime.imagine(sample.images, sample.state, sample.instruction, actions=sample.actions)
        with torch.inference_mode():
            pixels = images_to_tensor(torch.from_numpy(np.stack([sample.future[c] for c in runtime.config.cameras])))
            decoded = tensor_to_images(runtime.autoencoder.decode(runtime.autoencoder.encode(pixels))).numpy()[index]
        compare(report, "real", real, real, camera)
        compare(report, "video_prediction", video[camera_name], real, camera)
        compare(report, "forward_dynamics", forward[camera_name], real, camera)
        compare(report, "autoencoder", decoded, real, camera)
        compare(report, "copy_last_frame", np.asarray(sample.images[camera_name][-1]), real, camera)
    return {source: report.summary(source) for source in ("video_prediction", "forward_dynamics", "autoencoder", "copy_last_frame")}
