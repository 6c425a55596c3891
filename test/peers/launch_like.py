"""Starts node commands the way ``ros2 launch`` does, for the shutdown tests (no launch_ros here).

All children share this process's process group. On SIGINT/SIGTERM it forwards the signal to
every child (launch does, once), while the test also signals the whole group (the terminal's
Ctrl-C does): every node then receives the signal twice within milliseconds (ros2/launch#830).
Usage: ``launch_like.py <log dir> <name>=<command json> ...``; prints each child's exit code
and exits 0 only when all of them exit 0.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    log_dir = Path(sys.argv[1])
    children: dict[str, subprocess.Popen] = {}
    for item in sys.argv[2:]:
        name, command = item.split("=", 1)
        log = open(log_dir / f"{name}.log", "w")
        children[name] = subprocess.Popen(json.loads(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def forward(signum: int, frame: object) -> None:
        for process in children.values():
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    print("started " + " ".join(f"{n}:{p.pid}" for n, p in children.items()), flush=True)
    while any(p.poll() is None for p in children.values()):
        time.sleep(0.05)
    codes = {name: process.returncode for name, process in children.items()}
    print("exit codes " + json.dumps(codes), flush=True)
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
