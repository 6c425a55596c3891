"""Camera rendering of the tabletop (offscreen, EGL by default).

A :class:`SceneRenderer` draws the robot config's simulated cameras from an ``MjData``: the
env's own, or a snapshot taken with :meth:`SceneRenderer.capture` so that another thread can
render while the physics runs on (the sim node does this; MuJoCo releases the GIL while it
renders). Cameras of at most ``SimConfig.low_poly_max_pixels`` pixels draw the robot from its
low-poly collision meshes, larger ones from the visual meshes. Use one renderer per thread.
"""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering unless the user chose otherwise

import mujoco  # noqa: E402

from wam_ros.robot import CameraConfig, RobotConfig  # noqa: E402
from wam_ros.sim.config import SimConfig  # noqa: E402
from wam_ros.sim.scene import GROUP_LOW_POLY, GROUP_SCENE, GROUP_VISUAL, degrees_to_fovy_intrinsics  # noqa: E402


def _scene_option(low_poly: bool) -> mujoco.MjvOption:
    option = mujoco.MjvOption()
    option.geomgroup[:] = 0
    option.geomgroup[GROUP_SCENE] = 1
    option.geomgroup[GROUP_LOW_POLY if low_poly else GROUP_VISUAL] = 1
    option.sitegroup[:] = 0
    return option


class SceneRenderer:
    """RGB and depth images of the scene's cameras."""

    def __init__(self, model: mujoco.MjModel, robot: RobotConfig, config: SimConfig) -> None:
        self.model = model
        self.robot = robot
        self.config = config
        self.cameras = {c.name: c for c in robot.cameras if c.source == "sim"}
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._options = {low_poly: _scene_option(low_poly) for low_poly in (False, True)}
        self._snapshot = mujoco.MjData(model)

    def capture(self, data: mujoco.MjData) -> float:
        """Copy what rendering needs from ``data`` (poses of everything); returns its time [s]."""
        snapshot = self._snapshot
        snapshot.qpos[:] = data.qpos
        snapshot.mocap_pos[:] = data.mocap_pos
        snapshot.mocap_quat[:] = data.mocap_quat
        snapshot.time = data.time
        mujoco.mj_kinematics(self.model, snapshot)
        mujoco.mj_camlight(self.model, snapshot)
        return float(snapshot.time)

    def render(self, data: mujoco.MjData | None = None, cameras: list[str] | None = None) -> dict[str, np.ndarray]:
        """{camera: (H, W, 3) uint8} from ``data`` (default: the last capture)."""
        return {c.name: self.render_camera(c.name, c.height, c.width, data) for c in self._select(cameras)}

    def render_depth(self, data: mujoco.MjData | None = None, cameras: list[str] | None = None) -> dict[str, np.ndarray]:
        """{camera: (H, W) float32} depth along the optical axis [m] from ``data`` (default: the last capture)."""
        images = {}
        for camera in self._select(cameras):
            renderer = self._renderer(camera.height, camera.width)
            renderer.enable_depth_rendering()
            try:
                images[camera.name] = self._draw(renderer, camera.name, camera.width * camera.height, data)
            finally:
                renderer.disable_depth_rendering()
        return images

    def render_camera(self, camera: str, height: int, width: int, data: mujoco.MjData | None = None,
                      low_poly: bool | None = None) -> np.ndarray:
        """RGB (height, width, 3) uint8 image of any scene camera at any size (e.g. a large demo view).

        ``low_poly`` overrides the size rule (True: low-poly robot, False: visual meshes).
        """
        return self._draw(self._renderer(height, width), camera, width * height, data, low_poly)

    def intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        """Pinhole (fx, fy, cx, cy) [px] of a configured camera."""
        config = self._select([camera])[0]
        fovy = float(self.model.cam_fovy[self.model.camera(camera).id])
        return degrees_to_fovy_intrinsics(fovy, config.width, config.height)

    def close(self) -> None:
        """Release the GL contexts (call from the thread that rendered)."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def _draw(self, renderer: mujoco.Renderer, camera: str, pixels: int, data: mujoco.MjData | None,
              low_poly: bool | None = None) -> np.ndarray:
        low_poly = pixels <= self.config.low_poly_max_pixels if low_poly is None else low_poly
        renderer.update_scene(self._snapshot if data is None else data, camera, self._options[low_poly])
        return renderer.render()

    def _renderer(self, height: int, width: int) -> mujoco.Renderer:
        key = (height, width)
        if key not in self._renderers:
            try:
                self._renderers[key] = mujoco.Renderer(self.model, height, width)
            except mujoco.FatalError as error:
                raise RuntimeError(
                    f"cannot create an OpenGL context ({error}); set MUJOCO_GL=egl (or osmesa) before mujoco is "
                    "imported, e.g. import wam_ros.sim first"
                ) from None
        return self._renderers[key]

    def _select(self, names: list[str] | None) -> list[CameraConfig]:
        if names is None:
            return list(self.cameras.values())
        missing = [n for n in names if n not in self.cameras]
        if missing:
            raise KeyError(f"no simulated camera {missing[0]!r}; cameras: {', '.join(self.cameras)}")
        return [self.cameras[n] for n in names]
