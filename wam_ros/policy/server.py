"""A websocket policy server speaking openpi's protocol, for any :class:`ServedPolicy`.

``GET /healthz`` answers 200 (no key needed); every other request needs ``Authorization: Api-Key
<key>`` when a key is set (401 otherwise). On connect the server sends the policy's metadata;
then each binary msgpack observation gets the policy's result plus ``server_timing.infer_ms``.
A text frame, a message over ``max_message_bytes``, undecodable bytes or an observation the
policy refuses (:class:`ObservationError`: a missing key, a wrong dtype or shape) get a text
frame naming the problem and close code 1011, as openpi's server does with its traceback; the
other connections are not affected. Policy calls run one at a time in a worker thread, so the
event loop keeps answering health checks, pings and other clients meanwhile.
"""
from __future__ import annotations

import asyncio
import hmac
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any, Callable, Protocol

from wam_ros.policy import codec

INTERNAL_ERROR = 1011
#: Frames up to this many times the limit are read and answered with an error frame; beyond,
#: the websocket layer closes with 1009 (message too big) without reading them.
OVERSIZE_READ_FACTOR = 4


class ObservationError(ValueError):
    """The client's observation cannot be served; the message goes back in the error frame."""


class ServedPolicy(Protocol):
    """What the server serves: metadata sent on connect, and observation -> result."""

    metadata: dict[str, Any]

    def infer(self, observation: dict[str, Any]) -> dict[str, Any]:
        """The result for one observation; raise ObservationError for the client's mistakes."""


class PolicyServer:
    """Serve ``policy`` on ``ws://host:port`` until :meth:`stop` (or Ctrl-C in :meth:`run`)."""

    def __init__(self, policy: ServedPolicy, host: str = "127.0.0.1", port: int = 8000, api_key: str = "",
                 max_message_bytes: int = 16 << 20, log: Callable[[str], None] = print) -> None:
        self.policy = policy
        self.host = host
        self.port = port
        self.api_key = api_key
        self.max_message_bytes = max_message_bytes
        self.log = log
        self.bound_port: int | None = None
        self.on_ready: Callable[[], None] | None = None  # called once the port is bound
        self.requests = 0
        self.errors = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    # -- running -----------------------------------------------------------------------------
    def run(self) -> None:
        """Serve in this thread until stop() or KeyboardInterrupt."""
        try:
            asyncio.run(self._main())
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def start(self, timeout_s: float = 10.0) -> "PolicyServer":
        """Serve in a background thread; returns once the port is bound (raises what binding raised)."""
        def target() -> None:
            try:
                self.run()
            except BaseException as error:  # noqa: BLE001 - handed to start()
                self._failure = error
                self._ready.set()

        self._thread = threading.Thread(target=target, name="policy_server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"policy server did not bind {self.host}:{self.port} within {timeout_s} s")
        if self._failure is not None:
            raise self._failure
        return self

    def request_stop(self) -> None:
        """Ask the server to stop (any thread, or a signal handler); run() then returns."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    def stop(self) -> None:
        """Stop and wait for the server thread started by start()."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.bound_port or self.port}"

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with serve(self._handle, self.host, self.port, compression=None, process_request=self._process_request,
                         max_size=self.max_message_bytes * OVERSIZE_READ_FACTOR, close_timeout=2.0) as server:
            self.bound_port = server.sockets[0].getsockname()[1]
            self._ready.set()
            if self.on_ready is not None:
                self.on_ready()
            await self._stopping.wait()

    # -- connections -------------------------------------------------------------------------
    def _process_request(self, connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        if self.api_key:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.api_key}".encode()):
                self.log(f"refused {connection.remote_address[0]}: missing or wrong api key")
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong 'Authorization: Api-Key <key>' header\n")
        return None

    async def _handle(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        peer = "%s:%s" % tuple(connection.remote_address[:2])
        self.log(f"client {peer} connected")
        answered = 0
        try:
            await connection.send(codec.pack(self.policy.metadata))
            async for message in connection:
                try:
                    reply = await self._answer(message)
                except ObservationError as error:
                    self.errors += 1
                    self.log(f"client {peer}: refused: {error}")
                    await connection.send(f"observation refused: {error}")
                    await connection.close(INTERNAL_ERROR, "observation refused; see the previous frame")
                    return
                await connection.send(reply)
                answered += 1
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - the traceback goes to the client, as openpi's server does
            self.errors += 1
            text = traceback.format_exc()
            self.log(f"client {peer}: internal error:\n{text}")
            try:
                await connection.send(text)
                await connection.close(INTERNAL_ERROR, "internal server error; traceback in the previous frame")
            except ConnectionClosed:
                pass
        finally:
            self.log(f"client {peer} disconnected after {answered} answers")

    async def _answer(self, message: str | bytes) -> bytes:
        if isinstance(message, str):
            raise ObservationError("expected a binary msgpack frame, got a text frame")
        if len(message) > self.max_message_bytes:
            raise ObservationError(f"message of {len(message)} bytes exceeds the limit of {self.max_message_bytes} bytes")
        try:
            observation = codec.unpack(message)
        except codec.CodecError as error:
            raise ObservationError(f"undecodable message: {error}") from None
        if not isinstance(observation, dict):
            raise ObservationError(f"expected a map of observation keys, got a {type(observation).__name__}")
        observation = {k.decode() if isinstance(k, bytes) else str(k): v for k, v in observation.items()}
        started = time.perf_counter()
        result = await asyncio.get_running_loop().run_in_executor(self._pool, self.policy.infer, observation)
        infer_ms = (time.perf_counter() - started) * 1e3
        self.requests += 1
        return codec.pack({**result, "server_timing": {"infer_ms": infer_ms}})
