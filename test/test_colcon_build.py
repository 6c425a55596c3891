"""A ROS user's build: colcon (from PyPI) builds wam_ros_interfaces and wam_ros from a workspace
whose src/wam_ros is this checkout, against the PyPI ROS 2 wheels, with the command
docs/real_robot.md gives; the install is laid out where ros2 launch / ros2 run look, and an
installed node runs from it.

colcon's crawl does not descend into a package, and the checkout's root is the wam_ros package, so
the command names both package paths (``--base-paths src/wam_ros src/wam_ros/wam_ros_interfaces``).
The colcon venv and the workspace are kept under build/colcon/ (git-ignored): a rerun with nothing
changed takes seconds.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from std_msgs.msg import String

from ros_harness import wait_until
from wam_ros.bringup import known_node_kinds
from wam_ros.ros import qos

pytestmark = [pytest.mark.slow, pytest.mark.ros]
REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "colcon"
WORKSPACE = BUILD / "ws"
INSTALL = WORKSPACE / "install"
ROS = Path(sys.prefix)  # the venv with the ROS 2 wheels: the underlay, like /opt/ros/<distro>
#: The build command of docs/real_robot.md, with the fixes the PyPI wheels need (not needed on a ROS install).
COLCON_BUILD = ["colcon", "build", "--base-paths", "src/wam_ros", "src/wam_ros/wam_ros_interfaces",
                "--cmake-args", f"-DPython3_EXECUTABLE={ROS}/bin/python", f"-DCMAKE_PREFIX_PATH={ROS}", "-DBUILD_TESTING=OFF"]


def colcon_venv() -> Path:
    """colcon in a venv of its own, (re)made when requirements-colcon.txt changes."""
    venv = BUILD / "venv"
    requirements = REPO / "requirements-colcon.txt"
    stamp = venv / "requirements-colcon.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if not (venv / "bin" / "colcon").is_file() or not stamp.is_file() or stamp.read_text() != digest:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(requirements)],
                       check=True, timeout=600)
        stamp.write_text(digest)
    return venv


def user_environment(**extra: str) -> dict[str, str]:
    """This process's environment as a ROS user's shell has it: the ROS 2 underlay sourced, no checkout on PYTHONPATH."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    env["AMENT_PREFIX_PATH"] = str(ROS)
    env["PATH"] = f"{ROS / 'bin'}:{env['PATH']}"
    return {**env, **extra}


def in_install(script: str) -> subprocess.CompletedProcess:
    """Run a bash script in the workspace after ``source install/setup.bash``."""
    return subprocess.run(["bash", "-c", f"source install/setup.bash && {script}"], cwd=WORKSPACE, env=user_environment(),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def installed() -> Path:
    venv = colcon_venv()
    (WORKSPACE / "src").mkdir(parents=True, exist_ok=True)
    link = WORKSPACE / "src" / "wam_ros"
    if not link.is_symlink():
        link.symlink_to(os.path.relpath(REPO, link.parent))
    log = BUILD / "colcon_build.log"
    env = user_environment(PATH=f"{venv / 'bin'}:{ROS / 'bin'}:{os.environ['PATH']}")
    with open(log, "w") as output:
        result = subprocess.run(COLCON_BUILD, cwd=WORKSPACE, env=env, stdout=output, stderr=subprocess.STDOUT, timeout=540)
    assert result.returncode == 0, log.read_text()[-4000:]
    return INSTALL


def test_install_is_where_ros2_launch_and_ros2_run_look(installed):
    for package in ("wam_ros", "wam_ros_interfaces"):
        assert (installed / package / "share" / "ament_index" / "resource_index" / "packages" / package).is_file()
    share = installed / "wam_ros" / "share" / "wam_ros"
    assert (share / "launch" / "bringup.launch.py").is_file()
    assert (share / "package.xml").is_file() and (share / "config" / "robots" / "panda_sim.yaml").is_file()
    assert (share / "urdf" / "panda.urdf").is_file() and (share / "checkpoints" / "cpu-small-pick-place" / "model.safetensors").is_file()
    for kind in known_node_kinds():
        executable = installed / "wam_ros" / "lib" / "wam_ros" / f"{kind}_node"
        assert executable.is_file() and os.access(executable, os.X_OK), executable
    assert os.access(installed / "wam_ros" / "bin" / "wam-ros", os.X_OK)

    # Python and the ament index resolve to the install, as launch_ros resolves package and executable.
    result = in_install("python3 -c 'import json, wam_ros, wam_ros_interfaces; from ament_index_python.packages import "
                        "get_package_prefix, get_package_share_directory; from wam_ros.robot import package_root; print(json.dumps("
                        "[wam_ros.__file__, wam_ros_interfaces.__file__, get_package_prefix(\"wam_ros\"), "
                        "get_package_share_directory(\"wam_ros\"), str(package_root())]))'")
    assert result.returncode == 0, result.stderr
    wam_ros_file, interfaces_file, prefix, share_dir, root = json.loads(result.stdout.splitlines()[-1])
    assert wam_ros_file.startswith(str(installed / "wam_ros" / "lib"))
    assert interfaces_file.startswith(str(installed / "wam_ros_interfaces" / "lib"))
    assert (prefix, share_dir, root) == (str(installed / "wam_ros"), str(share), str(share))

    result = in_install("wam-ros bringup robot:=panda_sim --check")
    assert result.returncode == 0, result.stderr
    assert f"robot panda_sim ({share / 'config' / 'robots' / 'panda_sim.yaml'})" in result.stdout


def test_an_installed_node_runs_from_the_install(installed, processes, ros):
    node = processes.start("installed_robot_state", [
        "env", "-u", "PYTHONPATH", "bash", "-c",
        f"cd {WORKSPACE} && source install/setup.bash && exec install/wam_ros/lib/wam_ros/robot_state_node --ros-args -p robot_config:=panda_sim",
    ], env={"AMENT_PREFIX_PATH": str(ROS), "PATH": f"{ROS / 'bin'}:{os.environ['PATH']}"})
    description = ros.collect(String, "/robot_description", qos.LATCHED)
    wait_until(lambda: description, 60.0, "/robot_description from the installed robot_state_node",
               detail=lambda: processes.log("installed_robot_state")[-2000:])
    assert description[0].data == (installed / "wam_ros" / "share" / "wam_ros" / "urdf" / "panda.urdf").read_text()
    node.send_signal(signal.SIGINT)
    assert node.wait(timeout=20) == 0, processes.log("installed_robot_state")
