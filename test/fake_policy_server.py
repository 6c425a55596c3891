"""A misbehaving openpi-protocol policy server for tests: good, slow, disconnecting, garbage, NaN or error answers."""
from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np

from wam_ros.policy import codec

MODES = ("good", "slow", "disconnect", "garbage", "nan", "error")


class FakePolicyServer:
    """Serves on 127.0.0.1 (any free port) in a thread; ``mode`` can change between requests.

    Good answers are ``actions`` (horizon, 8) whose every value is ``base + 0.001 * request
    number`` in the arm columns and the open gripper width, so a test can tell which request an
    answer belongs to (and that no bad answer got through).
    """

    def __init__(self, metadata: dict[str, Any] | None = None, horizon: int = 16, base: np.ndarray | None = None,
                 slow_s: float = 2.0, action_key: str = "actions", port: int = 0) -> None:
        self.metadata = metadata if metadata is not None else {"horizon": horizon, "control_period_s": 0.1, "action_space": "joint_position",
                                                                   "image_resolution": [96, 96], "n_obs_frames": 1}
        self.horizon = horizon
        self.base = np.zeros(7) if base is None else np.asarray(base, float)
        self.slow_s = slow_s
        self.action_key = action_key
        self.mode = "good"
        self.requests: list[dict[str, Any]] = []
        self.answers: list[np.ndarray] = []  # good answers sent
        self.connections = 0
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> "FakePolicyServer":
        self._thread.start()
        assert self._ready.wait(10.0), "fake policy server did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10.0)

    def good_actions(self, number: int) -> np.ndarray:
        actions = np.zeros((self.horizon, 8), np.float32)
        actions[:, :7] = self.base + 0.001 * number
        actions[:, 7] = 0.08
        return actions

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", self.port, compression=None, max_size=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _handle(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        self.connections += 1
        try:
            await connection.send(codec.pack(self.metadata))
            async for message in connection:
                request = codec.unpack(message)
                self.requests.append(request)
                if request.get("endpoint") == "reset":
                    await connection.send(codec.pack({"reset": True}))
                    continue
                mode = self.mode
                if mode == "slow":
                    await asyncio.sleep(self.slow_s)
                if mode == "disconnect":
                    await connection.close()
                    return
                if mode == "garbage":
                    await connection.send(b"\xc1\xc1 this is not msgpack")
                    continue
                if mode == "error":
                    await connection.send("Traceback (most recent call last):\n  RuntimeError: CUDA out of memory")
                    await connection.close(1011, "internal error")
                    return
                actions = self.good_actions(len(self.requests))
                if mode == "nan":
                    actions[3, 2] = np.nan
                else:
                    self.answers.append(actions)
                await connection.send(codec.pack({self.action_key: actions, "policy_timing": {"infer_ms": 1.0}}))
        except ConnectionClosed:
            pass
