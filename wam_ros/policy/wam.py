"""Our world action model as a :class:`~wam_ros.policy.server.ServedPolicy` (``wam-ros serve``).

Observation (keys as in the metadata): ``observation/<camera>_image`` uint8 (H, W, 3), or
(n_obs_frames, H, W, 3) oldest first, at the advertised ``image_resolution``;
``observation/state`` float (state_dim,) or (n_obs_frames, state_dim) in ``state_layout`` order
(joint positions [rad], gripper width [m]); ``prompt``; optionally ``frozen_prefix`` float
(k, action_dim), k < horizon: absolute targets the returned chunk must start with (real-time
chunking, ``accepts_frozen_prefix``). Result: ``actions`` float32 (horizon, action_dim) of
absolute joint position targets and gripper width (``action_layout``), row k for
``t_obs + k * control_period_s``; ``policy_timing.infer_ms``.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from wam_ros import __version__
from wam_ros.policy.server import ObservationError

STATE_KEY = "observation/state"
PROMPT_KEY = "prompt"
PREFIX_KEY = "frozen_prefix"


def image_key(camera: str) -> str:
    return f"observation/{camera}_image"


class ServedWam:
    """A loaded :class:`~wam_ros.model.runtime.WamRuntime` behind the openpi observation/result dicts."""

    def __init__(self, runtime: Any, sampling_steps: int | None = None, max_message_bytes: int = 16 << 20) -> None:
        self.runtime = runtime
        self.sampling_steps = sampling_steps
        config = runtime.config
        self.config = config
        self.metadata: dict[str, Any] = {
            "server": f"wam-ros serve {__version__}",
            "protocol": "openpi",
            "model_id": runtime.model_id,
            "horizon": config.horizon,
            "execute_steps": config.execute_steps,
            "control_period_s": config.control_period_s,
            "n_obs_frames": config.n_obs_frames,
            "cameras": list(config.cameras),
            "image_keys": {camera: image_key(camera) for camera in config.cameras},
            "image_resolution": [config.image_height, config.image_width],
            "state_key": STATE_KEY,
            "state_layout": list(config.state_names),
            "prompt_key": PROMPT_KEY,
            "action_space": "joint_position",
            "action_layout": list(config.action_names),
            "accepts_frozen_prefix": True,
            "max_message_bytes": max_message_bytes,
        }

    def _images(self, observation: dict[str, Any]) -> dict[str, np.ndarray]:
        config = self.config
        n, h, w = config.n_obs_frames, config.image_height, config.image_width
        images = {}
        for camera in config.cameras:
            key = image_key(camera)
            array = observation[key]
            if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
                raise ObservationError(f"{key!r}: expected a uint8 array, got {_describe(array)}")
            if array.shape == (h, w, 3) and n == 1:
                array = array[None]
            if array.shape != (n, h, w, 3):
                expected = f"({h}, {w}, 3) or ({n}, {h}, {w}, 3)" if n == 1 else f"({n}, {h}, {w}, 3)"
                raise ObservationError(f"{key!r}: expected shape {expected}, got {tuple(array.shape)}")
            images[camera] = array
        return images

    def _state(self, observation: dict[str, Any]) -> np.ndarray:
        n, dim = self.config.n_obs_frames, self.config.state_dim
        state = observation[STATE_KEY]
        if not isinstance(state, np.ndarray) or state.dtype.kind != "f":
            raise ObservationError(f"{STATE_KEY!r}: expected a float array, got {_describe(state)}")
        if state.shape == (dim,) and n == 1:
            state = state[None]
        if state.shape != (n, dim):
            raise ObservationError(f"{STATE_KEY!r}: expected shape ({dim},) or ({n}, {dim}) ({', '.join(self.config.state_names)}), got {tuple(state.shape)}")
        if not np.all(np.isfinite(state)):
            raise ObservationError(f"{STATE_KEY!r} holds non-finite values")
        return state.astype(np.float32)

    def _prefix(self, observation: dict[str, Any]) -> np.ndarray | None:
        prefix = observation.get(PREFIX_KEY)
        if prefix is None:
            return None
        horizon, dim = self.config.horizon, self.config.action_dim
        if not isinstance(prefix, np.ndarray) or prefix.dtype.kind != "f":
            raise ObservationError(f"{PREFIX_KEY!r}: expected a float array, got {_describe(prefix)}")
        if prefix.ndim != 2 or prefix.shape[1] != dim or prefix.shape[0] >= horizon:
            raise ObservationError(f"{PREFIX_KEY!r}: expected shape (k, {dim}) with k < {horizon}, got {tuple(prefix.shape)}")
        if not np.all(np.isfinite(prefix)):
            raise ObservationError(f"{PREFIX_KEY!r} holds non-finite values")
        return prefix

    def infer(self, observation: dict[str, Any]) -> dict[str, Any]:
        required = [image_key(c) for c in self.config.cameras] + [STATE_KEY, PROMPT_KEY]
        missing = [key for key in required if key not in observation]
        if missing:
            raise ObservationError(f"missing keys {missing}; this server needs {required} (and optionally {PREFIX_KEY!r})")
        prompt = observation[PROMPT_KEY]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ObservationError(f"{PROMPT_KEY!r}: expected a non-empty string, got {_describe(prompt)}")
        images, state, prefix = self._images(observation), self._state(observation), self._prefix(observation)
        started = time.perf_counter()
        try:
            actions = self.runtime.policy(images, state, prompt, steps=self.sampling_steps, frozen_prefix=prefix)
        except ValueError as error:  # the runtime's own input checks
            raise ObservationError(str(error)) from None
        return {"actions": np.asarray(actions, dtype=np.float32),
                "policy_timing": {"infer_ms": (time.perf_counter() - started) * 1e3}}


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:80]
