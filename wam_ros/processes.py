"""Process helpers shared by the bringup supervisor and the inference node's model process."""
from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies, even by SIGKILL.

    Call it in the child (as ``preexec_fn`` or first thing in a child's entry point). A no-op
    where ``prctl`` does not exist.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except OSError:
        pass
