"""``wam-ros serve --checkpoint DIR``: our WAM as an openpi-protocol websocket policy server.

Any openpi client (``openpi_client.websocket_client_policy``) or ``wam_inference`` with
``policy_backend:=websocket policy:=wam_ros`` can then get action chunks from it, e.g. from a
robot PC while the model runs on a GPU host. Binds 127.0.0.1 unless told otherwise; give
``--api-key`` (or ``WAM_ROS_POLICY_API_KEY``) before binding another address. Protocol and
metadata: docs/remote_policy.md. Ctrl-C or SIGTERM stops it (exit code 0).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import time
from pathlib import Path

from wam_ros.policy.client import API_KEY_ENV


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="DIR", help="checkpoint directory (e.g. checkpoints/cpu-small-pick-place)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 serves every interface (use an api key)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port, printed at start)")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV, ""), metavar="KEY",
                        help=f"require 'Authorization: Api-Key KEY' (default: ${API_KEY_ENV}, else none)")
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one is fastest for cpu-small on 2 cores)")
    parser.add_argument("--sampling-steps", type=int, default=0, metavar="N", help="denoising steps per chunk (0: the checkpoint's)")
    parser.add_argument("--max-message-mb", type=float, default=16.0, metavar="MB", help="largest observation message accepted")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535 or args.threads < 1 or args.sampling_steps < 0 or args.max_message_mb <= 0:
        print("wam-ros serve: --port must lie in [0, 65535], --threads >= 1, --sampling-steps >= 0, --max-message-mb > 0", file=sys.stderr)
        return 2
    if not _loopback(args.host) and not args.api_key:
        print(f"wam-ros serve: warning: serving {args.host} without an api key; anyone who reaches this port gets chunks",
              file=sys.stderr, flush=True)
    print(f"[serve] loading {args.checkpoint} on {args.device} ...", flush=True)
    started = time.perf_counter()
    from wam_ros.model import CheckpointError, load_policy  # first: it keeps idle OpenMP threads from spinning

    import torch
    from wam_ros.policy.server import PolicyServer
    from wam_ros.policy.wam import ServedWam

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cpu":
        torch.set_num_threads(args.threads)
    try:
        runtime = load_policy(args.checkpoint, device=device)
    except (CheckpointError, RuntimeError, OSError) as error:
        print(f"wam-ros serve: {error}", file=sys.stderr)
        return 2
    runtime.warmup()
    limit = int(args.max_message_mb * (1 << 20))
    policy = ServedWam(runtime, args.sampling_steps or None, limit)
    server = PolicyServer(policy, args.host, args.port, args.api_key, limit, log=lambda text: print(f"[serve] {text}", flush=True))
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    config = runtime.config
    print(f"[serve] {runtime.model_id} on {device} loaded in {time.perf_counter() - started:.1f} s: horizon {config.horizon} x "
          f"{config.control_period_s:g} s, cameras {list(config.cameras)} at {config.image_height}x{config.image_width}, "
          f"state {list(config.state_names)}", flush=True)
    server.on_ready = lambda: print(f"[serve] serving {server.url} (GET /healthz; {'api key required' if args.api_key else 'no api key'}); "
                                    "Ctrl-C stops", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    except OSError as error:
        print(f"wam-ros serve: cannot serve {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(f"[serve] stopped after {server.requests} answers ({server.errors} refused or failed)", flush=True)
    return 0
