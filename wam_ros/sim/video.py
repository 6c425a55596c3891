"""Episode videos a person can watch: camera frames side by side, with an optional caption."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from wam_ros.sim.env import Observation


def write_episode_video(
    path: Path | str,
    frames: Sequence[dict[str, np.ndarray]] | Sequence[Observation],
    fps: float,
    captions: Sequence[str] | None = None,
    height_px: int = 384,
) -> Path:
    """Write an mp4: each frame's cameras side by side, scaled to ``height_px``, captions at the bottom.

    ``frames`` are image dicts ({camera: (H, W, 3) uint8}) or observations (their ``.images``,
    which must be read before the sim steps on). The file appears only once complete.
    """
    import cv2

    if len(frames) == 0:
        raise ValueError("no frames to write")
    if captions is not None and len(captions) != len(frames):
        raise ValueError(f"{len(captions)} captions for {len(frames)} frames")
    images = [f.images if isinstance(f, Observation) else f for f in frames]
    names = list(images[0])
    widths = [int(round(images[0][n].shape[1] * height_px / images[0][n].shape[0])) for n in names]
    width = sum(widths) + (sum(widths) % 2)  # even size for the codec
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height_px))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {tmp}")
    try:
        for index, frame in enumerate(images):
            if list(frame) != names:
                raise ValueError(f"frame {index} has cameras {list(frame)}, expected {names}")
            row = np.zeros((height_px, width, 3), np.uint8)
            x = 0
            for name, w in zip(names, widths):
                interpolation = cv2.INTER_NEAREST if frame[name].shape[0] < height_px / 2 else cv2.INTER_AREA
                row[:, x : x + w] = cv2.resize(np.asarray(frame[name]), (w, height_px), interpolation=interpolation)
                x += w
            bgr = cv2.cvtColor(row, cv2.COLOR_RGB2BGR)
            if captions is not None and captions[index]:
                cv2.putText(bgr, captions[index], (8, height_px - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
                cv2.putText(bgr, captions[index], (8, height_px - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            writer.write(bgr)
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    writer.release()
    os.replace(tmp, path)
    return path
