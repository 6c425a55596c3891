"""Test-wide ROS settings: DDS on loopback, a ROS_DOMAIN_ID per test, logs in a temp dir.

Every module, and every test marked ``ros``, gets a domain of its own (set in the environment
before the test runs, so the processes it starts and the rclpy contexts it creates share it);
other tests keep their module's. A process killed by an earlier test leaves its DDS participant
in the others' discovery data until its lease expires (20 s by default); in a shared domain such
ghosts count as extra publishers and trip the safety bridge's one-source rule, and a ghost action
server makes ``wait_for_server`` succeed while the real one is still loading, so the goal is lost.
One suite uses fewer domains than Fast DDS has on one host (0-232), so none is reused in a run;
the first is drawn at random (not from the pid: suites in containers started the same way get
the same pids), so suites running side by side on one host rarely meet in a domain.

Fast DDS leaves its shared-memory segments and ports in /dev/shm when a process dies by a signal,
and a port left by a dead process can swallow the data sent to a later participant that opens
it (Fast-DDS issues #5053, #5469). The session starts by removing the files whose lock no live
process holds, the criterion of Fast DDS' own `fastdds shm clean`.
A module whose module-scoped fixtures start processes sets ``SHARED_ROS_DOMAIN = True``: its
tests then share the module's domain.
"""
from __future__ import annotations

import fcntl
import itertools
import os
import random
import re
import signal
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_DOMAIN_IDS = itertools.cycle(range(1, 233))  # valid Fast DDS domains on one host (port 7400 + 250 * id)
for _ in range(random.SystemRandom().randrange(232)):  # runs side by side begin at different domains
    next(_DOMAIN_IDS)
os.environ["ROS_DOMAIN_ID"] = str(next(_DOMAIN_IDS))  # for code that reads it at import
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "dds" / "fastdds_localhost.xml")
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="wam_ros_test_logs_"))
os.environ.setdefault("MUJOCO_GL", "egl")
# A suite started as a background job of a non-interactive shell has SIGINT ignored, and the
# processes the tests start inherit that: Ctrl-C tests would send a signal nobody hears and
# nodes would not stop on SIGINT. With a handler here, children start with the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_FASTDDS_SHM_LOCK = re.compile(r"^fast(dds|rtps)_(port\d{1,5}|[0-9a-z]{16})_(el|sl)$")


def remove_zombie_fastdds_shm(shm_dir: Path = Path("/dev/shm")) -> list[str]:
    """Remove Fast DDS shared-memory segments and ports whose owner died; return the names removed.

    Every segment and port has a lock file (``_el``/``_sl``) that a live owner holds with flock;
    one that can be locked belongs to nobody, and its segment (and a port's mutex) go with it.
    """
    removed: list[str] = []
    names = os.listdir(shm_dir) if shm_dir.is_dir() else []
    for lock_name in filter(_FASTDDS_SHM_LOCK.match, names):
        try:
            with open(shm_dir / lock_name, "ab") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held by a live process
        base = lock_name[:-3]
        for name in (lock_name, base, f"sem.{base}_mutex"):
            try:
                (shm_dir / name).unlink()
                removed.append(name)
            except OSError:  # gone already, or another user's (a sticky /dev/shm)
                pass
    return removed


remove_zombie_fastdds_shm()


@pytest.fixture(scope="module", autouse=True)
def ros_module_domain_id() -> int:
    """A fresh ROS_DOMAIN_ID for each module, in place before its module-scoped fixtures run."""
    domain_id = next(_DOMAIN_IDS)
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    return domain_id


@pytest.fixture(autouse=True)
def ros_domain_id(request, ros_module_domain_id: int) -> int:
    """A fresh ROS_DOMAIN_ID for every ``ros`` test, the module's for the others and where it is shared."""
    fresh = request.node.get_closest_marker("ros") is not None and not getattr(request.module, "SHARED_ROS_DOMAIN", False)
    domain_id = next(_DOMAIN_IDS) if fresh else ros_module_domain_id
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    return domain_id


@pytest.fixture
def processes(tmp_path):
    """Start real processes; every one (and its process group) is stopped when the test ends."""
    from ros_harness import Processes

    group = Processes(tmp_path / "logs")
    yield group
    group.stop_all()


@pytest.fixture
def ros(tmp_path):
    """An rclpy node in this test process, spun in a background thread, torn down afterwards."""
    from ros_harness import RosProbe

    probe = RosProbe()
    yield probe
    probe.close()
