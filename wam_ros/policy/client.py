"""A websocket client for openpi-protocol policy servers (openpi, and DreamZero's RoboArena-style server).

Protocol (docs/remote_policy.md): on connect the server sends one binary frame, the msgpack of
its metadata (DreamZero: its config); then each binary msgpack observation is answered by a
binary msgpack result, or by a text frame with the error (then close code 1011). The
``dreamzero`` profile adds ``"endpoint": "infer"`` and a ``session_id`` to each request and sends
``"endpoint": "reset"`` when a new session starts.

Every failure is a :class:`PolicyConnectionError` whose ``kind`` says what happened
(unreachable, refused, timeout, disconnected, server_error, garbage) and whose message says why.
After any failure the connection is closed: a late answer must never be taken for the next
request's. Synchronous on purpose: the inference node calls it from its worker thread.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from wam_ros.policy import codec

API_KEY_ENV = "WAM_ROS_POLICY_API_KEY"  # where the node and `wam-ros serve` take the api key from when none is given
FAULT_KINDS = ("unreachable", "refused", "timeout", "disconnected", "server_error", "garbage")


class PolicyConnectionError(RuntimeError):
    """No usable answer from the policy server; ``kind`` is one of FAULT_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(f"{kind}: {message}")


def api_key_header(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Api-Key {api_key}"} if api_key else {}


class PolicyClient:
    """One connection to a policy server; ``connect`` (again) after any error."""

    def __init__(self, url: str, api_key: str = "", protocol: str = "openpi", connect_timeout_s: float = 5.0,
                 max_message_bytes: int = 64 << 20) -> None:
        if protocol not in ("openpi", "dreamzero"):
            raise ValueError(f"unknown protocol profile {protocol!r}; expected openpi or dreamzero")
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"server url must start with ws:// or wss://, got {url!r}")
        self.url = url
        self.api_key = api_key
        self.protocol = protocol
        self.connect_timeout_s = connect_timeout_s
        self.max_message_bytes = max_message_bytes
        self.metadata: dict[str, Any] = {}
        self.session_id = str(uuid.uuid4())
        self._reset_pending = True
        self._connection: Any = None

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def connect(self) -> dict[str, Any]:
        """Open the connection and read the server's metadata (or DreamZero config)."""
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
        from websockets.sync.client import connect

        self.close()
        try:
            connection = connect(self.url, additional_headers=api_key_header(self.api_key), open_timeout=self.connect_timeout_s,
                                 compression=None, max_size=self.max_message_bytes, close_timeout=1.0, legacy=True)
        except InvalidStatus as error:
            status = error.response.status_code
            hint = " (check the api key)" if status in (401, 403) else ""
            raise PolicyConnectionError("refused", f"{self.url} answered HTTP {status}{hint}") from None
        except InvalidURI as error:
            raise PolicyConnectionError("unreachable", f"invalid url {self.url}: {error}") from None
        except (OSError, TimeoutError, InvalidHandshake) as error:
            raise PolicyConnectionError("unreachable", f"{self.url}: {type(error).__name__}: {error}") from None
        self._connection = connection
        metadata = self._receive(self.connect_timeout_s, "the metadata frame")
        if not isinstance(metadata, dict):
            self.close()
            raise PolicyConnectionError("garbage", f"the first frame is a {type(metadata).__name__}, not a metadata map")
        self.metadata = {str(k): v for k, v in metadata.items()}
        return self.metadata

    def new_session(self) -> None:
        """A new episode: DreamZero's server gets a reset and a fresh session id before the next request."""
        self.session_id = str(uuid.uuid4())
        self._reset_pending = True

    def infer(self, observation: dict[str, Any], timeout_s: float) -> tuple[dict[str, Any], float]:
        """Send one observation and wait for the result; returns (result, round trip [s])."""
        if self._connection is None:
            raise PolicyConnectionError("disconnected", "not connected")
        if self.protocol == "dreamzero":
            if self._reset_pending:
                self._request({"endpoint": "reset", "session_id": self.session_id}, timeout_s, reset=True)
                self._reset_pending = False
            observation = {**observation, "endpoint": "infer", "session_id": self.session_id}
        started = time.perf_counter()
        reply = self._request(observation, timeout_s)
        round_trip_s = time.perf_counter() - started
        if not isinstance(reply, dict):
            self.close()
            raise PolicyConnectionError("garbage", f"the result is a {type(reply).__name__}, not a map")
        return {str(k): v for k, v in reply.items()}, round_trip_s

    def _request(self, message: dict[str, Any], timeout_s: float, reset: bool = False) -> Any:
        from websockets.exceptions import ConnectionClosed

        try:
            data = codec.pack(message)
        except codec.CodecError as error:
            raise ValueError(f"observation cannot be encoded: {error}") from None
        try:
            self._connection.send(data)
        except (ConnectionClosed, OSError) as error:
            self.close()
            raise PolicyConnectionError("disconnected", f"while sending: {error}") from None
        return self._receive(timeout_s, "the reset answer" if reset else "the result", reset)

    def _receive(self, timeout_s: float, what: str, reset: bool = False) -> Any:
        from websockets.exceptions import ConnectionClosed

        connection = self._connection
        try:
            frame = connection.recv(timeout=timeout_s)
        except TimeoutError:
            self.close()
            raise PolicyConnectionError("timeout", f"no answer within {timeout_s:.2f} s while waiting for {what}") from None
        except ConnectionClosed as error:
            self.close()
            raise PolicyConnectionError("disconnected", f"the server closed the connection while we waited for {what} "
                                                        f"(code {error.rcvd.code if error.rcvd else 'none'})") from None
        except OSError as error:
            self.close()
            raise PolicyConnectionError("disconnected", f"while waiting for {what}: {error}") from None
        if isinstance(frame, str):
            if reset and self._stays_open(connection):
                return frame  # a text acknowledgement of the reset, not an error
            self.close()
            raise PolicyConnectionError("server_error", frame.strip()[-2000:] or "empty error frame")
        try:
            return codec.unpack(frame)
        except codec.CodecError as error:
            self.close()
            raise PolicyConnectionError("garbage", f"{what} is not a valid message: {error}") from None

    @staticmethod
    def _stays_open(connection: Any, wait_s: float = 0.1) -> bool:
        """After a text frame: True when the server keeps the connection open (no error close follows)."""
        from websockets.exceptions import ConnectionClosed

        try:
            connection.recv(timeout=wait_s)
        except TimeoutError:
            return True
        except ConnectionClosed:
            return False
        return True

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail any way
                pass
